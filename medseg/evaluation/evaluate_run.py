"""Evaluate a trained run, 2D or 3D, on its held-out cases or on another labelled folder.

Per case and class: every metric of :mod:`medseg.evaluation.metrics` (Dice, IoU, precision,
sensitivity, volume difference, HD95, NSD at ``tolerance``), with each case's own voxel spacing in
mm for volumes and in pixels for 2D image files (which carry no trustworthy pixel size); per case:
voxel or pixel accuracy. A 2D field-of-view mask, when the data has one, restricts every metric to
the pixels inside it (outside, prediction and truth both count as background). Cases are the run's
test split (3D runs without one: the validation split), or every labelled case of ``data``. Each
prediction is made on the case's own grid (:class:`~medseg.inference.predictor.Predictor`).

Writes into ``RUN/evaluation`` (or ``out``):

- ``per_image.csv`` (2D) or ``per_case.csv`` (3D): one row per case, first column ``case``;
  ``<metric>_<class>`` columns;
- ``summary.json``: per class and metric mean/std/median/bootstrap CI95
  (:mod:`medseg.evaluation.outputs`), the pooled Dice/IoU and accuracy, ``dims``, and the calibration;
- ``predictions/<case>``: each prediction, a PNG of class ids (2D) or the label values on the case's
  grid (3D, the input's format);
- ``cases.json``: ``{case: {"image" (3D: the list of channel files), "label" (one path, or a list), "prediction",
  "fov"}}``, absolute paths;
- ``overlays/``: the best and worst images (2D; the report draws volumes).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from medseg.errors import ConfigError
from medseg.evaluation.calibration import ReliabilityAccumulator, evaluation_calibration
from medseg.evaluation.cases import folder_cases, read_case, run_cases
from medseg.evaluation.metrics import DEFAULT_TOLERANCE, SegmentationMetric, mean_over_classes, wide_row
from medseg.evaluation.outputs import spacing_text, summarize, write_cases_json, write_rows_csv, write_summary
from medseg.evaluation.overlap import confusion_matrix, scores_from_confusion
from medseg.inference.inputs import InputCase
from medseg.inference.predictor import Predictor
from medseg.inference.writers import ImageWriter, VolumeWriter
from medseg.runfolder import read_run_info

log = logging.getLogger(__name__)

__all__ = ["evaluate_run", "write_rows_csv"]

#: the per-case table's name, by the number of spatial axes
PER_CASE_CSV = {2: "per_image.csv", 3: "per_case.csv"}


def _one_or_list(paths) -> str | list[str]:
    resolved = [str(Path(p).resolve()) for p in paths]
    return resolved[0] if len(resolved) == 1 else resolved


def evaluate_run(
    run_dir: str | Path,
    data: str | Path | None = None,
    *,
    fov: str | None = None,
    out: str | Path | None = None,
    mirror: bool = False,
    overlays: int = 3,
    tolerance: float = DEFAULT_TOLERANCE,
    on_case: Callable[[str, int, int], None] | None = None,
    extra: Mapping[str, Any] | None = None,
    folds: Sequence[str | Path] | None = None,
    postprocessing: bool = True,
) -> dict:
    """Evaluate and write the files of the module docs; returns the summary dict.

    ``tolerance`` is the NSD tolerance (pixels in 2D, mm in 3D); ``extra`` is merged
    into the summary (e.g. calibration figures). ``folds``: the fold runs of a cross-validation; every case of
    each fold's validation split is predicted by that fold's model (out of fold), ``data`` is not used.
    ``postprocessing``: a cross-validated run's ``RUN/postprocessing.json`` is applied (``False``: not).
    """
    from medseg.inference.ensemble import is_cross_validated

    run_dir = Path(run_dir)
    cross_validated = is_cross_validated(run_dir)
    if cross_validated and data is None and not folds:
        raise ConfigError("a cross-validated run has no test split: its out-of-fold evaluation is in RUN/cv", path=run_dir,
                          hint="evaluate the ensemble on a labelled folder with --data DIR")
    info = read_run_info(run_dir / "fold_0" if cross_validated else run_dir)
    predictor_of: dict[str, Predictor] = {}
    fold_predictors = [Predictor.from_run(fold, mirror=mirror) for fold in folds or []]
    # out of fold, the first fold's predictor is the reference (labels, grid): no network is loaded twice
    predictor = fold_predictors[0] if fold_predictors else Predictor.from_run(run_dir, mirror=mirror, postprocessing=postprocessing)
    dims, scheme = predictor.dims, predictor.scheme
    k = scheme.num_classes
    if folds:
        entries = []
        for fold, fold_predictor in zip(folds, fold_predictors):
            fold_entries, _ = run_cases(fold, ("val",))
            entries += fold_entries
            predictor_of.update({e.key: fold_predictor for e in fold_entries})
        source = f"out of fold, {len(folds)} folds"
    elif data is None:
        entries, source = run_cases(run_dir, ("test",) if dims == 2 else ("test", "val"))
    else:
        entries, source = folder_cases(data, dims, info.get("data_options"), fov), str(data)
    out_dir = Path(out) if out else run_dir / "evaluation"
    # metrics keyed by the label values of index schemes (volumes, index masks), else by class id
    codes = np.asarray(scheme.codes if scheme.kind == "index" else range(k))
    metric = SegmentationMetric({int(codes[c]): scheme.names[c] for c in range(1, k)}, tolerance)
    reliability = ReliabilityAccumulator(k)  # ECE and reliability.png from the probabilities
    writer = ImageWriter(scheme, predictor.colors, "index", overlays=False) if dims == 2 else VolumeWriter(scheme)
    rows: list[dict] = []
    pooled = np.zeros((k, k), dtype=np.int64)
    kept: list[tuple[float, str, np.ndarray, np.ndarray]] = []
    listing: dict[str, dict] = {}
    for done, entry in enumerate(entries, 1):
        case = read_case(entry, scheme, dims, predictor.num_channels)
        by = predictor_of.get(entry.key, predictor)
        prediction = by.predict(case.image, probabilities=True, quality=by.quality is not None)
        pred = prediction.labels
        reliability.update(prediction.probabilities, case.truth, case.region)
        prediction.probabilities = None
        cm = confusion_matrix(pred, case.truth, k, case.region)
        pooled += cm
        spacing = case.image.geometry.spacing
        per_class = metric.update(codes[pred], codes[case.truth], case=case.key, spacing=spacing, mask=case.region)
        row = {"case": case.key, "image": entry.images[0].name, "fov": int(case.region is not None),
               "spacing": spacing_text(spacing), "accuracy": scores_from_confusion(cm)["accuracy"],
               "mean_dice": mean_over_classes(per_class), **wide_row(per_class)}
        if prediction.quality is not None:
            row.update(prediction.quality.row())
        rows.append(row)
        pred_path, _ = writer.write(out_dir / "predictions", InputCase(case.key, entry.images), case.image, prediction)
        listing[case.key] = {"image": [str(p.resolve()) for p in entry.images] if dims == 3 else str(entry.images[0].resolve()),
                             "label": _one_or_list(entry.labels),
                             "prediction": str(pred_path.resolve()),
                             "fov": str(entry.fov.resolve()) if entry.fov is not None else None}
        if dims == 2:
            kept.append((row["mean_dice"], case.key, case.image.array, pred))
        log.debug("%s: mean Dice %.4f", case.key, row["mean_dice"])
        if on_case:
            on_case(case.key, done, len(entries))

    write_rows_csv(out_dir / PER_CASE_CSV[dims], rows)
    if predictor.quality is not None:
        extra = {**(extra or {}), "quality_control": held_out_quality(rows, predictor.quality)}
    pooled_scores = scores_from_confusion(pooled)
    summary = summarize(
        metric.rows, list(scheme.names[1:]), tolerance=tolerance, spacing_unit="px" if dims == 2 else "mm", ndim=dims,
        extra={"calibration": evaluation_calibration(reliability, out_dir, scheme.names, predictor.temperature), **(extra or {})},
        header={"dims": dims, "source": source, "images": len(rows), "fov_restricted": sum(r["fov"] for r in rows),
                "mirror_tta": mirror, "pooled_accuracy": pooled_scores["accuracy"]},
        per_case={"accuracy": [r["accuracy"] for r in rows]},
        groups={e.key: e.group for e in entries if e.group is not None} or None,
    )
    write_summary(out_dir / "summary.json", summary)
    write_cases_json(out_dir / "cases.json", listing)
    if overlays and kept:
        _write_overlays(out_dir / "overlays", kept, predictor.colors, overlays)
    return summary


def held_out_quality(rows: list[dict], model) -> dict:
    """How the quality control did on the evaluated cases: cases flagged, and (with enough cases) the score's AUROC
    for the worst 20% by mean Dice and the Spearman correlation of the predicted with the true Dice."""
    from scipy.stats import spearmanr

    from medseg.inference.quality import MIN_FIT_CASES, auroc, worst_share

    scored = [r for r in rows if not math.isnan(r["mean_dice"])]
    out: dict = {"cases": len(rows), "flagged": sum(r["check"] for r in rows), "fitted_on_cases": model.cases,
                 "mirror_tta": model.mirror, "threshold": model.threshold}
    if len(scored) >= MIN_FIT_CASES:
        dice = np.array([r["mean_dice"] for r in scored])
        score = np.array([r["qc_score"] for r in scored])
        if np.ptp(dice) > 0 and np.ptp(score) > 0:
            out["auroc_worst20"] = auroc(score, worst_share(dice))
            out["spearman_score_dice"] = float(spearmanr(score, dice)[0])
        predicted = [r["predicted_dice"] for r in scored]
        if all(p is not None for p in predicted):
            out["mean_abs_error_predicted_dice"] = float(np.mean(np.abs(np.array(predicted) - dice)))
    return out


def _write_overlays(folder: Path, kept: list, colors: list, n: int) -> None:
    from medseg.inference.overlays import save_overlay

    ranked = sorted((x for x in kept if not math.isnan(x[0])), key=lambda x: x[0])
    chosen = {("worst", i): x for i, x in enumerate(ranked[:n])}
    chosen.update({("best", i): x for i, x in enumerate(reversed(ranked[-n:]))})
    for (tag, i), (score, key, image, pred) in chosen.items():
        save_overlay(folder / f"{tag}{i + 1}_{key}_dice{score:.3f}.png", image, pred, colors)
