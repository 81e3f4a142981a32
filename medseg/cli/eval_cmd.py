"""``medseg evaluate RUN [--data DIR]``."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Optional

import typer
from rich.table import Table

from medseg.cli.main import console


def _fmt(stat: dict) -> str:
    return "-" if math.isnan(stat["mean"]) else f"{stat['mean']:.4f} ± {stat['std']:.4f}"


def print_summary(summary: dict) -> None:
    if summary.get("task") == "segmentation3d":
        title = f"{summary['images']} cases ({summary['source']})"
    else:
        title = f"{summary['images']} images ({summary['source']}); FOV-restricted: {summary['fov_restricted']}"
    table = Table(title=title)
    for col in ("class", "Dice (mean ± std)", "IoU (mean ± std)", "Dice pooled"):
        table.add_column(col)
    for name, c in summary["classes"].items():
        table.add_row(name, _fmt(c["dice"]), _fmt(c["iou"]), f"{c['dice_pooled']:.4f}")
    table.add_row("[bold]mean[/]", _fmt(summary["mean_dice"]), "", "")
    table.add_row("voxel accuracy" if summary.get("task") == "segmentation3d" else "pixel accuracy",
                  _fmt(summary["accuracy"]), "", "")
    console.print(table)


def evaluate(
    run: Path = typer.Argument(..., help="Run folder of `medseg train`."),
    data: Optional[Path] = typer.Option(None, help="Labelled folder to evaluate on (default: the run's test split; 3D runs without one: the validation split)."),
    fov: Optional[str] = typer.Option(None, help="2D: field-of-view subfolder of --data (detected by default)."),
    out: Optional[Path] = typer.Option(None, help="Output folder (default RUN/evaluation)."),
    tta: bool = typer.Option(False, help="Mirroring test-time augmentation."),
) -> None:
    """Per-image (3D: per-case) and per-class Dice, IoU and accuracy (CSV + summary JSON)."""
    from medseg.evaluation.evaluate_run import evaluate_run

    summary = evaluate_run(run, data, fov=fov, out=out, mirror=tta)
    print_summary(summary)
    files = "per_case.csv, summary.json" if summary.get("task") == "segmentation3d" else "per_image.csv, summary.json, overlays/"
    console.print(f"written: {out or run / 'evaluation'} ({files})", highlight=False)
