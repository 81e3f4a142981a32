"""Calibration of class probabilities: expected calibration error, reliability diagrams, temperature scaling.

Conventions (2D and 3D alike):

- ``probs``: class probabilities ``(K, *S)``, class axis first, summing to 1 over it;
  ``labels``: class ids ``(*S)`` in ``0..K-1``; ``region``: optional bool ``(*S)``
  (e.g. a field of view), only voxels inside it count.
- **Top-label ECE**: voxels are binned by their confidence (the largest class
  probability) into ``bins`` equal-width bins over [0, 1];
  ``ECE = sum_b n_b / N * |accuracy_b - confidence_b|`` where accuracy is the
  fraction of voxels whose argmax class is the true class. 0 is perfectly
  calibrated; all voxels confident (1.0) and wrong gives 1.
- **Classwise ECE**: the same for each class ``c`` with ``p_c`` as the
  confidence and ``labels == c`` as the event, averaged over the foreground
  classes ``1..K-1`` (the top-label ECE of a 3D scan is dominated by easy
  background voxels; this one is not).
- **Temperature scaling** (Guo et al. 2017): calibrated probabilities are
  ``softmax(log p / T)``. For one network output ``p = softmax(z)`` this is exactly
  ``softmax(z / T)``, since ``log p`` differs from ``z`` by a per-voxel constant; for
  a test-time-augmentation mean or resampled probabilities it scales their
  log-probabilities. ``T > 1`` softens over-confident probabilities. It never changes
  the argmax, so labels and Dice stay the same. ``T`` is fitted by minimising the
  negative log-likelihood (NLL) of the true class over a random subsample of voxels.

The fitted temperature of a run lives in ``RUN/calibration.json`` (see
:mod:`medseg.evaluation.calibrate_run`), which the predictors apply.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable
from pathlib import Path

import numpy as np
from scipy.optimize import minimize_scalar
from scipy.special import log_softmax

from medseg.inference.temperature import log_probabilities
from medseg.io.atomic import atomic_path

log = logging.getLogger(__name__)

RELIABILITY_PNG = "reliability.png"  # in an evaluation folder
DEFAULT_BINS = 15
#: the range searched for the temperature
T_BOUNDS = (0.05, 20.0)
_CHUNK = 1 << 20  # voxels per step, bounds the temporaries of :meth:`ReliabilityAccumulator.update`


def _flatten(probs: np.ndarray, labels: np.ndarray, region: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    """``(K, *S)``, ``(*S)`` → ``(K, N)``, ``(N,)`` of the voxels inside ``region``."""
    probs, labels = np.asarray(probs), np.asarray(labels)
    if probs.shape[1:] != labels.shape:
        raise ValueError(f"probabilities {probs.shape} do not match labels {labels.shape}: expected (K, *S) and (*S)")
    p, y = probs.reshape(probs.shape[0], -1), labels.reshape(-1)
    if region is not None:
        m = np.asarray(region, dtype=bool).reshape(-1)
        p, y = p[:, m], y[m]
    return p, y


def _bin_of(conf: np.ndarray, bins: int) -> np.ndarray:
    """Equal-width bin ``0..bins-1`` of values in [0, 1] (1.0 falls in the last bin)."""
    return np.minimum((conf * bins).astype(np.int64), bins - 1).clip(0)


class ReliabilityAccumulator:
    """Streaming reliability statistics: update per case, memory independent of the number of voxels.

    Holds per bin the voxel count, the summed confidence and the summed hits, for
    the top-label confidence and for each class's probability (``(K, bins)``).
    """

    def __init__(self, num_classes: int, bins: int = DEFAULT_BINS):
        if num_classes < 2 or bins < 1:
            raise ValueError("need at least 2 classes and 1 bin")
        self.num_classes, self.bins = num_classes, bins
        self.count = np.zeros(bins, np.int64)
        self.confidence = np.zeros(bins, np.float64)
        self.hits = np.zeros(bins, np.float64)
        self.class_count = np.zeros((num_classes, bins), np.int64)
        self.class_prob = np.zeros((num_classes, bins), np.float64)
        self.class_hits = np.zeros((num_classes, bins), np.float64)

    def update(self, probs: np.ndarray, labels: np.ndarray, region: np.ndarray | None = None) -> None:
        """Add one case: ``probs (K, *S)``, ``labels (*S)`` class ids, optional ``region (*S)``."""
        p_all, y_all = _flatten(probs, labels, region)
        if p_all.shape[0] != self.num_classes:
            raise ValueError(f"expected {self.num_classes} classes, got probabilities with {p_all.shape[0]}")
        b = self.bins
        for start in range(0, y_all.size, _CHUNK):
            p = p_all[:, start:start + _CHUNK].astype(np.float64)
            y = y_all[start:start + _CHUNK]
            conf = p.max(0)
            idx = _bin_of(conf, b)
            self.count += np.bincount(idx, minlength=b)
            self.confidence += np.bincount(idx, weights=conf, minlength=b)
            self.hits += np.bincount(idx, weights=(p.argmax(0) == y), minlength=b)
            for c in range(self.num_classes):
                ic = _bin_of(p[c], b)
                self.class_count[c] += np.bincount(ic, minlength=b)
                self.class_prob[c] += np.bincount(ic, weights=p[c], minlength=b)
                self.class_hits[c] += np.bincount(ic, weights=(y == c), minlength=b)

    @property
    def voxels(self) -> int:
        return int(self.count.sum())

    def ece(self) -> float:
        """Top-label expected calibration error (NaN before any voxel)."""
        n = self.count.sum()
        return float(np.abs(self.hits - self.confidence).sum() / n) if n else float("nan")

    def class_ece(self) -> np.ndarray:
        """``(K,)`` ECE of each class's probability against its indicator."""
        n = self.class_count.sum(1)
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.abs(self.class_hits - self.class_prob).sum(1) / n

    def classwise_ece(self) -> float:
        """Mean :meth:`class_ece` over the foreground classes ``1..K-1``."""
        return float(np.mean(self.class_ece()[1:])) if self.voxels else float("nan")

    def bin_table(self) -> list[dict]:
        """Per bin: edges, voxel count, mean confidence and accuracy (None where empty)."""
        edges = np.linspace(0.0, 1.0, self.bins + 1)
        rows = []
        for i in range(self.bins):
            n = int(self.count[i])
            rows.append({"lower": round(float(edges[i]), 6), "upper": round(float(edges[i + 1]), 6), "count": n,
                         "confidence": float(self.confidence[i] / n) if n else None,
                         "accuracy": float(self.hits[i] / n) if n else None})
        return rows

    def summary(self, names: list[str] | None = None) -> dict:
        """``{"ece", "classwise_ece", "class_ece": {name: ece}, "voxels", "bins": [...]}`` (JSON-ready)."""
        names = names or [f"class_{c}" for c in range(self.num_classes)]
        per_class = self.class_ece()
        return {"ece": _json_float(self.ece()), "classwise_ece": _json_float(self.classwise_ece()),
                "class_ece": {names[c]: _json_float(per_class[c]) for c in range(1, self.num_classes)},
                "voxels": self.voxels, "num_bins": self.bins, "bins": self.bin_table()}


def _json_float(x: float) -> float | None:
    return None if x is None or not math.isfinite(x) else float(x)


def calibration_summary(cases: Iterable[tuple], num_classes: int, bins: int = DEFAULT_BINS,
                        names: list[str] | None = None) -> tuple[dict, ReliabilityAccumulator]:
    """Reliability over ``cases``: ``(probs, labels)`` or ``(probs, labels, region)`` tuples, one per case.

    Returns :meth:`ReliabilityAccumulator.summary` and the accumulator (for
    :func:`plot_reliability`). Streams: keeps no case after its update.
    """
    acc = ReliabilityAccumulator(num_classes, bins)
    for item in cases:
        acc.update(*item)
    return acc.summary(names), acc


def evaluation_calibration(acc: ReliabilityAccumulator, out_dir: str | Path, names: list[str] | None = None,
                           temperature: float | None = None) -> dict:
    """The ``"calibration"`` entry of an evaluation's ``summary.json``; also writes ``out_dir/reliability.png``.

    ``temperature``: the one the predictor applied (``None``: uncalibrated, recorded as 1).
    """
    summary = {"temperature": float(temperature or 1.0), **acc.summary(names), "reliability_plot": RELIABILITY_PNG}
    if acc.voxels:
        label = "calibrated" if temperature else "uncalibrated"
        plot_reliability(Path(out_dir) / RELIABILITY_PNG, {f"{label} (T={temperature or 1.0:.3f})": acc})
    return summary


def expected_calibration_error(probs: np.ndarray, labels: np.ndarray, bins: int = DEFAULT_BINS,
                               region: np.ndarray | None = None) -> float:
    """Top-label ECE of one array of probabilities ``(K, *S)`` against ``labels (*S)``."""
    acc = ReliabilityAccumulator(np.asarray(probs).shape[0], bins)
    acc.update(probs, labels, region)
    return acc.ece()


# --------------------------------------------------------------------------- temperature scaling


def sample_voxels(probs: np.ndarray, labels: np.ndarray, region: np.ndarray | None = None,
                  max_voxels: int | None = 50_000, rng: np.random.Generator | None = None) -> tuple[np.ndarray, np.ndarray]:
    """A uniform random subsample (without replacement) of a case's voxels for :func:`fit_temperature`.

    Returns the log-probabilities ``(n, K)`` float32 and class ids ``(n,)``, ``n <= max_voxels``
    (``None``: all voxels).
    """
    p, y = _flatten(probs, labels, region)
    if max_voxels is not None and y.size > max_voxels:
        rng = rng or np.random.default_rng(0)
        keep = np.sort(rng.choice(y.size, max_voxels, replace=False))
        p, y = p[:, keep], y[keep]
    return np.ascontiguousarray(log_probabilities(p).T), np.asarray(y, dtype=np.int64)


def nll(logits: np.ndarray, labels: np.ndarray, temperature: float = 1.0) -> float:
    """Mean negative log-likelihood of ``labels (N,)`` under ``softmax(logits / T)``, ``logits (N, K)``."""
    lp = log_softmax(np.asarray(logits, dtype=np.float64) / temperature, axis=1)
    return float(-np.take_along_axis(lp, np.asarray(labels)[:, None], axis=1).mean())


def fit_temperature(logits: np.ndarray, labels: np.ndarray, bounds: tuple[float, float] = T_BOUNDS) -> float:
    """The ``T`` in ``bounds`` minimising :func:`nll` (a bounded 1-D search on ``log T``).

    ``logits (N, K)`` (or log-probabilities), ``labels (N,)`` class ids.
    """
    logits, labels = np.asarray(logits, dtype=np.float32), np.asarray(labels, dtype=np.int64)
    if logits.ndim != 2 or labels.shape != logits.shape[:1] or not labels.size:
        raise ValueError(f"expected logits (N, K) and labels (N,), got {logits.shape} and {labels.shape}")
    res = minimize_scalar(lambda t: nll(logits, labels, math.exp(t)), bounds=(math.log(bounds[0]), math.log(bounds[1])),
                          method="bounded", options={"xatol": 1e-4})
    temperature = math.exp(float(res.x))
    if min(abs(math.log(temperature / b)) for b in bounds) < 1e-3:
        log.warning("fitted temperature %.3g lies at the edge of the searched range %s", temperature, bounds)
    return temperature


# --------------------------------------------------------------------------- plot


def plot_reliability(path: str | Path, panels: dict[str, ReliabilityAccumulator], title: str = "") -> Path:
    """Reliability diagram(s) as a PNG: one panel per accumulator (e.g. ``{"before": a, "after": b}``).

    Each panel: accuracy per confidence bin (bars) against the diagonal of perfect
    calibration, the gap shaded, ECE in the title, and the voxel share per bin
    (log scale) below.
    """
    from matplotlib.figure import Figure
    from matplotlib.ticker import NullFormatter

    fig = Figure(figsize=(4.2 * len(panels), 5.2))
    grid = fig.add_gridspec(2, len(panels), height_ratios=(3, 1), hspace=0.08)
    for i, (name, acc) in enumerate(panels.items()):
        top, bottom = fig.add_subplot(grid[0, i]), fig.add_subplot(grid[1, i])
        width = 1.0 / acc.bins
        centres = (np.arange(acc.bins) + 0.5) * width
        n = np.maximum(acc.count, 1)
        have = acc.count > 0
        accuracy, confidence = acc.hits / n, acc.confidence / n
        top.bar(centres[have], accuracy[have], width=width, edgecolor="black", color="tab:blue", label="accuracy")
        top.bar(centres[have], np.abs(confidence - accuracy)[have], bottom=np.minimum(confidence, accuracy)[have],
                width=width, color="tab:red", alpha=0.35, hatch="//", edgecolor="tab:red", label="gap to confidence")
        top.plot([0, 1], [0, 1], "k--", lw=1, label="perfect")
        top.set(xlim=(0, 1), ylim=(0, 1), title=f"{name}: ECE {acc.ece():.4f}", ylabel="accuracy" if i == 0 else None)
        top.tick_params(labelbottom=False)
        top.legend(loc="upper left", fontsize=8)
        share = acc.count / max(acc.voxels, 1)
        bottom.bar(centres[have], share[have], width=width, color="gray", edgecolor="black")
        bottom.set(xlim=(0, 1), yscale="log", xlabel="confidence (max probability)", ylabel="voxel share" if i == 0 else None)
        bottom.yaxis.set_minor_formatter(NullFormatter())
    if title:
        fig.suptitle(title)
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100, facecolor="white", bbox_inches="tight")
    return path
