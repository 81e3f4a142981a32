"""Fit a run's temperature on its validation split: ``medseg calibrate RUN``.

Each validation case is predicted with the run's predictor (uncalibrated; with
mirroring TTA when asked, which should match how predictions are then made), and
a uniform random subsample of its voxels (at most ``max_voxels`` per case, inside
the field of view for 2D data that has one) is kept as log-probabilities and
true classes. The temperature minimising their NLL is saved in
``RUN/calibration.json`` together with the NLL, top-label and classwise ECE
before and after on the same voxels (in-sample figures: held-out ones come from
``medseg evaluate`` or ``benchmarks/calibration_report.py``), the reliability
bins, and ``RUN/calibration_reliability.png`` (before | after).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from medseg.errors import RunFolderError
from medseg.evaluation.calibration import DEFAULT_BINS, ReliabilityAccumulator, fit_temperature, nll, plot_reliability, sample_voxels
from medseg.io import ImageData, read_image
from medseg.io.atomic import write_json
from medseg.runfolder import CALIBRATION_FILE, read_run_info
from medseg.runfolder.split import SPLIT_FILE, SplitEntry, check_files, read_split

log = logging.getLogger(__name__)

RELIABILITY_PNG = "calibration_reliability.png"


@dataclass
class LabelledCase:
    """One labelled case of a run's split: the image, its class ids ``(*S)`` and an optional region ``(*S)``."""

    key: str
    image: ImageData
    truth: np.ndarray
    region: np.ndarray | None = None


def split_entries(run_dir: Path, subset: str) -> list[SplitEntry]:
    """The entries of the run's ``subset`` (``train``/``val``/``test``), files checked; an empty one is an error."""
    entries = read_split(run_dir)[subset]
    if not entries:
        raise RunFolderError(f"the run's split has no '{subset}' cases", path=Path(run_dir) / SPLIT_FILE,
                             hint="train with a validation split (e.g. --split 60/20/20 or a --split-file with 'val')")
    check_files(entries, run_dir)
    return entries


def labelled_cases(run_dir: str | Path, subset: str = "val") -> Iterator[LabelledCase]:
    """Read the cases of ``subset`` one at a time, 2D or 3D as the run was trained."""
    run_dir = Path(run_dir)
    info = read_run_info(run_dir)
    entries = split_entries(run_dir, subset)
    from medseg.data.labels import LabelScheme

    scheme = LabelScheme.from_json(info["labels"])
    if info.get("task") == "segmentation3d":
        from medseg.data.dataset3d import class_ids
        from medseg.data.layouts import VolumeCase, load_case

        values, channels = tuple(scheme.codes), int(info["dataset"]["num_channels"])
        for e in entries:
            case = VolumeCase(e.key, e.images, e.labels[0], values, channels)
            image, label = load_case(case, labels=values)
            yield LabelledCase(e.key, image, class_ids(label.array[0], scheme))
    else:
        from medseg.data.dataset2d import read_fov
        from medseg.data.labels import read_mask

        for e in entries:
            image = read_image(e.images[0])
            truth = read_mask(list(e.labels), scheme)
            region = read_fov(e.fov, image.spatial_shape) if e.fov else None
            yield LabelledCase(e.key, image, truth, region)


def load_predictor(run_dir: str | Path, *, mirror: bool = False, calibration: bool = False, device: str = "auto"):
    """The run's 2D or 3D predictor (by default uncalibrated, to fit or compare against)."""
    if read_run_info(run_dir).get("task") == "segmentation3d":
        from medseg.inference.predictor3d import Predictor3D

        return Predictor3D.from_run(run_dir, mirror=mirror, device=device, calibration=calibration)
    from medseg.inference.predictor import Predictor2D

    return Predictor2D.from_run(run_dir, mirror=mirror, device=device, calibration=calibration)


def predict_probabilities_of(predictor, image: ImageData, uncertainty: bool = False):
    """The predictor's result with probabilities ``(K, *S)`` on the image's grid, 2D or 3D."""
    from medseg.inference.predictor3d import Predictor3D

    if isinstance(predictor, Predictor3D):
        return predictor.predict(image, probabilities=True, uncertainty=uncertainty)
    return predictor.predict(image, uncertainty=uncertainty)


def reliability_of_sample(logits: np.ndarray, labels: np.ndarray, temperature: float, bins: int) -> ReliabilityAccumulator:
    """Reliability of ``softmax(logits / T)`` for a voxel sample ``logits (n, K)``, ``labels (n,)``."""
    from scipy.special import softmax

    acc = ReliabilityAccumulator(logits.shape[1], bins)
    acc.update(softmax(logits.astype(np.float64) / temperature, axis=1).T, labels)
    return acc


def calibration_record(logits: np.ndarray, labels: np.ndarray, temperature: float, bins: int = DEFAULT_BINS,
                       names: list[str] | None = None) -> tuple[dict, ReliabilityAccumulator, ReliabilityAccumulator]:
    """NLL, ECE and bins of a voxel sample before (T=1) and after ``temperature``; the two accumulators."""
    before = reliability_of_sample(logits, labels, 1.0, bins)
    after = reliability_of_sample(logits, labels, temperature, bins)
    sb, sa = before.summary(names), after.summary(names)
    record = {"temperature": float(temperature),
              "ece_before": sb["ece"], "ece_after": sa["ece"],
              "classwise_ece_before": sb["classwise_ece"], "classwise_ece_after": sa["classwise_ece"],
              "nll_before": nll(logits, labels, 1.0), "nll_after": nll(logits, labels, temperature),
              "voxels": int(labels.size), "num_bins": bins, "bins_before": sb["bins"], "bins_after": sa["bins"]}
    return record, before, after


def calibrate_run(
    run_dir: str | Path,
    *,
    mirror: bool = False,
    bins: int = DEFAULT_BINS,
    max_voxels: int = 100_000,
    seed: int = 0,
    device: str = "auto",
    on_case: Callable[[str], None] | None = None,
) -> dict:
    """Fit the temperature on the validation split; write ``calibration.json`` and the diagram; return the record."""
    run_dir = Path(run_dir)
    predictor = load_predictor(run_dir, mirror=mirror, device=device)
    rng = np.random.default_rng(seed)
    logits, labels, keys = [], [], []
    for case in labelled_cases(run_dir, "val"):
        probs = predict_probabilities_of(predictor, case.image).probabilities
        lg, y = sample_voxels(probs, case.truth, case.region, max_voxels, rng)
        logits.append(lg)
        labels.append(y)
        keys.append(case.key)
        if on_case:
            on_case(case.key)
    all_logits, all_labels = np.concatenate(logits), np.concatenate(labels)
    temperature = fit_temperature(all_logits, all_labels)
    record, before, after = calibration_record(all_logits, all_labels, temperature, bins, predictor.scheme.names)
    record = {**record, "fitted_on": "val split", "cases": keys, "mirror_tta": mirror, "max_voxels_per_case": max_voxels,
              "applied_to": "log of the final (TTA-mean, input-grid) probabilities: p' = softmax(log p / T)",
              "written": time.strftime("%Y-%m-%dT%H:%M:%S"), "reliability_plot": RELIABILITY_PNG}
    plot_reliability(run_dir / RELIABILITY_PNG, {"before": before, f"after (T={temperature:.3f})": after},
                     title=f"validation split, {len(keys)} case(s)")
    write_json(run_dir / CALIBRATION_FILE, record)
    log.info("T=%.4f: ECE %.4f -> %.4f, NLL %.4f -> %.4f", temperature, record["ece_before"], record["ece_after"],
             record["nll_before"], record["nll_after"])
    return record
