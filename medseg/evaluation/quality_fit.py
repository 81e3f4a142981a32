"""Fit a run's quality control on its validation cases (``RUN/quality.json``; :mod:`medseg.inference.quality`).

Each validation case is predicted (without calibration, with mirroring TTA when asked) and its
:class:`~medseg.inference.quality.QualityFeatures` and true mean foreground Dice are kept. From them:
the flag's threshold (the scores' 80th percentile), the line from score to Dice, and the range of
predicted volumes. The image rules' references (negative values, histogram shape, axis profiles)
come from the validation images and up to ``reference_cases`` training images, read evenly spaced
through the split. ``train`` fits the plain model at its end; ``medseg qc RUN [--tta]`` refits.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from pathlib import Path

import numpy as np

from medseg.evaluation.calibrate_run import labelled_cases
from medseg.evaluation.overlap import confusion_matrix, mean_foreground, scores_from_confusion
from medseg.inference.predictor import Predictor
from medseg.inference.quality import (FLAG_PERCENTILE, MIN_FIT_CASES, ImageReference, ImageStats, QualityFeatures, QualityModel, auroc,
                                      quality_models, worst_share, write_quality_models)

log = logging.getLogger(__name__)

#: cases needed before a line from score to Dice is fitted
MIN_LINE_CASES = 10
#: a profile template is used only when it differs from its own mirror image by this much (1 - correlation)
MIN_ASYMMETRY = 0.2


def _templates(stats: list[ImageStats]) -> list[list[float] | None]:
    """Per axis, the mean profile of the reference images, kept where it is asymmetric and every reference
    image matches it better than its mirror image."""
    if len(stats) < MIN_FIT_CASES:
        return []
    out: list[list[float] | None] = []
    for axis in range(min(len(s.profiles) for s in stats)):
        profiles = np.array([s.profiles[axis] for s in stats])
        t = profiles.mean(axis=0)
        norm = float(np.linalg.norm(t))
        if norm == 0:
            out.append(None)
            continue
        t = t / norm
        separates = bool(np.all(profiles @ t > profiles @ t[::-1]))
        out.append(t.tolist() if 1 - float(t @ t[::-1]) > MIN_ASYMMETRY and separates else None)
    return out


def build_model(features: list[QualityFeatures], dice: list[float], references: list[ImageStats], *, mirror: bool,
                class_names: list[str]) -> QualityModel:
    """The quality model of the validation ``features`` and their mean ``dice`` (NaN: no class in truth or prediction),
    with the image rules' ``references`` (validation and training images)."""
    scores = np.array([f.score for f in features], float)
    d = np.array(dice, float)
    model = QualityModel(mirror=mirror, cases=len(features), class_names=list(class_names))
    if len(features) >= MIN_FIT_CASES:
        model.threshold = float(np.percentile(scores, FLAG_PERCENTILE))
        fg = [f.foreground for f in features]
        model.foreground_range = (float(min(fg)), float(max(fg)))
    known = ~np.isnan(d)
    if known.sum() >= MIN_LINE_CASES and np.ptp(scores[known]) > 0:
        slope, intercept = np.polyfit(scores[known], d[known], 1)
        if slope < 0:
            model.dice_line = (float(intercept), float(slope))
    if len(references) >= MIN_FIT_CASES:
        channels = min(len(r.p1) for r in references)
        model.negative_max = [max(r.negative[c] for r in references) for c in range(channels)]
        same = [r for r in references if len(r.p1) == channels]
        model.images = ImageReference.of(same)
        model.templates = _templates(references)
    model.fit = fit_figures(model, features, d)
    return model


def fit_figures(model: QualityModel, features: list[QualityFeatures], dice: np.ndarray) -> dict:
    """In-sample figures of the score on the fitted cases: AUROC for the worst 20% by Dice, Spearman with Dice."""
    from scipy.stats import spearmanr

    known = ~np.isnan(dice)
    scores = np.array([f.score for f in features], float)[known]
    d = dice[known]
    out: dict = {"cases": int(known.sum()), "scores": [round(float(s), 4) for s in scores],
                 "dice": [round(float(x), 4) for x in d]}
    if len(d) >= MIN_FIT_CASES and np.ptp(d) > 0 and np.ptp(scores) > 0:
        out["auroc_worst20"] = auroc(scores, worst_share(d))
        out["spearman_score_dice"] = float(spearmanr(scores, d)[0])
    return out


def _mean_dice(pred: np.ndarray, truth: np.ndarray, k: int, region: np.ndarray | None) -> float:
    return mean_foreground(scores_from_confusion(confusion_matrix(pred, truth, k, region))["dice"])


def _reference_images(run_dir: Path, limit: int) -> list[ImageStats]:
    """Statistics of up to ``limit`` training images, evenly spaced through the split."""
    cases = []
    try:
        from medseg.evaluation.cases import run_cases

        entries, _ = run_cases(run_dir, ("train",))
    except Exception as e:  # noqa: BLE001 - the references are a help, not a requirement
        log.debug("quality control: no training images for the references: %s", e)
        return []
    step = max(1, math.ceil(len(entries) / max(limit, 1)))
    chosen = {e.key for e in entries[::step][:limit]}
    for case in labelled_cases(run_dir, "train", keys=chosen):
        cases.append(ImageStats.of(case.image.array))
    return cases


def fit_quality(run_dir: str | Path, *, mirror: bool = False, reference_cases: int = 30, device: str = "auto",
                on_case: Callable[[str, int, int], None] | None = None) -> QualityModel:
    """Fit and save (``RUN/quality.json``, keeping the other mode's model) the quality model of a run."""
    from medseg.data.labels import LabelScheme
    from medseg.runfolder import read_run_info

    run_dir = Path(run_dir)
    scheme = LabelScheme.from_json(read_run_info(run_dir)["labels"])
    predictor = Predictor.from_run(run_dir, mirror=mirror, device=device, calibration=False)
    features: list[QualityFeatures] = []
    dice: list[float] = []
    for i, case in enumerate(labelled_cases(run_dir, "val"), 1):
        pred = predictor.predict(case.image, quality=True)
        features.append(pred.features)
        dice.append(_mean_dice(pred.labels, case.truth, scheme.num_classes, case.region))
        if on_case:
            on_case(case.key, i, 0)  # the number of cases is not known ahead
    references = [f.image for f in features] + _reference_images(run_dir, reference_cases)
    model = build_model(features, dice, references, mirror=mirror, class_names=list(scheme.names))
    models = quality_models(run_dir)
    models["tta" if mirror else "plain"] = model
    write_quality_models(run_dir, models)
    fit = model.fit
    log.info("quality control fitted on %d validation cases%s: threshold %s, in-sample AUROC (worst 20%%) %s",
             model.cases, " (TTA)" if mirror else "", "none" if model.threshold is None else f"{model.threshold:.3f}",
             f"{fit['auroc_worst20']:.3f}" if "auroc_worst20" in fit else "n/a")
    return model
