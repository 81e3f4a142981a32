"""``medseg qc RUN``: fit (or refit) the run's quality control on its validation split."""

from __future__ import annotations

from pathlib import Path

import typer

from medseg.cli.main import console


def qc(
    run: Path = typer.Argument(..., help="Run folder of `medseg train`."),
    tta: bool = typer.Option(False, help="Fit the model used when predicting with --tta or --uncertainty (mirroring TTA; "
                             "its score ranks cases better, at 2^D forward passes per case)."),
    reference_cases: int = typer.Option(30, min=0, help="Training images read for the image rules' references."),
    device: str = typer.Option("auto", help="auto | cpu | cuda."),
) -> None:
    """Fit the quality control that `predict`, `evaluate` and the report apply: a score per prediction, its predicted
    Dice, and a 'check this case' flag (uncertain, or an image unlike the training images). `train` fits the plain
    model at its end; this refits it, or adds the --tta one. Written to RUN/quality.json."""
    from medseg.cli.progress import case_progress
    from medseg.evaluation.quality_fit import fit_quality
    from medseg.inference.quality import QUALITY_FILE

    with case_progress(console, "validation cases") as on_case:
        model = fit_quality(run, mirror=tta, reference_cases=reference_cases, device=device, on_case=on_case)
    console.print(quality_summary(model) + f"\nwritten: {run / QUALITY_FILE}", highlight=False, markup=False)


def quality_summary(model) -> str:
    """One line on a fitted quality model."""
    fit = model.fit
    if model.threshold is None:
        return f"quality control: {model.cases} validation case(s), too few to learn a threshold; only the image rules apply"
    figures = (f"; on them the score's AUROC for the worst 20% is {fit['auroc_worst20']:.2f}, Spearman with Dice "
               f"{fit['spearman_score_dice']:+.2f} (in-sample)") if "auroc_worst20" in fit else ""
    return f"quality control: fitted on {model.cases} validation case(s){' with TTA' if model.mirror else ''}{figures}"
