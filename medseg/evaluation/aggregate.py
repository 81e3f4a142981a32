"""Statistics across cases: mean, std, median and a bootstrap 95% confidence interval of the mean.

Every statistic leaves NaN values out (a metric without a value for a case, e.g.
HD95 when one mask is empty; see :mod:`medseg.evaluation.metrics`) and says how
many it left out:

``{"mean", "std", "median", "ci95": [low, high], "ci_unit", "n", "n_nan"}`` (and ``ci_note`` when there is no
interval)

- ``std`` is the population standard deviation (``ddof=0``, NumPy's and nnU-Net's).
- ``ci95`` is the seeded percentile bootstrap interval of the mean: ``samples``
  resamples with replacement, the 2.5th and 97.5th percentiles of their means.
  When the cases come in patient groups (several slices or scans of one patient),
  the bootstrap resamples patients, each with all its cases (``ci_unit`` ``patient``):
  resampling the cases of a few patients would give an interval far too narrow.
  Otherwise it resamples cases (``ci_unit`` ``case``).
- Below :data:`MIN_CI_N` units (patients or cases) there is no interval: ``ci95`` is
  ``[NaN, NaN]`` and ``ci_note`` says why. A bootstrap of two or three values is not
  a confidence interval.
- ``n`` counts the values used, ``n_nan`` those left out. Infinite values are kept
  (they make the mean infinite), but no metric of this package produces them.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from scipy import stats

from medseg.evaluation.metrics import COUNTS, METRICS

BOOTSTRAP_SAMPLES = 2000
BOOTSTRAP_SEED = 0
CONFIDENCE = 0.95
#: the fewest cases (or patients) that get a confidence interval
MIN_CI_N = 5


def cluster_bootstrap_ci(values: np.ndarray, groups: Sequence[Any], *, samples: int = BOOTSTRAP_SAMPLES,
                         seed: int = BOOTSTRAP_SEED, confidence: float = CONFIDENCE) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean of ``values`` resampling whole groups (patients): each resample
    draws as many groups as there are, with replacement, and takes the mean of all their values."""
    v = np.asarray(values, dtype=np.float64).ravel()
    keys = {g: i for i, g in enumerate(dict.fromkeys(groups))}
    index = np.asarray([keys[g] for g in groups])
    sums, counts = np.bincount(index, weights=v), np.bincount(index).astype(np.float64)
    rng = np.random.default_rng(seed)
    means = np.empty(samples)
    step = max(1, 2_000_000 // len(keys))
    for start in range(0, samples, step):
        drawn = rng.integers(0, len(keys), (min(step, samples - start), len(keys)))
        means[start:start + len(drawn)] = sums[drawn].sum(1) / counts[drawn].sum(1)
    tail = (1 - confidence) / 2 * 100
    lo, hi = np.percentile(means, [tail, 100 - tail])
    return (float(lo), float(hi))


def bootstrap_ci(values: np.ndarray, *, samples: int = BOOTSTRAP_SAMPLES, seed: int = BOOTSTRAP_SEED,
                 confidence: float = CONFIDENCE) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean of ``values`` (1-D, no NaN): :func:`scipy.stats.bootstrap`,
    seeded, resampling in batches of bounded memory."""
    v = np.asarray(values, dtype=np.float64).ravel()
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must lie in (0, 1), got {confidence}")
    if v.size == 0:
        return (math.nan, math.nan)
    if v.size == 1 or np.all(v == v[0]):
        return (float(v[0]), float(v[0]))
    res = stats.bootstrap((v,), np.mean, n_resamples=samples, method="percentile", confidence_level=confidence,
                          random_state=np.random.default_rng(seed), batch=max(1, 2_000_000 // v.size))
    return (float(res.confidence_interval.low), float(res.confidence_interval.high))


def describe(values: Sequence[float] | np.ndarray, groups: Sequence[Any] | None = None, **bootstrap) -> dict[str, Any]:
    """The statistics of the module docs for one metric of one class across cases; ``groups`` gives each value's
    patient (the bootstrap then resamples patients when some patient has several cases)."""
    v = np.asarray([float(x) for x in values], dtype=np.float64)
    valid = ~np.isnan(v)
    keep = v[valid]
    kept_groups = [g for g, ok in zip(groups, valid) if ok] if groups is not None else None
    grouped = kept_groups is not None and len(set(kept_groups)) < len(kept_groups)
    units = len(set(kept_groups)) if grouped else int(keep.size)
    unit = "patient" if grouped else "case"
    out: dict[str, Any] = {"n": int(keep.size), "n_nan": int(v.size - keep.size), "ci_unit": unit}
    if not keep.size:
        return {"mean": math.nan, "std": math.nan, "median": math.nan, "ci95": [math.nan, math.nan], **out}
    if units < MIN_CI_N:
        lo, hi = math.nan, math.nan
        out["ci_note"] = f"no interval: {units} {unit}{'s' if units != 1 else ''}, fewer than {MIN_CI_N}"
    elif grouped:
        lo, hi = cluster_bootstrap_ci(keep, kept_groups, **bootstrap)
    else:
        lo, hi = bootstrap_ci(keep, **bootstrap)
    return {"mean": float(keep.mean()), "std": float(keep.std()), "median": float(np.median(keep)),
            "ci95": [lo, hi], **out}


def pooled_scores(tp: int, fp: int, fn: int) -> dict[str, float]:
    """Dice and IoU of all cases' voxels together (NaN when the class is in no prediction and no truth)."""
    denom = 2 * tp + fp + fn
    return {"dice_pooled": 2 * tp / denom if denom else math.nan, "iou_pooled": tp / (tp + fp + fn) if denom else math.nan}


def summarize_classes(rows: Sequence[Mapping[str, Any]], classes: Sequence[str] | None = None,
                      metrics: Sequence[str] = METRICS, groups: Mapping[Any, Any] | None = None,
                      **bootstrap) -> dict[str, dict[str, Any]]:
    """Per-class statistics of long-format rows (one per case and class, as from
    :func:`~medseg.evaluation.metrics.case_metrics`): ``{class: {metric: describe(..),
    "label": value, "dice_pooled": .., "iou_pooled": ..}}``; ``groups`` maps a row's ``case`` to its patient."""
    if classes is None:
        classes = list(dict.fromkeys(r["class"] for r in rows))
    out: dict[str, dict[str, Any]] = {}
    for name in classes:
        mine = [r for r in rows if r["class"] == name]
        entry: dict[str, Any] = {"label": mine[0]["label"]} if mine else {}
        patients = [groups.get(r["case"], r["case"]) for r in mine] if groups else None
        entry.update({m: describe([r[m] for r in mine], patients, **bootstrap) for m in metrics})
        if all(all(c in r for c in COUNTS) for r in mine):
            entry.update(pooled_scores(*(sum(int(r[c]) for r in mine) for c in COUNTS)))
        out[name] = entry
    return out

