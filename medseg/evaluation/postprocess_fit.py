"""The post-processing decision of a cross-validated run, made on its out-of-fold predictions (``RUN/cv``) and
written to ``RUN/postprocessing.json`` (:mod:`medseg.inference.postprocess` applies it).

Per foreground class, each step is tried alone on every out-of-fold prediction against the truth: removing the
class's components smaller than half its smallest true component (a size chosen from the data), keeping its
largest component, filling its holes. A step is applied only when the paired bootstrap 95% interval of the mean
per-case Dice difference (after minus before, cases where the class is in neither counted out) lies above zero.
A step changes only its class's voxels and background, so no other class can get worse. The file records, per
class and step, the decision, the Dice before and after, the difference with its interval, and the cases used.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path

import numpy as np
from scipy import ndimage

from medseg.data.labels import LabelScheme
from medseg.evaluation.aggregate import describe
from medseg.evaluation.cases import read_case
from medseg.inference.postprocess import POSTPROCESSING_FILE, STEPS, apply_step
from medseg.io import read_image
from medseg.io.atomic import write_json
from medseg.io.json_file import read_json_object
from medseg.runfolder.split import SplitEntry

log = logging.getLogger(__name__)


def dice(pred: np.ndarray, truth: np.ndarray) -> float:
    total = int(pred.sum()) + int(truth.sum())
    return 2.0 * int((pred & truth).sum()) / total if total else math.nan


def _smallest(mask: np.ndarray) -> int | None:
    labelled, n = ndimage.label(mask)
    return int(np.bincount(labelled.ravel())[1:].min()) if n else None


def decide(cases, class_names: list[str], **bootstrap) -> dict:
    """The decision (see the module doc) on ``cases``: (predicted class ids, true class ids) pairs, restricted to their
    region of interest already; a list, or a function returning a fresh iterator over them (read one at a time:
    two passes, so a large cohort never sits in memory)."""
    iterate = cases if callable(cases) else (lambda: iter(cases))
    k = len(class_names)
    smallest: dict[int, int | None] = {c: None for c in range(1, k)}
    for _, truth in iterate():  # pass 1: each class's smallest true component sets its size threshold
        for c in range(1, k):
            s = _smallest(truth == c)
            if s is not None and (smallest[c] is None or s < smallest[c]):
                smallest[c] = s
    steps = {c: [(step, max(1, smallest[c] // 2) if step == "min_size" and smallest[c] else 0) for step in STEPS
                 if step != "min_size" or smallest[c]] for c in range(1, k)}
    before: dict[int, list[float]] = {c: [] for c in range(1, k)}
    after: dict[tuple[int, str], list[float]] = {(c, step): [] for c in range(1, k) for step, _ in steps[c]}
    for pred, truth in iterate():  # pass 2: Dice before and after each step, per case
        for c in range(1, k):
            t = truth == c
            d0 = dice(pred == c, t)
            before[c].append(d0)
            for step, voxels in steps[c]:
                d1 = dice(apply_step(pred, c, step, voxels) == c, t)
                after[(c, step)].append(1.0 if math.isnan(d1) and not math.isnan(d0) else d1)  # all false positives gone
    classes = {}
    for c in range(1, k):
        entry: dict = {"class_id": c}
        b0 = np.array(before[c])
        for step in STEPS:
            if step == "min_size" and not smallest[c]:
                entry[step] = {"apply": False, "why": "the class is in no true mask"}
                continue
            voxels = dict(steps[c])[step]
            b1 = np.array(after[(c, step)])
            both = ~np.isnan(b0) & ~np.isnan(b1)
            diff = describe(list(b1[both] - b0[both]), None, **bootstrap)
            lo = diff["ci95"][0]
            entry[step] = {"apply": bool(lo is not None and not math.isnan(lo) and lo > 0),
                           "dice_before": float(b0[both].mean()) if both.any() else None,
                           "dice_after": float(b1[both].mean()) if both.any() else None,
                           "difference": diff["mean"], "ci95": diff["ci95"], "cases": int(both.sum()),
                           **({"voxels": voxels} if step == "min_size" else {}),
                           **({"why": diff["ci_note"]} if "ci_note" in diff else {})}
        classes[class_names[c]] = entry
    return {"format": 1, "rule": "a step is applied when the paired bootstrap 95% interval of its mean per-case Dice "
                                 "difference lies above zero (cases resampled, not patients); only the class's own voxels change",
            "classes": classes}


def out_of_fold_cases(run: Path, scheme: LabelScheme, dims: int, channels: int | None):
    """(predicted, true) class ids of every out-of-fold case in ``RUN/cv``, inside each case's field of view, read
    one case at a time (a generator)."""
    listing = read_json_object(run / "cv" / "cases.json")
    lut = {int(v): i for i, v in enumerate(scheme.codes)} if scheme.kind == "index" else None
    for key, c in listing.items():
        images = tuple(Path(p) for p in (c["image"] if isinstance(c["image"], list) else [c["image"]]))
        labels = tuple(Path(p) for p in (c["label"] if isinstance(c["label"], list) else [c["label"]]))
        case = read_case(SplitEntry(key, images, labels, Path(c["fov"]) if c.get("fov") else None), scheme, dims, channels)
        pred = np.asarray(read_image(c["prediction"]).array)[0]
        if dims == 3 and lut is not None:  # volumes hold label values; 2D predictions are class ids already
            ids = np.zeros(pred.shape, np.int64)
            for value, i in lut.items():
                ids[pred == value] = i
            pred = ids
        truth = np.asarray(case.truth)
        if case.region is not None:
            pred, truth = np.where(case.region, pred, 0), np.where(case.region, truth, 0)
        yield pred.astype(np.uint8), truth.astype(np.uint8)


def fit_postprocessing(run: str | Path) -> dict:
    """Decide on ``RUN/cv``'s out-of-fold predictions and write ``RUN/postprocessing.json``."""
    from medseg.runfolder import read_run_info, run_dims

    run = Path(run)
    info = read_run_info(run / "fold_0")
    scheme = LabelScheme.from_json(info["labels"])
    dims = run_dims(info)
    channels = (info.get("dataset") or {}).get("num_channels") if dims == 3 else None
    decision = decide(lambda: out_of_fold_cases(run, scheme, dims, channels), list(scheme.names))
    write_json(run / POSTPROCESSING_FILE, decision)
    chosen = [f"{name}: {step}" for name, e in decision["classes"].items() for step in STEPS if e[step].get("apply")]
    log.info("post-processing decided on the out-of-fold predictions: %s", ", ".join(chosen) or "none helps")
    return decision
