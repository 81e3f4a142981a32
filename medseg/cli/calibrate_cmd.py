"""``medseg calibrate RUN``: fit a temperature on the validation split (temperature scaling)."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.table import Table

from medseg.cli.main import console


def calibrate(
    run: Path = typer.Argument(..., help="Run folder of `medseg train`."),
    tta: bool = typer.Option(False, help="Fit on mirroring-TTA probabilities (use it when you predict with --tta or --uncertainty)."),
    bins: int = typer.Option(15, min=2, help="Equal-width confidence bins for ECE and the reliability diagram."),
    max_voxels: int = typer.Option(100_000, min=100, help="Random voxels per case kept for the fit."),
    seed: int = typer.Option(0, help="Seed of the voxel subsample."),
    device: str = typer.Option("auto", help="auto | cpu | cuda."),
) -> None:
    """Fit one temperature T on the run's validation split (minimum NLL) and save RUN/calibration.json.

    `medseg predict` and `medseg evaluate` then report probabilities softmax(log p / T)
    (labels never change); `medseg predict --no-calibration` ignores it.
    """
    from medseg.evaluation.calibrate_run import RELIABILITY_PNG, calibrate_run
    from medseg.runfolder import CALIBRATION_FILE

    rec = calibrate_run(run, mirror=tta, bins=bins, max_voxels=max_voxels, seed=seed, device=device)
    table = Table(title=f"temperature T = {rec['temperature']:.4f} ({len(rec['cases'])} validation cases, {rec['voxels']} voxels)")
    for col in ("", "before", "after"):
        table.add_column(col)
    for name, key in (("NLL", "nll"), ("ECE (top-label)", "ece"), ("ECE (classwise, foreground)", "classwise_ece")):
        table.add_row(name, *(_fmt(rec[f"{key}_{when}"]) for when in ("before", "after")))
    console.print(table)
    console.print(f"written: {run / CALIBRATION_FILE}, {run / RELIABILITY_PNG}", highlight=False, markup=False)


def _fmt(x: float | None) -> str:
    return "-" if x is None else f"{x:.4f}"
