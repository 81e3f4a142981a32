"""``medseg models``: the registered networks with their size and cost."""

from __future__ import annotations

import typer
from rich.table import Table

from medseg.cli.main import console


def models(
    dims: int = typer.Option(2, help="2 or 3: spatial dims of the reference input."),
) -> None:
    """List every model with its parameter count and GFLOPs at a reference input size."""
    from medseg.models.summary import model_table

    rows = model_table(dims)
    table = Table(title=f"medseg models ({dims}D, default arguments)")
    for col in ("model", "parameters", "GFLOPs", "reference input"):
        table.add_column(col)
    for r in rows:
        table.add_row(r["name"], f"{r['params'] / 1e6:.2f} M", f"{r['gflops']:.2f}", str(r.get("input_shape", "")))
    console.print(table)
