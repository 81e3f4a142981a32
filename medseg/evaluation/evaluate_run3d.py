"""Evaluate a trained 3D run on its held-out cases or on another labelled dataset.

Per case and class: Dice and IoU; per case: voxel accuracy. Cases are the run's
test split, or its validation split when it has no test split (the usual 3D
train/val split), or every case of ``--data`` (a labelled 3D dataset folder).
Each prediction is made on the case's own grid (see :class:`Predictor3D`) and
compared with its label there. Writes ``evaluation/per_case.csv`` and
``evaluation/summary.json`` (the same summary structure as 2D runs).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from pathlib import Path

import numpy as np

from medseg.data.dataset3d import class_ids
from medseg.data.layouts import VolumeCase, discover_volume_cases, load_case
from medseg.errors import RunFolderError
from medseg.evaluation.evaluate_run import summarize, write_rows_csv
from medseg.evaluation.overlap import confusion_matrix, mean_foreground, scores_from_confusion
from medseg.inference.predictor3d import Predictor3D
from medseg.io.atomic import write_json

log = logging.getLogger(__name__)


def split_cases_of_run(run_dir: Path, values: tuple[int, ...], num_channels: int) -> tuple[list[VolumeCase], str]:
    """The run's test cases, or its validation cases when there is no test split."""
    split = json.loads((run_dir / "split.json").read_text())
    for subset in ("test", "val"):
        entries = split.get(subset) or []
        if entries:
            cases = [VolumeCase(e["key"], tuple(Path(p) for p in e["images"]), Path(e["label"]) if e.get("label") else None,
                                values, num_channels) for e in entries]
            return cases, f"{subset} split"
    raise RunFolderError("the run's split has no test or validation cases", path=run_dir,
                         hint="evaluate on a labelled dataset folder with --data DIR")


def evaluate_run_3d(
    run_dir: str | Path,
    data: str | Path | None = None,
    *,
    out: str | Path | None = None,
    mirror: bool = False,
    on_case: Callable[[str], None] | None = None,
) -> dict:
    """Evaluate and write the CSV/JSON; returns the summary dict."""
    run_dir = Path(run_dir)
    predictor = Predictor3D.from_run(run_dir, mirror=mirror)
    scheme = predictor.scheme
    k, names, values = scheme.num_classes, scheme.names, tuple(scheme.codes)
    if data is None:
        cases, source = split_cases_of_run(run_dir, values, predictor.num_channels)
    else:
        cases, _ = discover_volume_cases(data, require_labels=True)
        source = str(data)
    rows: list[dict] = []
    pooled = np.zeros((k, k), dtype=np.int64)
    for case in cases:
        image, label = load_case(case, labels=values)
        pred = predictor.predict(image).labels
        cm = confusion_matrix(class_ids(pred, scheme), class_ids(label.array[0], scheme), k)
        pooled += cm
        s = scores_from_confusion(cm)
        row = {"case": case.key, "image": case.images[0].name, "accuracy": s["accuracy"], "mean_dice": mean_foreground(s["dice"])}
        for c in range(1, k):
            row[f"dice_{names[c]}"] = float(s["dice"][c])
            row[f"iou_{names[c]}"] = float(s["iou"][c])
        rows.append(row)
        log.debug("%s: mean Dice %.4f", case.key, row["mean_dice"])
        if on_case:
            on_case(case.key)
    out_dir = Path(out) if out else run_dir / "evaluation"
    write_rows_csv(out_dir / "per_case.csv", rows)
    summary = {"task": "segmentation3d", **summarize(rows, pooled, names, source, mirror)}
    write_json(out_dir / "summary.json", summary)
    return summary
