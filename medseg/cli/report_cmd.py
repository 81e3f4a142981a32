"""``medseg report RUN [--out FILE]``: write the run's self-contained HTML report."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer


def report(
    run: Path = typer.Argument(..., help="Run folder of `medseg train` (evaluated or not)."),
    out: Optional[Path] = typer.Option(None, help="HTML file to write (default RUN/report.html)."),
    evaluation: Optional[Path] = typer.Option(None, help="Evaluation folder to show (default RUN/evaluation)."),
) -> None:
    """One self-contained HTML page: dataset, plan, training curves, metrics with CIs, per-case table, worst/best cases."""
    from medseg.evaluation.report import write_report

    typer.echo(str(write_report(run, out, evaluation=evaluation)))
