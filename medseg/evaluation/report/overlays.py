"""Pictures of single cases: the image with the prediction filled in and the truth outlined.

A 2D case is shown whole; a 3D case by three orthogonal planes through its largest
error (the centre of the densest cluster of wrong voxels, ``pred != truth``; the
middle of the truth's foreground when nothing is wrong). The prediction is filled
and the truth outlined, both in the class colours. One code path serves both: a 2D
image is one "plane" that needs no choosing. :func:`thumbnail` draws one small
picture per case for the report's gallery.

Conventions: label maps hold class ids ``0..K-1`` (0 = background); images are
channel-first ``(C, *spatial)`` as :func:`medseg.io.read_image` returns them; a
3D slice of array axes ``(a, b)`` is drawn with ``b`` downwards and ``a`` across.
"""

from __future__ import annotations

import io
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image
from scipy import ndimage

from medseg.data.dataset2d import read_fov
from medseg.data.labels import LabelScheme
from medseg.data.mask_reading import read_mask
from medseg.errors import DataError
from medseg.inference.overlays import overlay
from medseg.io import read_image

log = logging.getLogger(__name__)

_AXES = "xyz"


@dataclass
class CaseArrays:
    """One evaluated case, read back from the files ``cases.json`` names."""

    image: np.ndarray  # (C, *S)
    truth: np.ndarray  # (*S) class ids
    pred: np.ndarray  # (*S) class ids
    fov: np.ndarray | None  # (*S) bool: where the metrics were computed
    spacing: tuple[float, ...]


@dataclass
class View:
    title: str
    png: bytes
    errors: int  # wrong pixels/voxels in this picture


def _resolve(path: str, bases: Sequence[Path]) -> Path:
    p = Path(path)
    if p.is_absolute():
        return p
    for base in bases:
        if (base / p).exists():
            return base / p
    return bases[0] / p if bases else p


def _paths(value, bases: Sequence[Path]) -> list[Path]:
    items = value if isinstance(value, (list, tuple)) else [value]
    return [_resolve(str(v), bases) for v in items if v]


def _codes_to_ids(arr: np.ndarray, scheme: LabelScheme | None, path: Path) -> np.ndarray:
    """Label values → class ids; files already holding ids ``0..K-1`` are accepted as they are."""
    arr = np.asarray(arr)
    if scheme is None or scheme.kind == "color":
        return arr.astype(np.int64)
    codes = np.asarray(scheme.codes)
    values = np.unique(arr)
    if np.isin(values, codes).all():
        order = np.argsort(codes)
        return order[np.searchsorted(codes[order], arr)]
    if values.min() >= 0 and values.max() < scheme.num_classes:
        return arr.astype(np.int64)
    raise DataError(f"label values {values[:8].tolist()} are not in the run's label scheme", path=path)


def read_class_ids(paths: Sequence[Path], scheme: LabelScheme | None) -> np.ndarray:
    """A label or prediction file (2D: several masks are merged) as class ids of its spatial shape."""
    first = read_image(paths[0])
    if first.array.ndim == 3 and scheme is not None:  # 2D (C, H, W): decode by the scheme (colours, 0/255, ...)
        try:
            return read_mask(paths, scheme).astype(np.int64)
        except DataError:
            if first.array.shape[0] != 1:
                raise
    return _codes_to_ids(first.array[0], scheme, paths[0])


def load_case(entry: dict, bases: Sequence[Path], scheme: LabelScheme | None) -> CaseArrays:
    """Read the image, truth, prediction (and field of view) one ``cases.json`` entry names."""
    for key in ("image", "label", "prediction"):
        if not entry.get(key):
            raise DataError(f"cases.json entry has no {key!r}")
    image = read_image(_paths(entry["image"], bases)[0])
    label_paths = _paths(entry["label"], bases)
    from medseg.io.dicom_seg_read import is_seg_file, read_seg_label

    if len(label_paths) == 1 and image.array.ndim == 4 and is_seg_file(label_paths[0]):  # a DICOM SEG: on the image's grid
        truth = _codes_to_ids(read_seg_label(label_paths[0], image).array[0], scheme, label_paths[0])
    else:
        truth = read_class_ids(label_paths, scheme)
    pred = read_class_ids(_paths(entry["prediction"], bases), scheme)
    shape = image.spatial_shape
    if truth.shape != shape or pred.shape != shape:
        raise DataError(f"image {shape}, truth {truth.shape} and prediction {pred.shape} differ in size",
                        path=_paths(entry["prediction"], bases)[0])
    fov = None
    if entry.get("fov"):
        fov_path = _paths(entry["fov"], bases)[0]
        fov = read_fov(fov_path, shape) if len(shape) == 2 else read_image(fov_path).array[0] > 0
    return CaseArrays(image.array, truth, pred, fov, tuple(float(s) for s in image.geometry.spacing))


def slice_axis(spacing: Sequence[float]) -> int:
    """The coarsest axis (thick slices); the last one when the spacing is (nearly) even."""
    s = np.asarray(spacing, dtype=np.float64)
    return len(s) - 1 if s.max() <= 1.01 * s.min() else int(np.argmax(s))


def error_center(truth: np.ndarray, pred: np.ndarray, region: np.ndarray | None = None) -> tuple[int, ...]:
    """The voxel at the centre of the densest cluster of wrong voxels (a 5-voxel box average of ``pred != truth``,
    inside ``region``); without errors the middle of the truth's foreground extent (the prediction's when the
    truth is empty, the volume's when both are)."""
    wrong = (pred != truth) if region is None else (pred != truth) & region
    if wrong.any():
        density = ndimage.uniform_filter(wrong.astype(np.float32), size=5, mode="constant")
        density[~wrong] = -1  # the centre is itself wrong
        return tuple(int(i) for i in np.unravel_index(int(np.argmax(density)), wrong.shape))
    for fg in (truth > 0, pred > 0):
        where = np.argwhere(fg)
        if where.size:
            return tuple(int(i) for i in (where.min(0) + where.max(0)) // 2)
    return tuple(n // 2 for n in truth.shape)


def _gray(image: np.ndarray) -> np.ndarray:
    """``(C, *S)`` → ``(*S)``: the luminance of a 2D colour (RGB/RGBA) image, else the first channel (3D: the
    first modality). Gray keeps the overlay's class colours distinct from the image's own (a red-orange fundus)."""
    if image.ndim == 3 and image.shape[0] in (3, 4):
        return np.tensordot(np.asarray([0.299, 0.587, 0.114]), image[:3].astype(np.float64), axes=1)
    return image[0]


def _display_rgb(image: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """``(h, w)`` → ``(h, w, 3)`` uint8 gray in the window ``lo..hi``."""
    scaled = np.clip((np.nan_to_num(image.astype(np.float64), nan=lo) - lo) / max(hi - lo, 1e-12), 0, 1)
    return np.repeat(np.rint(scaled * 255).astype(np.uint8)[..., None], 3, axis=-1)


def _window(gray: np.ndarray) -> tuple[float, float]:
    """The 0.5–99.5 percentile intensity window (robust to a few bright voxels)."""
    arr = gray
    finite = arr[np.isfinite(arr)]
    if not finite.size:
        return 0.0, 1.0
    lo, hi = np.percentile(finite, [0.5, 99.5])
    return (float(lo), float(hi)) if hi > lo else (float(finite.min()), float(finite.max()))


def render(
    image: np.ndarray,
    truth: np.ndarray,
    pred: np.ndarray,
    colors: Sequence[Sequence[int]],
    *,
    window: tuple[float, float],
    spacing: tuple[float, float] = (1.0, 1.0),
    region: np.ndarray | None = None,
    long_side: tuple[int, int] = (512, 768),
) -> bytes:
    """One 2D picture as PNG bytes: the gray image ``(h, w)``, the prediction ``(h, w)`` as a translucent fill
    in the class colours, the truth ``(h, w)`` outlined in the same class colours, outside ``region`` dimmed.

    The picture keeps the physical aspect ratio (``spacing`` = row, column size) and its long
    side is the image's own, brought into ``long_side`` (small slices are enlarged, nearest
    neighbour for labels, so outlines stay thin).
    """
    h, w = truth.shape
    phys = (h * spacing[0], w * spacing[1])
    target = min(max(h, w, long_side[0]), long_side[1])
    size = (max(1, round(phys[1] / max(phys) * target)), max(1, round(phys[0] / max(phys) * target)))  # PIL: (w, h)

    def _up(lab: np.ndarray) -> np.ndarray:
        return np.asarray(Image.fromarray(lab.astype(np.uint8)).resize(size, Image.NEAREST))

    rgb = np.asarray(Image.fromarray(_display_rgb(image, *window)).resize(size, Image.BILINEAR))
    truth_up, pred_up = _up(truth), _up(pred)
    out = overlay(rgb, pred_up, colors, alpha=0.35).astype(np.float64)
    if region is not None:
        out[~_up(region).astype(bool)] *= 0.45
    line = max(1, round(target / 256))
    for c in np.unique(truth_up):
        if c == 0:
            continue
        mask = truth_up == c
        color = np.asarray(colors[c][:3] if c < len(colors) else (255, 255, 0), dtype=np.float64)
        out[mask & ~ndimage.binary_erosion(mask, iterations=line, border_value=1)] = color
    buf = io.BytesIO()
    Image.fromarray(np.clip(np.rint(out), 0, 255).astype(np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


def _cut(arr: np.ndarray, axis: int, k: int) -> np.ndarray:
    """Slice ``k`` across ``axis`` of a 3D map, as ``(b, a)`` (the later remaining axis downwards)."""
    return np.take(arr, k, axis=axis).T


def _plane(case: CaseArrays, colors: Sequence[Sequence[int]], gray: np.ndarray, window: tuple[float, float],
           axis: int, k: int, long_side: tuple[int, int] = (512, 768)) -> View:
    """The plane ``k`` across ``axis`` of a 3D case, drawn."""
    a, b = (i for i in range(3) if i != axis)
    truth, pred = _cut(case.truth, axis, k), _cut(case.pred, axis, k)
    region = _cut(case.fov, axis, k) if case.fov is not None else None
    wrong = pred != truth
    errors = int((wrong & region).sum() if region is not None else wrong.sum())
    png = render(_cut(gray, axis, k), truth, pred, colors, window=window, spacing=(case.spacing[b], case.spacing[a]),
                 region=region, long_side=long_side)
    name = _AXES[axis] if axis < len(_AXES) else f"axis {axis}"
    return View(f"{name} = {k} of {case.truth.shape[axis]}", png, errors)


def _whole(case: CaseArrays, colors: Sequence[Sequence[int]], gray: np.ndarray, window: tuple[float, float],
           long_side: tuple[int, int] = (512, 768)) -> View:
    wrong = case.pred != case.truth
    errors = int((wrong & case.fov).sum() if case.fov is not None else wrong.sum())
    png = render(gray, case.truth, case.pred, colors, window=window, spacing=case.spacing[:2], region=case.fov, long_side=long_side)
    return View("whole image", png, errors)


def case_views(case: CaseArrays, colors: Sequence[Sequence[int]]) -> list[View]:
    """The pictures of one case: the whole image (2D), or three orthogonal planes through its largest error (3D),
    the one across the slice axis first."""
    gray = _gray(case.image)
    window = _window(gray)
    if case.truth.ndim == 2:
        return [_whole(case, colors, gray, window)]
    center = error_center(case.truth, case.pred, case.fov)
    first = slice_axis(case.spacing)
    return [_plane(case, colors, gray, window, axis, center[axis]) for axis in [first] + [i for i in range(3) if i != first]]


def thumbnail(case: CaseArrays, colors: Sequence[Sequence[int]], size: int = 200) -> View:
    """One small picture of a case: the whole image (2D), the plane across the slice axis through its largest error (3D)."""
    gray = _gray(case.image)
    window = _window(gray)
    if case.truth.ndim == 2:
        return _whole(case, colors, gray, window, (size, size))
    axis = slice_axis(case.spacing)
    return _plane(case, colors, gray, window, axis, error_center(case.truth, case.pred, case.fov)[axis], (size, size))
