"""Label maps read for evaluation: volumes as stored, 2D masks decoded by meaning into the truth's classes
(a prediction may also hold class indices), grids checked, field-of-view masks read."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from medseg.data.labels import LabelScheme, canonical
from medseg.errors import DataError
from medseg.evaluation.outputs import spacing_text
from medseg.io import read_image
from medseg.io.base import file_suffix
from medseg.io.volume import VOLUME_SUFFIXES

log = logging.getLogger(__name__)


@dataclass
class LabelMap:
    """One decoded label map: ``array`` ``(*spatial)`` integer values, its spacing and length unit."""

    array: np.ndarray
    spacing: tuple[float, ...]
    unit: str  #: "mm" (volumes) or "px" (2D image files)
    geometry: Any = None  #: the volume's Geometry (None for 2D image files)


def is_volume_file(path: Path) -> bool:
    return file_suffix(path) in VOLUME_SUFFIXES


def _read_volume_labels(path: Path) -> LabelMap:
    img = read_image(path)
    if img.array.shape[0] != 1:
        raise DataError(f"a label map must have one channel, this file has {img.array.shape[0]}", path=path,
                        hint="save the label map as a scalar volume of label values")
    arr = img.array[0]
    spacing = tuple(img.geometry.spacing)
    while arr.ndim > 2 and arr.shape[-1] == 1:  # a 2D map stored as a 1-slice volume
        arr, spacing = arr[..., 0], spacing[:-1]
    if arr.dtype.kind == "f":
        if not np.all(np.isfinite(arr)) or not np.array_equal(arr, np.round(arr)):
            raise DataError("label map holds non-integer values", path=path,
                            hint="a label map holds integer label values; was a probability or image map saved here?")
        arr = arr.astype(np.int64)
    elif arr.dtype.kind not in "ui":
        raise DataError(f"label map dtype {arr.dtype} is not numeric", path=path)
    if arr.size and arr.min() < 0:
        raise DataError(f"label map holds negative values ({int(arr.min())})", path=path)
    return LabelMap(arr, spacing, "mm", img.geometry)


def _gray_ids(arr: np.ndarray, scheme: LabelScheme, index_fallback: bool) -> np.ndarray | None:
    """Fast path: class ids of a gray mask ``(1 or 3 equal channels, H, W)`` through a lookup table.

    ``None`` when the mask is not plain gray or holds a value outside the scheme (and, with
    ``index_fallback``, is not a map of class indices either); the caller then decodes it
    with :meth:`LabelScheme.decode`, which explains the problem.
    """
    if arr.ndim != 3 or arr.dtype.kind not in "ui" or arr.dtype.itemsize > 2 or scheme.kind == "color":
        return None
    if arr.shape[0] == 3 and np.array_equal(arr[0], arr[1]) and np.array_equal(arr[1], arr[2]):
        arr = arr[:1]
    if arr.shape[0] != 1:
        return None
    codes = arr[0]
    top = int(codes.max()) if codes.size else 0
    lut = np.full(max(top, *scheme.codes) + 1, -1, dtype=np.int32)
    lut[[c for c in scheme.codes if c >= 0]] = [i for i, c in enumerate(scheme.codes) if c >= 0]
    ids = lut[codes]
    if not ids.size or ids.min() >= 0:
        return ids.astype(np.uint8)
    if index_fallback and top < scheme.num_classes:
        return codes.astype(np.uint8)
    return None


def _read_mask_2d(path: Path, scheme: LabelScheme, prediction: bool) -> np.ndarray:
    """A 2D mask as class ids in the truth's scheme; a prediction may also hold class indices 0..K-1."""
    arr = read_image(path).array
    ids = _gray_ids(arr, scheme, index_fallback=prediction)
    if ids is not None:
        return ids
    try:
        return scheme.decode(arr, path)
    except DataError:
        if not prediction:
            raise
        kind, codes, transparent = canonical(arr, path)
        if transparent is not None:
            codes = np.where(transparent, 0, codes)
        if kind == "gray" and (not codes.size or codes.max() < scheme.num_classes):
            return codes.astype(np.uint8)
        found = np.unique(codes)
        shown = ", ".join(str(int(v)) for v in found[:8]) + (" ..." if found.size > 8 else "")
        raise DataError(
            f"unexpected label values in the prediction: {shown}; the truth's classes are "
            f"{scheme._describe_codes()} (or class indices 0..{scheme.num_classes - 1})",
            path=path, hint="write predictions as class indices or in the truth's encoding (e.g. 0/255)",
        ) from None


def read_pair(pred_path: Path, gt_path: Path, scheme: LabelScheme | None) -> tuple[LabelMap, LabelMap]:
    if is_volume_file(pred_path) != is_volume_file(gt_path):
        raise DataError(f"the prediction is a {'volume' if is_volume_file(pred_path) else '2D image'} file but its truth "
                        f"{gt_path.name} is not", path=pred_path, hint="give predictions in the truth's kind of format")
    if is_volume_file(gt_path):
        return _read_volume_labels(pred_path), _read_volume_labels(gt_path)
    gt = _read_mask_2d(gt_path, scheme, prediction=False)
    pred = _read_mask_2d(pred_path, scheme, prediction=True)
    return LabelMap(pred, (1.0,) * pred.ndim, "px"), LabelMap(gt, (1.0,) * gt.ndim, "px")


def check_grids(pred: LabelMap, gt: LabelMap, pred_path: Path, gt_path: Path) -> None:
    if pred.array.shape != gt.array.shape:
        size = lambda a: "x".join(map(str, a.shape))  # noqa: E731
        raise DataError(f"prediction size {size(pred.array)} differs from the truth's {size(gt.array)} ({gt_path.name})",
                        path=pred_path, hint="predictions must lie on the truth's grid: resample them onto it first")
    if pred.geometry is None or gt.geometry is None:
        return
    sp, sg = np.asarray(pred.spacing), np.asarray(gt.spacing)
    if np.any(np.abs(sp - sg) > 1e-3 * np.maximum(sp, sg)):
        raise DataError(f"prediction spacing {spacing_text(sp)} differs from the truth's {spacing_text(sg)} ({gt_path.name})",
                        path=pred_path, hint="predictions must lie on the truth's grid: resample them onto it first")
    o1, o2 = np.asarray(pred.geometry.origin), np.asarray(gt.geometry.origin)
    d1, d2 = np.asarray(pred.geometry.direction), np.asarray(gt.geometry.direction)
    if o1.shape != o2.shape or np.any(np.abs(o1 - o2) > 1e-3 * np.maximum(1.0, np.abs(o2))) or \
            d1.shape != d2.shape or np.any(np.abs(d1 - d2) > 1e-3):
        log.warning("%s: origin or direction differ from the truth's (%s); evaluated voxel by voxel", pred_path, gt_path.name)


def read_fov(path: Path, shape: tuple[int, ...]) -> np.ndarray:
    """A field-of-view mask: non-zero pixels (of any of the first three channels) are inside.

    Reads as :func:`medseg.data.dataset2d.read_fov` does, without importing the training stack (torch).
    """
    arr = read_image(path).array
    fov = arr[: 3 if arr.shape[0] >= 3 else 1].max(0) > 0
    if fov.shape != tuple(shape):
        raise DataError(f"field-of-view mask is {fov.shape[1]}x{fov.shape[0]} but its case is {shape[1]}x{shape[0]}", path=path)
    return fov
