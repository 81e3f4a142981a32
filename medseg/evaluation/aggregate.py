"""Statistics across cases: mean, std, median and a bootstrap 95% confidence interval of the mean.

Every statistic leaves NaN values out (a metric without a value for a case, e.g.
HD95 when one mask is empty; see :mod:`medseg.evaluation.metrics`) and says how
many it left out:

``{"mean", "std", "median", "ci95": [low, high], "n", "n_nan"}``

- ``std`` is the population standard deviation (``ddof=0``, NumPy's and nnU-Net's).
- ``ci95`` is the seeded percentile bootstrap interval of the mean: ``samples``
  resamples of the ``n`` values with replacement, the 2.5th and 97.5th percentiles
  of their means. With one value it is ``[v, v]``; with none, NaN.
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


def describe(values: Sequence[float] | np.ndarray, **bootstrap) -> dict[str, Any]:
    """The statistics of the module docs for one metric of one class across cases."""
    v = np.asarray([float(x) for x in values], dtype=np.float64)
    keep = v[~np.isnan(v)]
    out: dict[str, Any] = {"n": int(keep.size), "n_nan": int(v.size - keep.size)}
    if not keep.size:
        return {"mean": math.nan, "std": math.nan, "median": math.nan, "ci95": [math.nan, math.nan], **out}
    lo, hi = bootstrap_ci(keep, **bootstrap)
    return {"mean": float(keep.mean()), "std": float(keep.std()), "median": float(np.median(keep)),
            "ci95": [lo, hi], **out}


def pooled_scores(tp: int, fp: int, fn: int) -> dict[str, float]:
    """Dice and IoU of all cases' voxels together (NaN when the class is in no prediction and no truth)."""
    denom = 2 * tp + fp + fn
    return {"dice_pooled": 2 * tp / denom if denom else math.nan, "iou_pooled": tp / (tp + fp + fn) if denom else math.nan}


def summarize_classes(rows: Sequence[Mapping[str, Any]], classes: Sequence[str] | None = None,
                      metrics: Sequence[str] = METRICS, **bootstrap) -> dict[str, dict[str, Any]]:
    """Per-class statistics of long-format rows (one per case and class, as from
    :func:`~medseg.evaluation.metrics.case_metrics`): ``{class: {metric: describe(..),
    "label": value, "dice_pooled": .., "iou_pooled": ..}}``."""
    if classes is None:
        classes = list(dict.fromkeys(r["class"] for r in rows))
    out: dict[str, dict[str, Any]] = {}
    for name in classes:
        mine = [r for r in rows if r["class"] == name]
        entry: dict[str, Any] = {"label": mine[0]["label"]} if mine else {}
        entry.update({m: describe([r[m] for r in mine], **bootstrap) for m in metrics})
        if all(all(c in r for c in COUNTS) for r in mine):
            entry.update(pooled_scores(*(sum(int(r[c]) for r in mine) for c in COUNTS)))
        out[name] = entry
    return out

