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
from pathlib import Path

import numpy as np

from medseg.evaluation.calibration import DEFAULT_BINS, ReliabilityAccumulator, fit_temperature, nll, plot_reliability, sample_voxels
from medseg.evaluation.cases import LabelledCase, read_case, run_cases
from medseg.inference.predictor import Predictor
from medseg.io.atomic import write_json
from medseg.runfolder import CALIBRATION_FILE, read_run_info, run_dims

log = logging.getLogger(__name__)

RELIABILITY_PNG = "calibration_reliability.png"


def labelled_cases(run_dir: str | Path, subset: str = "val", keys: set[str] | None = None) -> Iterator[LabelledCase]:
    """Read the cases of ``subset`` (only those in ``keys`` when given) one at a time, as the run was trained (2D or 3D)."""
    from medseg.data.labels import LabelScheme

    run_dir = Path(run_dir)
    info = read_run_info(run_dir)
    entries, _ = run_cases(run_dir, (subset,))
    scheme, dims = LabelScheme.from_json(info["labels"]), run_dims(info)
    channels = (info.get("dataset") or {}).get("num_channels") if dims == 3 else None
    for e in entries:
        if keys is None or e.key in keys:
            yield read_case(e, scheme, dims, channels)


def load_predictor(run_dir: str | Path, *, mirror: bool = False, calibration: bool = False, device: str = "auto") -> Predictor:
    """The run's predictor (by default uncalibrated, to fit or compare against)."""
    return Predictor.from_run(run_dir, mirror=mirror, device=device, calibration=calibration)


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
    on_case: Callable[[str, int, int], None] | None = None,
) -> dict:
    """Fit the temperature on the validation split; write ``calibration.json`` and the diagram; return the record."""
    run_dir = Path(run_dir)
    predictor = load_predictor(run_dir, mirror=mirror, device=device)
    rng = np.random.default_rng(seed)
    logits, labels, keys = [], [], []
    for case in labelled_cases(run_dir, "val"):
        probs = predictor.predict(case.image, probabilities=True).probabilities
        lg, y = sample_voxels(probs, case.truth, case.region, max_voxels, rng)
        logits.append(lg)
        labels.append(y)
        keys.append(case.key)
        if on_case:
            on_case(case.key, len(keys), 0)  # the number of cases is not known ahead
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
