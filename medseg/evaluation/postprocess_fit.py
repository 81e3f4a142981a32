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


def smallest_true_component(truths: list[np.ndarray]) -> int | None:
    sizes = []
    for t in truths:
        labelled, n = ndimage.label(t)
        if n:
            sizes.append(int(np.bincount(labelled.ravel())[1:].min()))
    return min(sizes) if sizes else None


def decide(cases: list[tuple[np.ndarray, np.ndarray]], class_names: list[str], **bootstrap) -> dict:
    """The decision (see the module doc) for ``cases`` of (predicted class ids, true class ids), restricted to
    their region of interest already."""
    classes = {}
    for c in range(1, len(class_names)):
        truths = [t == c for _, t in cases]
        before = np.array([dice(p == c, t) for (p, _), t in zip(cases, truths)])
        smallest = smallest_true_component(truths)
        entry: dict = {"class_id": c}
        for step in STEPS:
            voxels = max(1, smallest // 2) if step == "min_size" and smallest else 0
            if step == "min_size" and not smallest:
                entry[step] = {"apply": False, "why": "the class is in no true mask"}
                continue
            after = np.array([dice(apply_step(p, c, step, voxels) == c, t) for (p, _), t in zip(cases, truths)])
            both = ~np.isnan(before) & ~np.isnan(after)
            diff = describe(list(after[both] - before[both]), None, **bootstrap)
            lo = diff["ci95"][0]
            entry[step] = {"apply": bool(lo is not None and not math.isnan(lo) and lo > 0),
                           "dice_before": float(np.nanmean(before)) if both.any() else None,
                           "dice_after": float(np.nanmean(after)) if both.any() else None,
                           "difference": diff["mean"], "ci95": diff["ci95"], "cases": int(both.sum()),
                           **({"voxels": voxels} if step == "min_size" else {}),
                           **({"why": diff["ci_note"]} if "ci_note" in diff else {})}
        classes[class_names[c]] = entry
    return {"format": 1, "rule": "a step is applied when the paired bootstrap 95% interval of its mean per-case Dice "
                                 "difference lies above zero; only the class's own voxels change",
            "classes": classes}


def out_of_fold_cases(run: Path, scheme: LabelScheme, dims: int, channels: int | None) -> list[tuple[np.ndarray, np.ndarray]]:
    """(predicted, true) class ids of every out-of-fold case in ``RUN/cv``, inside each case's field of view."""
    listing = read_json_object(run / "cv" / "cases.json")
    lut = {int(v): i for i, v in enumerate(scheme.codes)} if scheme.kind == "index" else None
    out = []
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
        out.append((pred.astype(np.int64), truth.astype(np.int64)))
    return out


def fit_postprocessing(run: str | Path) -> dict:
    """Decide on ``RUN/cv``'s out-of-fold predictions and write ``RUN/postprocessing.json``."""
    from medseg.runfolder import read_run_info, run_dims

    run = Path(run)
    info = read_run_info(run / "fold_0")
    scheme = LabelScheme.from_json(info["labels"])
    dims = run_dims(info)
    channels = (info.get("dataset") or {}).get("num_channels") if dims == 3 else None
    decision = decide(out_of_fold_cases(run, scheme, dims, channels), list(scheme.names))
    write_json(run / POSTPROCESSING_FILE, decision)
    chosen = [f"{name}: {step}" for name, e in decision["classes"].items() for step in STEPS if e[step].get("apply")]
    log.info("post-processing decided on the out-of-fold predictions: %s", ", ".join(chosen) or "none helps")
    return decision
