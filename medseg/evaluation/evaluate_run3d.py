"""Evaluate a trained 3D run on its held-out cases or on another labelled dataset.

Per case and class: every metric of :mod:`medseg.evaluation.metrics` (Dice, IoU,
precision, sensitivity, volume difference in mm³, HD95 in mm, NSD at ``tolerance``
mm), with each case's own voxel spacing; per case: voxel accuracy. Cases are the
run's test split, or its validation split when it has no test split (the usual 3D
train/val split), or every case of ``--data`` (a labelled 3D dataset folder). Each
prediction is made on the case's own grid (see :class:`Predictor3D`) and compared
with its label there.

Writes into ``RUN/evaluation`` (or ``out``): ``per_case.csv`` (first column ``case``),
``summary.json`` (the structure of :mod:`medseg.evaluation.outputs`, as for 2D runs,
plus ``"task": "segmentation3d"``), ``predictions/<case>.nii.gz`` (label values, on
the case's original grid) and ``cases.json`` (``{case: {"image": [channel paths],
"label", "prediction", "fov": null}}``, absolute paths).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from medseg.data.dataset3d import class_ids
from medseg.data.layouts import VolumeCase, discover_volume_cases, load_case
from medseg.errors import RunFolderError
from medseg.evaluation.calibration import ReliabilityAccumulator, evaluation_calibration
from medseg.evaluation.metrics import DEFAULT_TOLERANCE, SegmentationMetric, mean_over_classes, wide_row
from medseg.evaluation.outputs import spacing_text, summarize, write_cases_json, write_rows_csv, write_summary
from medseg.evaluation.overlap import confusion_matrix, scores_from_confusion
from medseg.inference.predictor3d import Predictor3D
from medseg.io import write_image
from medseg.runfolder.split import check_files, read_split

log = logging.getLogger(__name__)


def split_cases_of_run(run_dir: Path, values: tuple[int, ...], num_channels: int) -> tuple[list[VolumeCase], str]:
    """The run's test cases, or its validation cases when there is no test split."""
    split = read_split(run_dir)
    for subset in ("test", "val"):
        entries = split[subset]
        if entries:
            check_files(entries, run_dir)
            cases = [VolumeCase(e.key, e.images, e.labels[0] if e.labels else None, values, num_channels) for e in entries]
            return cases, f"{subset} split"
    raise RunFolderError("the run's split has no test or validation cases", path=run_dir,
                         hint="evaluate on a labelled dataset folder with --data DIR")


def evaluate_run_3d(
    run_dir: str | Path,
    data: str | Path | None = None,
    *,
    out: str | Path | None = None,
    mirror: bool = False,
    tolerance: float = DEFAULT_TOLERANCE,
    on_case: Callable[[str], None] | None = None,
    extra: Mapping[str, Any] | None = None,
) -> dict:
    """Evaluate and write the files of the module docs; returns the summary dict."""
    run_dir = Path(run_dir)
    predictor = Predictor3D.from_run(run_dir, mirror=mirror)
    scheme = predictor.scheme
    k, names, values = scheme.num_classes, scheme.names, tuple(scheme.codes)
    if data is None:
        cases, source = split_cases_of_run(run_dir, values, predictor.num_channels)
    else:
        cases, _ = discover_volume_cases(data, require_labels=True)
        source = str(data)
    out_dir = Path(out) if out else run_dir / "evaluation"
    metric = SegmentationMetric({values[c]: names[c] for c in range(1, k)}, tolerance)
    reliability = ReliabilityAccumulator(k)  # ECE and reliability.png from the probabilities
    rows: list[dict] = []
    listing: dict[str, dict] = {}
    pooled = np.zeros((k, k), dtype=np.int64)
    for case in cases:
        image, label = load_case(case, labels=values)
        prediction = predictor.predict(image, probabilities=True)
        pred = prediction.labels
        truth = label.array[0]
        truth_ids = class_ids(truth, scheme)
        reliability.update(prediction.probabilities, truth_ids)
        prediction.probabilities = None
        cm = confusion_matrix(class_ids(pred, scheme), truth_ids, k)
        pooled += cm
        spacing = label.geometry.spacing
        per_class = metric.update(pred, truth, case=case.key, spacing=spacing)
        row = {"case": case.key, "image": case.images[0].name, "spacing": spacing_text(spacing),
               "accuracy": scores_from_confusion(cm)["accuracy"], "mean_dice": mean_over_classes(per_class),
               **wide_row(per_class)}
        rows.append(row)
        pred_path = out_dir / "predictions" / f"{case.key}.nii.gz"
        write_image(pred_path, pred[None], image.geometry)
        listing[case.key] = {"image": [str(p.resolve()) for p in case.images], "label": str(case.label.resolve()),
                             "prediction": str(pred_path.resolve()), "fov": None}
        log.debug("%s: mean Dice %.4f", case.key, row["mean_dice"])
        if on_case:
            on_case(case.key)
    write_rows_csv(out_dir / "per_case.csv", rows)
    pooled_scores = scores_from_confusion(pooled)
    summary = summarize(
        metric.rows, names[1:], tolerance=tolerance, spacing_unit="mm", ndim=3,
        extra={"calibration": evaluation_calibration(reliability, out_dir, names, predictor.temperature), **(extra or {})},
        header={"task": "segmentation3d", "source": source, "images": len(rows), "fov_restricted": 0, "mirror_tta": mirror,
                "pooled_accuracy": pooled_scores["accuracy"]},
        per_case={"accuracy": [r["accuracy"] for r in rows]},
    )
    write_summary(out_dir / "summary.json", summary)
    write_cases_json(out_dir / "cases.json", listing)
    return summary
