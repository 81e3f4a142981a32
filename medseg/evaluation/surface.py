"""Mask surfaces and the distances between them, in physical units (any number of dimensions).

Definitions (those of ``monai.metrics`` with its defaults, checked against it in
``tests/test_metrics_surface.py``):

- The **surface** (edge) of a binary mask is the set of its voxels with at least one
  face neighbour (connectivity 1: ``2 * ndim`` neighbours) outside the mask; voxels
  beyond the array border count as outside, so a mask touching the border has an
  edge there. This is ``mask ^ scipy.ndimage.binary_erosion(mask)``.
- The **directed surface distances** from A to B are, for every edge voxel of A, the
  Euclidean distance (voxel index differences scaled by ``spacing``) to the nearest
  edge voxel of B.

Shapes: ``pred`` and ``gt`` are boolean arrays of the same shape ``(*spatial)``,
1 to N dimensions; ``spacing`` has one positive value per axis, in the same axis
order (``None``: 1 per axis, i.e. distances in voxels).

Speed: edges are found on the bounding box of ``pred | gt`` only (every edge voxel
lies inside it), by shifted comparisons rather than a morphological erosion; edge
voxels shared by both surfaces are 0 apart and are not looked up; the others are
looked up exactly in a KD-tree of the other surface's voxel positions (scaled by
``spacing``), as MONAI does on CPU. On Hippocampus-sized volumes and DRIVE-sized
images this is several times faster than MONAI's ``compute_hausdorff_distance`` plus
``compute_surface_dice`` (which extract the edges and distances twice, once each) for
the same numbers, which is why it is used rather than wrapping MONAI.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy.spatial import cKDTree


def bounding_box(mask: np.ndarray) -> tuple[slice, ...] | None:
    """The smallest box holding every ``True`` voxel of ``mask`` (``None`` when there is none)."""
    mask = np.asarray(mask, dtype=bool)
    if mask.ndim == 0:
        raise ValueError("a mask needs at least one axis")
    box = []
    for ax in range(mask.ndim):
        other = tuple(a for a in range(mask.ndim) if a != ax)
        hit = np.flatnonzero(mask.any(axis=other) if other else mask)
        if not hit.size:
            return None
        box.append(slice(int(hit[0]), int(hit[-1]) + 1))
    return tuple(box)


def mask_edges(mask: np.ndarray) -> np.ndarray:
    """Boolean edge voxels of a boolean mask (face connectivity; outside the array counts as background)."""
    mask = np.asarray(mask, dtype=bool)
    padded = np.pad(mask, 1)
    interior = mask.copy()
    n = mask.ndim
    for ax in range(n):
        lo = tuple(slice(0, -2) if a == ax else slice(1, -1) for a in range(n))
        hi = tuple(slice(2, None) if a == ax else slice(1, -1) for a in range(n))
        interior &= padded[lo]
        interior &= padded[hi]
    return mask & ~interior


def check_spacing(spacing: Sequence[float] | None, ndim: int) -> tuple[float, ...]:
    """``spacing`` as a tuple of ``ndim`` positive floats (``None``: all 1)."""
    if spacing is None:
        return (1.0,) * ndim
    sp = tuple(float(s) for s in np.atleast_1d(np.asarray(spacing, dtype=np.float64)))
    if len(sp) == 1 and ndim > 1:
        sp = sp * ndim
    if len(sp) != ndim:
        raise ValueError(f"spacing {sp} has {len(sp)} values for {ndim}-D masks")
    if not all(np.isfinite(s) and s > 0 for s in sp):
        raise ValueError(f"spacing must be positive and finite, got {sp}")
    return sp


def surface_distances(
    pred: np.ndarray, gt: np.ndarray, spacing: Sequence[float] | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Directed surface distances ``(pred → gt, gt → pred)``, float64 1-D arrays in the units of ``spacing``.

    The first array has one value per edge voxel of ``pred``, the second one per edge
    voxel of ``gt``, in no particular order (shared edge voxels, at 0, come first). When one mask is empty there is no surface to measure to: both
    arrays are then empty (the caller decides what that means, see
    :mod:`medseg.evaluation.metrics`).
    """
    pred, gt = np.asarray(pred, dtype=bool), np.asarray(gt, dtype=bool)
    if pred.shape != gt.shape:
        raise ValueError(f"pred and gt differ in shape: {pred.shape} vs {gt.shape}")
    sp = check_spacing(spacing, pred.ndim)
    empty = np.zeros(0, dtype=np.float64)
    box = bounding_box(pred | gt)
    if box is None or not pred.any() or not gt.any():
        return empty, empty
    # Cropping to the union's box keeps every edge: outside the box both masks are 0,
    # and mask_edges treats the crop's border as outside, as the full array's voxels there are.
    ep, eg = mask_edges(pred[box]), mask_edges(gt[box])
    shared = ep & eg  # edge voxels of both surfaces are 0 apart; only the others are looked up
    scale = np.asarray(sp, dtype=np.float64)
    zeros = np.zeros(int(np.count_nonzero(shared)), dtype=np.float64)
    return (np.concatenate([zeros, _nearest(eg, ep & ~shared, scale)]),
            np.concatenate([zeros, _nearest(ep, eg & ~shared, scale)]))


def _nearest(targets: np.ndarray, queries: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """Distance from every ``True`` voxel of ``queries`` to the nearest ``True`` voxel of ``targets`` (exact, KD-tree)."""
    q = np.argwhere(queries)
    if not q.size:
        return np.zeros(0, dtype=np.float64)
    tree = cKDTree(np.argwhere(targets) * scale, leafsize=32, balanced_tree=False)
    return tree.query(q * scale, k=1)[0]


def hausdorff(d_pred_gt: np.ndarray, d_gt_pred: np.ndarray, percentile: float = 95.0) -> float:
    """Symmetric percentile Hausdorff distance: the larger of the two directed ``percentile``-th percentiles.

    Percentiles interpolate linearly (NumPy's and ``torch.quantile``'s default), as
    MONAI's ``compute_hausdorff_distance(percentile=95)``. NaN when either array is empty.
    """
    if not 0.0 <= percentile <= 100.0:
        raise ValueError(f"percentile must lie in 0..100, got {percentile}")
    if d_pred_gt.size == 0 or d_gt_pred.size == 0:
        return float("nan")
    return float(max(np.percentile(d_pred_gt, percentile), np.percentile(d_gt_pred, percentile)))


def surface_dice(d_pred_gt: np.ndarray, d_gt_pred: np.ndarray, tolerance: float) -> float:
    """Normalised surface Dice: the fraction of both surfaces' edge voxels within ``tolerance`` of the other surface.

    ``(#{d_pred_gt <= tol} + #{d_gt_pred <= tol}) / (#edge voxels of pred + #edge voxels of gt)``,
    i.e. MONAI's ``compute_surface_dice`` with ``use_subvoxels=False`` (surfaces
    counted in edge voxels). NaN when both arrays are empty.
    """
    if not (np.isfinite(tolerance) and tolerance >= 0):
        raise ValueError(f"tolerance must be finite and >= 0, got {tolerance}")
    total = d_pred_gt.size + d_gt_pred.size
    if total == 0:
        return float("nan")
    return float((np.count_nonzero(d_pred_gt <= tolerance) + np.count_nonzero(d_gt_pred <= tolerance)) / total)
