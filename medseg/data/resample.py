"""Resampling channel-first arrays to a new spacing or shape (after nnU-Net): images with cubic splines,
labels by per-class linear interpolation of the one-hot encoding (or nearest); anisotropic data (max/min
spacing > :data:`ANISOTROPY_THRESHOLD`) is resampled in-plane with that order and along the
low-resolution axis with nearest neighbour, as nnU-Net does."""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np
from scipy import ndimage

from medseg.errors import ConfigError

logger = logging.getLogger(__name__)

ANISOTROPY_THRESHOLD = 3.0


def target_shape(shape: Sequence[int], old_spacing: Sequence[float], new_spacing: Sequence[float]) -> tuple[int, ...]:
    """``round(shape * old_spacing / new_spacing)`` per axis (at least 1)."""
    if not (len(shape) == len(old_spacing) == len(new_spacing)):
        raise ValueError(f"shape {tuple(shape)} and spacings {old_spacing}, {new_spacing} differ in length")
    return tuple(max(1, int(round(s * o / n))) for s, o, n in zip(shape, old_spacing, new_spacing))


def lowres_axis(spacing: Sequence[float], threshold: float = ANISOTROPY_THRESHOLD) -> int | None:
    """The single low-resolution axis when ``max/min spacing > threshold``, else ``None``."""
    sp = np.asarray(spacing, dtype=float)
    if sp.size < 3 or sp.max() / sp.min() <= threshold:
        return None
    axes = np.flatnonzero(sp == sp.max())
    return int(axes[0]) if axes.size == 1 else None


def _zoom(x: np.ndarray, shape: tuple[int, ...], order: int) -> np.ndarray:
    """Resize a spatial array to exactly ``shape`` (pixel-edge aligned, edge values extended)."""
    if tuple(x.shape) == tuple(shape):
        return x.copy()
    factors = [n / o for n, o in zip(shape, x.shape)]
    y = ndimage.zoom(x, factors, order=order, mode="nearest", grid_mode=True, prefilter=order > 1)
    if y.shape != tuple(shape):  # not expected; scipy rounds to the same shape
        raise AssertionError(f"zoom produced {y.shape}, expected {shape}")
    return y


def _zoom_separate(x: np.ndarray, shape: tuple[int, ...], order: int, axis: int, order_z: int) -> np.ndarray:
    """In-plane resize slice by slice with ``order``, then along ``axis`` with ``order_z``."""
    plane = tuple(s for a, s in enumerate(shape) if a != axis)
    moved = np.moveaxis(x, axis, 0)
    slices = [_zoom(moved[i], plane, order) for i in range(moved.shape[0])]
    y = np.moveaxis(np.stack(slices, axis=0), 0, axis)
    if y.shape[axis] != shape[axis]:
        factors = [1.0] * y.ndim
        factors[axis] = shape[axis] / y.shape[axis]
        y = ndimage.zoom(y, factors, order=order_z, mode="nearest", grid_mode=True, prefilter=order_z > 1)
    return y


def _resize_image(x: np.ndarray, shape, order: int, axis: int | None, order_z: int) -> np.ndarray:
    xf = x if x.dtype.kind == "f" else x.astype(np.float32)
    if axis is None:
        y = _zoom(xf, shape, order)
    else:
        y = _zoom_separate(xf, shape, order, axis, order_z)
    return y.astype(np.float32 if x.dtype.kind != "f" else x.dtype, copy=False)


def _resize_label(x: np.ndarray, shape, order: int, axis: int | None, order_z: int) -> np.ndarray:
    """Per-class interpolation of the one-hot encoding, then argmax (``order=0``: nearest)."""
    if order == 0:
        return _zoom(x, shape, 0) if axis is None else _zoom_separate(x, shape, 0, axis, 0)
    classes = np.unique(x)
    if classes.size == 1:
        return np.full(shape, classes[0], dtype=x.dtype)
    work_shape = shape if axis is None else tuple(x.shape[a] if a == axis else s for a, s in enumerate(shape))
    best = np.full(work_shape, -np.inf, dtype=np.float32)
    out = np.zeros(work_shape, dtype=x.dtype)
    for c in classes:
        onehot = (x == c).astype(np.float32)
        if axis is None:
            p = _zoom(onehot, work_shape, order)
        else:  # in-plane only here; the low-resolution axis is done with nearest below
            moved = np.moveaxis(onehot, axis, 0)
            plane = tuple(s for a, s in enumerate(shape) if a != axis)
            p = np.moveaxis(np.stack([_zoom(moved[i], plane, order) for i in range(moved.shape[0])]), 0, axis)
        better = p > best
        best[better] = p[better]
        out[better] = c
    if axis is not None and out.shape[axis] != shape[axis]:
        factors = [1.0] * out.ndim
        factors[axis] = shape[axis] / out.shape[axis]
        out = ndimage.zoom(out, factors, order=0, mode="nearest", grid_mode=True)
    return out


def resample_to_shape(
    array: np.ndarray,
    shape: Sequence[int],
    order: int | None = None,
    is_label: bool = False,
    *,
    spacing: Sequence[float] | None = None,
    label_mode: str = "onehot",
    anisotropy_threshold: float = ANISOTROPY_THRESHOLD,
    order_z: int = 0,
) -> np.ndarray:
    """Resample ``array`` ``(C, *spatial)`` (or a spatial array without channel axis) to ``shape``.

    ``order`` defaults to 3 for images and 1 for labels. Labels (``is_label``)
    use per-class interpolation of the one-hot encoding with ``order`` followed by
    argmax (``label_mode="onehot"``, as nnU-Net) or nearest neighbour
    (``label_mode="nearest"``) and keep their dtype. ``spacing`` (of ``array``)
    enables nnU-Net's anisotropic handling: if the input or output spacing has a
    single axis coarser than ``anisotropy_threshold`` times the finest, slices
    are resampled in-plane with ``order`` and that axis with ``order_z`` (nearest).
    Images come back float32 (float64 stays float64).
    """
    array = np.asarray(array)
    shape = tuple(int(s) for s in shape)
    n = len(shape)
    if array.ndim not in (n, n + 1):
        raise ValueError(f"array of shape {array.shape} cannot be resampled to spatial shape {shape}")
    if label_mode not in ("onehot", "nearest"):
        raise ConfigError(f"unknown label_mode '{label_mode}'", hint="choose 'onehot' or 'nearest'")
    squeeze = array.ndim == n
    arr = array[None] if squeeze else array
    if order is None:
        order = 1 if is_label else 3
    if is_label and label_mode == "nearest":
        order = 0

    axis = None
    if spacing is not None:
        spacing = tuple(float(s) for s in spacing)
        if len(spacing) != n:
            raise ValueError(f"spacing {spacing} does not match spatial shape {shape}")
        new_spacing = tuple(sp * old / new for sp, old, new in zip(spacing, arr.shape[1:], shape))
        axis = lowres_axis(spacing, anisotropy_threshold)
        if axis is None:
            axis = lowres_axis(new_spacing, anisotropy_threshold)
        if axis is not None:
            logger.debug("anisotropic spacing %s -> %s: axis %d resampled separately", spacing, new_spacing, axis)

    if tuple(arr.shape[1:]) == shape:
        out = arr.copy() if is_label else arr.astype(np.float32 if arr.dtype.kind != "f" else arr.dtype)
    else:
        fn = _resize_label if is_label else _resize_image
        out = np.stack([fn(arr[c], shape, order, axis, order_z) for c in range(arr.shape[0])])
    return out[0] if squeeze else out


def resample(
    array: np.ndarray,
    old_spacing: Sequence[float],
    new_spacing: Sequence[float],
    order: int | None = None,
    is_label: bool = False,
    **kwargs,
) -> np.ndarray:
    """Resample ``array`` ``(C, *spatial)`` from ``old_spacing`` to ``new_spacing``.

    The result has exactly the spatial shape ``round(old_shape * old_spacing /
    new_spacing)``; see :func:`resample_to_shape` for orders and label handling.
    """
    array = np.asarray(array)
    n = len(old_spacing)
    shape = target_shape(array.shape[-n:], old_spacing, new_spacing)
    return resample_to_shape(array, shape, order, is_label, spacing=old_spacing, **kwargs)
