"""``medseg evaluate RUN [--data DIR]`` and ``medseg evaluate PRED_DIR GT_DIR [--labels ...]``."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Optional

import typer
from rich.markup import escape
from rich.table import Table

from medseg.cli.main import console
from medseg.errors import ConfigError


def _num(v, digits: int = 4) -> str:
    return "-" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.{digits}f}"


def _fmt(stat: dict) -> str:
    return "-" if math.isnan(stat["mean"]) else f"{stat['mean']:.4f} ± {stat['std']:.4f}"


def _with_ci(stat: dict | None, digits: int = 3) -> str:
    """``mean [lo, hi]`` (and how many cases had no value)."""
    if not stat or stat.get("mean") is None or math.isnan(stat["mean"]):
        return "-"
    lo, hi = stat.get("ci95", [math.nan, math.nan])
    if stat.get("ci_note") or math.isnan(lo):
        text = f"{stat['mean']:.{digits}f} (n={stat.get('n')}, no CI)"
    else:
        text = f"{stat['mean']:.{digits}f} [{_num(lo, digits)}-{_num(hi, digits)}]"
    if stat.get("n_nan"):
        text += f" ({stat['n_nan']} n/a)"
    return text


def print_summary(summary: dict) -> None:
    """A short table: per class Dice (and, where computed, HD95 and NSD with CIs), the mean, the accuracy."""
    if _is_3d(summary):
        title = f"{summary['images']} cases ({summary['source']})"
    elif summary.get("task") == "evaluation":
        title = f"{summary['images']} cases: {summary['source']}"
    else:
        title = f"{summary['images']} images ({summary['source']}); FOV-restricted: {summary['fov_restricted']}"
    units = summary.get("units")
    from medseg.evaluation.aggregate import MIN_CI_N

    unit = (summary.get("mean_dice") or {}).get("ci_unit", "case")
    caption = escape(f"mean [bootstrap 95% CI, resampling {unit}s; none below {MIN_CI_N}] over cases; all metrics in "
                     "per_case.csv and summary.json") if units else None
    table = Table(title=escape(title), caption=caption)
    if units:
        unit = units.get("hd95", "mm")
        cols = ["class", "Dice", f"HD95 ({unit})", f"NSD @ {summary.get('tolerance', 1.0):g} {unit}", "Dice pooled"]
    else:
        cols = ["class", "Dice (mean ± std)", "IoU (mean ± std)", "Dice pooled"]
    for col in cols:
        table.add_column(col)
    for name, c in summary["classes"].items():
        if units:
            cells = [name, _with_ci(c["dice"]), _with_ci(c.get("hd95"), 2), _with_ci(c.get("nsd")), _num(c.get("dice_pooled"))]
        else:
            cells = [name, _fmt(c["dice"]), _fmt(c["iou"]), _num(c.get("dice_pooled"))]
        table.add_row(*map(escape, cells))
    blank = [""] * (len(cols) - 2)
    table.add_row("[bold]mean[/]", escape(_with_ci(summary["mean_dice"]) if units else _fmt(summary["mean_dice"])), *blank)
    if "accuracy" in summary:
        table.add_row("voxel accuracy" if _is_3d(summary) else "pixel accuracy",
                      escape(_fmt(summary["accuracy"])), *blank)
    console.print(table)


def evaluate(
    paths: list[Path] = typer.Argument(..., metavar="RUN | PRED_DIR GT_DIR",
                                       help="A run folder of `medseg train`; or a folder of predictions and a folder of "
                                            "ground-truth label maps (NIfTI/NRRD/MHA or PNG/TIF/GIF), paired by name."),
    data: Optional[Path] = typer.Option(None, help="RUN form: labelled folder to evaluate on (default: the run's test split; 3D runs without one: the validation split)."),
    fov: Optional[str] = typer.Option(None, help="2D field of view: RUN form, a subfolder of --data (detected by default); "
                                                 "PRED_DIR GT_DIR form, a folder of FOV masks named like the cases."),
    out: Optional[Path] = typer.Option(None, help="Output folder (default RUN/evaluation, or PRED_DIR/evaluation)."),
    tta: bool = typer.Option(False, help="RUN form: mirroring test-time augmentation."),
    labels: Optional[str] = typer.Option(None, help="PRED_DIR GT_DIR form: the labels to score, e.g. 1=anterior,2=posterior "
                                                    "(default: dataset.json's, else every value in the truth)."),
    tolerance: float = typer.Option(1.0, help="Normalised surface Dice tolerance, in mm (pixels for 2D image files)."),
) -> None:
    """Per-case and per-class Dice, IoU, precision, sensitivity, volume difference, HD95 and surface Dice, with 95% CIs (CSV + JSON)."""
    from medseg.cli.progress import case_progress

    if len(paths) == 1:
        from medseg.evaluation.evaluate_run import evaluate_run

        if labels:
            raise ConfigError("--labels applies to `medseg evaluate PRED_DIR GT_DIR`; a run knows its labels")
        run = paths[0]
        with case_progress(console, "evaluating") as on_case:
            summary = evaluate_run(run, data, fov=fov, out=out, mirror=tta, tolerance=tolerance, on_case=on_case)
        files = "per_case.csv" if _is_3d(summary) else "per_image.csv, overlays/"
        where = out or run / "evaluation"
    elif len(paths) == 2:
        from medseg.evaluation.evaluate_dirs import evaluate_dirs

        if data is not None or tta:
            raise ConfigError("--data and --tta apply to `medseg evaluate RUN`",
                              hint="PRED_DIR GT_DIR compares finished predictions with the truth")
        with case_progress(console, "evaluating") as on_case:
            summary = evaluate_dirs(paths[0], paths[1], labels=labels, tolerance=tolerance, out=out, fov_dir=fov,
                                    on_case=on_case)
        files = "per_case.csv"
        where = out or paths[0] / "evaluation"
    else:
        raise ConfigError(f"expected RUN or PRED_DIR GT_DIR, got {len(paths)} paths",
                          hint="medseg evaluate RUN  |  medseg evaluate PRED_DIR GT_DIR")
    print_summary(summary)
    console.print(f"written: {where} ({files}, summary.json, cases.json)", highlight=False, markup=False)
    if len(paths) == 1:
        from medseg.evaluation.report import write_report
        from medseg.inference.ensemble import is_cross_validated

        if is_cross_validated(paths[0]):
            console.print("the report covers one run: `medseg report RUN/fold_<i>` for a fold", highlight=False, markup=False)
            return
        console.print(f"report: {write_report(paths[0], evaluation=where)}", highlight=False, markup=False)


def _is_3d(summary: dict) -> bool:
    """Whether a summary is of volumes (``dims``; summaries before it named the task)."""
    return summary.get("dims") == 3 or str(summary.get("task", "")).endswith("3d")
