"""Per-case, per-class segmentation metrics, spacing-aware and dimension-agnostic.

Inputs
------
``pred`` and ``gt`` are integer label maps of the same shape ``(*spatial)`` (2D
``(H, W)`` or 3D ``(x, y, z)``; any number of axes); ``labels`` are the label
*values* to score (``{value: name}`` or a sequence of values; never 0 unless asked);
``spacing`` has one physical voxel size per axis, in the arrays' axis order (mm for
volumes; ``None`` = 1, i.e. pixels). An optional boolean ``mask`` of the same shape
(a field of view) sets everything outside it to background in both maps first.

Metrics (one value per class and case)
--------------------------------------
=================  ===========================================================  ==========
key                definition (P = predicted, G = true voxels of the class)      unit
=================  ===========================================================  ==========
``dice``           2|P∩G| / (|P| + |G|)                                          -
``iou``            |P∩G| / |P∪G|                                                 -
``precision``      |P∩G| / |P|                                                   -
``sensitivity``    |P∩G| / |G|  (recall)                                         -
``vol_diff``       (|P| - |G|) x voxel volume; signed, > 0 = over-segmentation   mm³ (mm²)
``vol_diff_rel``   (|P| - |G|) / |G|; signed                                     -
``vol_true``       |G| x voxel volume (the true volume; with ``vol_diff`` the      mm³ (mm²)
                   predicted one, for Bland-Altman plots)
``hd95``           symmetric 95th-percentile Hausdorff distance of the surfaces  mm
``nsd``            normalised surface Dice at ``tolerance`` (mm)                 -
=================  ===========================================================  ==========

Surfaces and distances are defined in :mod:`medseg.evaluation.surface`. With
``spacing=None`` lengths are in pixels/voxels and volumes in voxels.

Empty masks
-----------
=====================  =========================  =====  =====  ============  =============
case                   dice, iou, precision,      hd95   nsd    vol_diff_rel  vol_diff
                       sensitivity
=====================  =========================  =====  =====  ============  =============
both empty             1                          0      1      0             0
only truth empty       0                          NaN    0      NaN           +|P| x voxel
only prediction empty  0                          NaN    0      -1            -|G| x voxel
=====================  =========================  =====  =====  ============  =============

Both empty is a correct "nothing here" and scores as perfect; a structure that is
missed or hallucinated scores 0 on every overlap metric and on NSD. HD95 has no
value when one surface is missing (NaN, as in MONAI); aggregates leave NaN out and
count it (:mod:`medseg.evaluation.aggregate`), so read HD95 together with Dice.
Where both masks are non-empty every value equals MONAI's (``DiceMetric``,
``compute_hausdorff_distance(percentile=95)``, ``compute_surface_dice``; checked
in ``tests/test_metrics_surface.py``); MONAI gives NaN for both-empty classes.

Training-time validation (:mod:`medseg.evaluation.overlap`) keeps its own
convention: a class absent from both maps is NaN there and left out of the mean.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from medseg.evaluation.surface import check_spacing, hausdorff, surface_dice, surface_distances

#: the per-class scores, in column order
METRICS: tuple[str, ...] = ("dice", "iou", "precision", "sensitivity", "vol_diff", "vol_diff_rel", "vol_true", "hd95", "nsd")
#: the per-class voxel counts that pooled scores are made from (kept in rows, not in tables)
COUNTS: tuple[str, ...] = ("tp", "fp", "fn")
#: default NSD tolerance, in the units of the spacing (1 mm, or 1 pixel without spacing)
DEFAULT_TOLERANCE = 1.0


def units(spacing_unit: str = "mm", ndim: int = 3) -> dict[str, str]:
    """The unit of each metric for a length unit (``"mm"`` or ``"px"``) and dimension."""
    vol = f"{spacing_unit}{'³' if ndim == 3 else '²' if ndim == 2 else f'^{ndim}'}"
    return {"dice": "", "iou": "", "precision": "", "sensitivity": "", "vol_diff": vol, "vol_diff_rel": "", "vol_true": vol,
            "hd95": spacing_unit, "nsd": ""}


def normalize_labels(labels: Mapping[int, str] | Iterable[int]) -> dict[int, str]:
    """``{value: name}`` from a mapping or a sequence of values (named ``class_<value>``)."""
    if isinstance(labels, Mapping):
        out = {int(v): str(n) for v, n in labels.items()}
    else:
        out = {int(v): f"class_{int(v)}" for v in labels}
    if not out:
        raise ValueError("no labels to evaluate")
    if len(set(out.values())) != len(out):
        raise ValueError(f"label names must be unique, got {sorted(out.values())}")
    return out


def class_metrics(
    pred: np.ndarray,
    gt: np.ndarray,
    spacing: Sequence[float] | None = None,
    tolerance: float = DEFAULT_TOLERANCE,
) -> dict[str, float | int]:
    """All :data:`METRICS` (and :data:`COUNTS`) of one binary prediction against one binary truth."""
    pred, gt = np.asarray(pred, dtype=bool), np.asarray(gt, dtype=bool)
    if pred.shape != gt.shape:
        raise ValueError(f"pred and gt differ in shape: {pred.shape} vs {gt.shape}")
    sp = check_spacing(spacing, pred.ndim)
    voxel = float(np.prod(sp))
    n_p, n_g = int(np.count_nonzero(pred)), int(np.count_nonzero(gt))
    tp = int(np.count_nonzero(pred & gt)) if n_p and n_g else 0
    fp, fn = n_p - tp, n_g - tp
    out: dict[str, float | int] = {"vol_diff": (n_p - n_g) * voxel, "vol_true": n_g * voxel, "tp": tp, "fp": fp, "fn": fn}
    if n_p == 0 and n_g == 0:
        out.update(dice=1.0, iou=1.0, precision=1.0, sensitivity=1.0, vol_diff_rel=0.0, hd95=0.0, nsd=1.0)
    elif n_p == 0 or n_g == 0:
        out.update(dice=0.0, iou=0.0, precision=0.0, sensitivity=0.0, hd95=math.nan, nsd=0.0,
                   vol_diff_rel=-1.0 if n_p == 0 else math.nan)
    else:
        d_pg, d_gp = surface_distances(pred, gt, sp)
        out.update(dice=2 * tp / (n_p + n_g), iou=tp / (n_p + n_g - tp), precision=tp / n_p, sensitivity=tp / n_g,
                   vol_diff_rel=(n_p - n_g) / n_g, hd95=hausdorff(d_pg, d_gp, 95.0), nsd=surface_dice(d_pg, d_gp, tolerance))
    return {k: out[k] for k in (*METRICS, *COUNTS)}


def case_metrics(
    pred: np.ndarray,
    gt: np.ndarray,
    labels: Mapping[int, str] | Iterable[int],
    spacing: Sequence[float] | None = None,
    tolerance: float = DEFAULT_TOLERANCE,
    mask: np.ndarray | None = None,
) -> list[dict[str, Any]]:
    """One row per label: ``{"label": value, "class": name, <METRICS>, <COUNTS>}`` (see the module docs).

    Each class is scored on the bounding box of its own predicted and true voxels,
    so the cost grows with the structures, not with the array.
    """
    pred, gt = np.asarray(pred), np.asarray(gt)
    if pred.shape != gt.shape:
        raise ValueError(f"pred and gt differ in shape: {pred.shape} vs {gt.shape}")
    if mask is not None:
        mask = np.asarray(mask, dtype=bool)
        if mask.shape != pred.shape:
            raise ValueError(f"mask shape {mask.shape} differs from the label maps' {pred.shape}")
        pred, gt = np.where(mask, pred, 0), np.where(mask, gt, 0)
    named = normalize_labels(labels)
    sp = check_spacing(spacing, pred.ndim)
    rows = []
    for value, name in named.items():
        rows.append({"label": value, "class": name, **class_metrics(pred == value, gt == value, sp, tolerance)})
    return rows


def wide_row(rows: Sequence[Mapping[str, Any]], metrics: Sequence[str] = METRICS) -> dict[str, Any]:
    """Per-class rows of one case as one flat row: ``<metric>_<class>`` columns, classes in order."""
    out: dict[str, Any] = {}
    for metric in metrics:
        for r in rows:
            out[f"{metric}_{r['class']}"] = r[metric]
    return out


def mean_over_classes(rows: Sequence[Mapping[str, Any]], metric: str = "dice") -> float:
    """Mean of one metric over the classes of a case, NaN left out (NaN when all are)."""
    vals = [float(r[metric]) for r in rows if not math.isnan(float(r[metric]))]
    return sum(vals) / len(vals) if vals else float("nan")


class SegmentationMetric:
    """Stateful per-case metrics, accumulated case by case (like MONAI's ``CumulativeIterationMetric``).

    ``update(pred, gt, case=..., spacing=...)`` scores one case (shapes as in the module
    docs) and returns its per-class rows; ``rows`` holds all of them (each with its
    ``case``); ``aggregate()`` returns per-class statistics
    (:func:`medseg.evaluation.aggregate.summarize_classes`); ``reset()`` clears.
    """

    def __init__(self, labels: Mapping[int, str] | Iterable[int], tolerance: float = DEFAULT_TOLERANCE,
                 spacing: Sequence[float] | None = None):
        self.labels = normalize_labels(labels)
        self.tolerance = float(tolerance)
        self.spacing = spacing
        self.reset()

    def reset(self) -> None:
        self.rows: list[dict[str, Any]] = []
        self._cases = 0

    def update(self, pred, gt, *, case: str | None = None, spacing: Sequence[float] | None = None,
               mask=None) -> list[dict[str, Any]]:
        name = case if case is not None else f"case_{self._cases}"
        self._cases += 1
        rows = case_metrics(pred, gt, self.labels, spacing if spacing is not None else self.spacing, self.tolerance, mask)
        rows = [{"case": name, **r} for r in rows]
        self.rows.extend(rows)
        return rows

    def aggregate(self, **bootstrap) -> dict[str, dict[str, Any]]:
        """``{class: {metric: stats, "dice_pooled": .., "iou_pooled": ..}}``; ``bootstrap`` goes to the CI."""
        from medseg.evaluation.aggregate import summarize_classes

        return summarize_classes(self.rows, list(self.labels.values()), **bootstrap)
