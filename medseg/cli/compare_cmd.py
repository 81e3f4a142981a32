"""``medseg compare DATA --out DIR --models unet,fcn --time-budget 10m`` (2D or 3D)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Optional

import typer
from rich import box
from rich.table import Table
from rich.markup import escape

from medseg.cli.main import console
from medseg.cli.setup_options import given_options, with_setup_options
from medseg.training.options import SetupOptions

DEFAULT_BUDGET = "10m"


def _num(v, fmt: str) -> str:
    return "-" if v is None or (isinstance(v, float) and math.isnan(v)) else format(v, fmt)


def print_comparison(rows: list[dict], title: str) -> None:
    """The rows of :func:`~medseg.training.compare.compare_models` as a table; the best mean Dice in bold."""
    classes = []
    for r in rows:
        classes += [k for k in r if k.startswith("dice_") and k not in classes]
    table = Table(
        title=title, box=box.SIMPLE_HEAD, padding=(0, 0, 0, 1), pad_edge=False, show_edge=False,
        caption="test split: Dice per class, mean Dice, IoU and HD95 (pixels/mm) over classes (means over images); ms: inference per image",
    )
    table.add_column("model", no_wrap=True)
    for col in ("params", "train s", "epochs", *(c[5:] for c in classes), "Dice", "IoU", "HD95", "ms"):
        table.add_column(col, justify="right", min_width=6 if col == "params" else None)
    ok = [r for r in rows if not r.get("error") and not math.isnan(r["mean_dice"])]
    best = max((r["mean_dice"] for r in ok), default=None)
    for r in rows:
        if r.get("error"):
            table.add_row(r["model"], "[red]failed[/]", *([""] * (len(table.columns) - 2)))
            continue
        dice = _num(r["mean_dice"], ".3f")
        table.add_row(
            r["model"], f"{r['params'] / 1e6:.2f}M", _num(r["train_seconds"], ".1f"), str(r["epochs"]),
            *(_num(r.get(c), ".3f") for c in classes),
            f"[bold]{dice}[/]" if r["mean_dice"] == best and len(ok) > 1 else dice, _num(r["iou_mean"], ".3f"),
            _num(r.get("hd95_mean"), ".2f"), _num(r["inference_ms"], ".1f"),
        )
    console.print(table)
    for r in rows:
        if r.get("error"):
            console.print(f"[red]{r['model']} failed:[/] {escape(r['error'])}", highlight=False, soft_wrap=True)


@with_setup_options(epochs=None, monitor="val_dice")
def compare(
    ctx: typer.Context,
    data: Path = typer.Argument(..., help="Data folder: 2D images + masks, or a 3D dataset."),
    out: Path = typer.Option(..., "--out", "-o", help="Comparison folder: one run folder per model + comparison.csv/json/png."),
    models: Optional[str] = typer.Option(None, help="Comma-separated model names (default: every registered model; see `medseg models`)."),
    test_data: Optional[Path] = typer.Option(None, help="Labelled folder (e.g. an official test set) to evaluate every model on, instead of the split's test part (then e.g. --split 85/15/0)."),
    *,
    options: SetupOptions,
) -> None:
    """Train several models on the same split with the same budget; compare test Dice, IoU, size, time.
    The time budget (--time-budget, or --budget) is each model's, 10m unless --epochs is given."""
    from medseg.cli.progress import TrainProgress
    from medseg.models import list_models
    from medseg.training.compare import CSV_NAME, JSON_NAME, PLOT_NAME, check_models, compare_models
    from medseg.training.options import build_setup
    from medseg.units import parse_duration

    names = check_models(models.split(",") if models is not None else list_models())
    epochs = options.epochs
    budget_s = parse_duration(options.time_budget if options.time_budget is not None else (None if epochs is not None else DEFAULT_BUDGET))
    base = build_setup(data, out, options, given_options(ctx))
    per_model = f"{budget_s:.0f} s" if budget_s else f"{epochs} epochs"
    console.print(f"comparing {', '.join(names)}: {per_model} each, same split and settings", highlight=False)

    def progress(name: str) -> TrainProgress:
        console.rule(name)
        return TrainProgress(console, per_model)

    rows = compare_models(data, out, names, budget_s, epochs, base, progress=progress, test_data=test_data)
    console.rule("comparison")
    n_test = next((r["test_images"] for r in rows if not r.get("error") and not math.isnan(r["mean_dice"])), 0)
    print_comparison(rows, f"{len(rows)} models, {per_model} each; {'test split' if test_data is None else test_data}: {n_test} images")
    written = [out / CSV_NAME, out / JSON_NAME] + ([out / PLOT_NAME] if n_test else [])
    console.print(f"written: {', '.join(str(p) for p in written)}; run folders in {out}/<model>", highlight=False, markup=False)
    if all(r.get("error") for r in rows):
        raise typer.Exit(1)
