"""Evaluate a trained run on its held-out test split or on another labelled folder.

Per image and class: every metric of :mod:`medseg.evaluation.metrics` (Dice, IoU,
precision, sensitivity, volume difference, HD95, NSD at ``tolerance``), in pixels
(2D image files carry no trustworthy pixel size); per image: pixel accuracy. A
field-of-view mask, when the data has one, restricts every metric to the pixels
inside it (outside, prediction and truth both count as background).

Writes into ``RUN/evaluation`` (or ``out``):

- ``per_image.csv``: one row per image, first column ``case``; ``<metric>_<class>`` columns;
- ``summary.json``: per class and metric mean/std/median/bootstrap CI95
  (:mod:`medseg.evaluation.outputs`), plus the pooled Dice/IoU and pixel accuracy;
- ``predictions/<case>.png``: each predicted label map as an index PNG (class ids);
- ``cases.json``: ``{case: {"image", "label" (one path, or a list when several
  mask files are merged), "prediction", "fov"}}`` with absolute paths;
- ``overlays/``: the best and worst images.

3D runs are evaluated by :mod:`medseg.evaluation.evaluate_run3d` (chosen by the run's task).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from medseg.data.dataset2d import DataOptions2D, read_fov
from medseg.data.discovery import Case2D, discover_cases
from medseg.data.labels import read_mask
from medseg.errors import ConfigError, DataError, RunFolderError
from medseg.evaluation.calibration import ReliabilityAccumulator, evaluation_calibration
from medseg.evaluation.metrics import DEFAULT_TOLERANCE, SegmentationMetric, mean_over_classes, wide_row
from medseg.evaluation.outputs import summarize, write_cases_json, write_rows_csv, write_summary
from medseg.evaluation.overlap import confusion_matrix, scores_from_confusion
from medseg.inference.predictor import Predictor2D
from medseg.io import read_image, write_image
from medseg.runfolder import read_run_info
from medseg.runfolder.split import check_files, read_split

log = logging.getLogger(__name__)

__all__ = ["evaluate_run", "write_rows_csv"]


def _test_cases(run_dir: Path) -> list[Case2D]:
    entries = read_split(run_dir)["test"]
    if not entries:
        raise RunFolderError("the run's split has no test images", path=run_dir,
                             hint="evaluate on a labelled folder with --data DIR")
    check_files(entries, run_dir)
    return [Case2D(e.key, e.images[0], e.labels, e.fov, e.group) for e in entries]


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
    on_case: Callable[[str], None] | None = None,
    extra: Mapping[str, Any] | None = None,
) -> dict:
    """Evaluate and write the files of the module docs; returns the summary dict.

    ``tolerance`` is the NSD tolerance (pixels in 2D, mm in 3D); ``extra`` is merged
    into the summary (e.g. calibration figures).
    """
    run_dir = Path(run_dir)
    info = read_run_info(run_dir)
    if info.get("task") == "segmentation3d":
        from medseg.evaluation.evaluate_run3d import evaluate_run_3d

        if fov:
            raise ConfigError("--fov applies to 2D runs only", path=run_dir)
        return evaluate_run_3d(run_dir, data, out=out, mirror=mirror, tolerance=tolerance, on_case=on_case, extra=extra)
    predictor = Predictor2D.from_run(run_dir, mirror=mirror)
    scheme, k = predictor.scheme, predictor.scheme.num_classes
    if data is None:
        cases = _test_cases(run_dir)
        source = "test split"
    else:
        opts = DataOptions2D(**info["data_options"])
        cases = discover_cases(Path(data), fov=fov, pair_pattern=opts.pair_pattern, require_masks=True)
        source = str(data)
    out_dir = Path(out) if out else run_dir / "evaluation"
    names = {c: scheme.names[c] for c in range(1, k)}
    metric = SegmentationMetric(names, tolerance)
    reliability = ReliabilityAccumulator(k)  # ECE and reliability.png from the probabilities
    rows: list[dict] = []
    pooled = np.zeros((k, k), dtype=np.int64)
    kept: list[tuple[float, str, np.ndarray, np.ndarray]] = []
    listing: dict[str, dict] = {}
    for case in cases:
        img = read_image(case.image)
        truth = read_mask(case.masks, scheme)
        if truth.shape != img.spatial_shape:
            raise DataError(f"mask size {truth.shape[::-1]} differs from image size {img.spatial_shape[::-1]}", path=case.masks[0])
        region = read_fov(case.fov, img.spatial_shape) if case.fov is not None else None
        prediction = predictor.predict(img)
        pred = prediction.labels
        reliability.update(prediction.probabilities, truth, region)
        cm = confusion_matrix(pred, truth, k, region)
        pooled += cm
        per_class = metric.update(pred, truth, case=case.key, spacing=img.geometry.spacing, mask=region)
        row = {"case": case.key, "image": case.image.name, "fov": int(region is not None),
               "accuracy": scores_from_confusion(cm)["accuracy"], "mean_dice": mean_over_classes(per_class),
               **wide_row(per_class)}
        rows.append(row)
        pred_path = out_dir / "predictions" / f"{case.key}.png"
        write_image(pred_path, pred[None].astype(np.uint8))
        listing[case.key] = {"image": str(case.image.resolve()), "label": _one_or_list(case.masks),
                             "prediction": str(pred_path.resolve()),
                             "fov": str(case.fov.resolve()) if case.fov is not None else None}
        kept.append((row["mean_dice"], case.key, img.array, pred))
        if on_case:
            on_case(case.key)

    write_rows_csv(out_dir / "per_image.csv", rows)
    pooled_scores = scores_from_confusion(pooled)
    summary = summarize(
        metric.rows, list(names.values()), tolerance=tolerance, spacing_unit="px", ndim=2,
        extra={"calibration": evaluation_calibration(reliability, out_dir, scheme.names, predictor.temperature), **(extra or {})},
        header={"source": source, "images": len(rows), "fov_restricted": sum(r["fov"] for r in rows), "mirror_tta": mirror,
                "pooled_accuracy": pooled_scores["accuracy"]},
        per_case={"accuracy": [r["accuracy"] for r in rows]},
    )
    write_summary(out_dir / "summary.json", summary)
    write_cases_json(out_dir / "cases.json", listing)
    if overlays:
        _write_overlays(out_dir / "overlays", kept, predictor.colors, overlays)
    return summary


def _write_overlays(folder: Path, kept: list, colors: list, n: int) -> None:
    from medseg.inference.overlays import save_overlay

    ranked = sorted((x for x in kept if not math.isnan(x[0])), key=lambda x: x[0])
    chosen = {("worst", i): x for i, x in enumerate(ranked[:n])}
    chosen.update({("best", i): x for i, x in enumerate(reversed(ranked[-n:]))})
    for (tag, i), (score, key, image, pred) in chosen.items():
        save_overlay(folder / f"{tag}{i + 1}_{key}_dice{score:.3f}.png", image, pred, colors)
