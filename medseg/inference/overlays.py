"""Label maps drawn over their images: class colours blended in, region boundaries in full colour.

Used to write prediction overlays (``medseg predict``) and by the evaluation's figures and report.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image
from scipy import ndimage

from medseg.io.atomic import atomic_path

# Used for class indices beyond the given colours (tab10).
FALLBACK_COLORS = (
    (31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189),
    (140, 86, 75), (227, 119, 194), (127, 127, 127), (188, 189, 34), (23, 190, 207),
)  # fmt: skip


def to_rgb(image: np.ndarray, shape: tuple[int, int] | None = None) -> np.ndarray:
    """Any 2D image, gray or colour, channel-first or -last, to ``(H, W, 3)`` ``uint8``.

    Values are rescaled by the image's own min/max to 0..255 (a constant image
    becomes black). ``shape`` (the label map's) settles which axis holds channels.
    """
    arr = np.asarray(image)
    if arr.ndim == 3:
        last_ok = arr.shape[-1] in (1, 3, 4) and (shape is None or arr.shape[:2] == tuple(shape))
        first_ok = arr.shape[0] in (1, 3, 4) and (shape is None or arr.shape[1:] == tuple(shape))
        if first_ok and last_ok:  # e.g. (3, H, 3): take the smaller axis as channels
            first_ok = arr.shape[0] < arr.shape[-1]
        if first_ok:
            arr = np.moveaxis(arr, 0, -1)
        elif not last_ok:
            raise ValueError(f"cannot show an image of shape {arr.shape}: expected (H, W), (C, H, W) or (H, W, C)")
        if arr.shape[-1] == 4:
            arr = arr[..., :3]
        elif arr.shape[-1] == 1:
            arr = arr[..., 0]
    elif arr.ndim != 2:
        raise ValueError(f"cannot show an image of shape {arr.shape}: expected (H, W), (C, H, W) or (H, W, C)")
    if arr.dtype == bool:
        arr = arr.astype(np.uint8)
    arr = arr.astype(np.float64)
    finite = np.isfinite(arr)
    if finite.any():
        lo, hi = float(arr[finite].min()), float(arr[finite].max())
    else:
        lo = hi = 0.0
    scaled = np.zeros(arr.shape, dtype=np.float64)
    if hi > lo:
        scaled = (np.where(finite, arr, lo) - lo) * (255.0 / (hi - lo))
    out = np.clip(np.rint(scaled), 0, 255).astype(np.uint8)
    if out.ndim == 2:
        out = np.repeat(out[..., None], 3, axis=-1)
    if shape is not None and out.shape[:2] != tuple(shape):
        raise ValueError(f"image shape {out.shape[:2]} does not match label shape {tuple(shape)}")
    return out


def labels_2d(labels: np.ndarray) -> np.ndarray:
    lab = np.asarray(labels)
    if lab.ndim == 3 and lab.shape[0] == 1:
        lab = lab[0]
    if lab.ndim != 2:
        raise ValueError(f"labels must be a 2D map of class indices, got shape {lab.shape}")
    return lab.astype(np.int64, copy=False)


def class_color(colors: Sequence[Sequence[int]], c: int) -> np.ndarray:
    col = colors[c] if c < len(colors) else FALLBACK_COLORS[c % len(FALLBACK_COLORS)]
    return np.asarray(col, dtype=np.float64)[:3]


def classes_present(lab: np.ndarray) -> list[int]:
    return [int(c) for c in np.unique(lab) if c > 0]


def label_rgb(labels: np.ndarray, colors: Sequence[tuple[int, int, int]]) -> np.ndarray:
    """Class indices to an ``(H, W, 3)`` ``uint8`` colour image; class 0 (and negatives) black."""
    lab = labels_2d(labels)
    out = np.zeros((*lab.shape, 3), dtype=np.uint8)
    for c in classes_present(lab):
        out[lab == c] = class_color(colors, c).astype(np.uint8)
    return out


def overlay(
    image: np.ndarray,
    labels: np.ndarray,
    colors: Sequence[tuple[int, int, int]],
    alpha: float = 0.45,
) -> np.ndarray:
    """Blend class colours onto an image; return ``(H, W, 3)`` ``uint8``.

    The image (``(H, W)``, ``(C, H, W)`` or ``(H, W, C)``, any dtype) is rescaled
    to 0..255 by its own min/max. Pixels of class ``c > 0`` become
    ``(1 - alpha) * image + alpha * colors[c]``; the boundary pixels of each class
    region are drawn in the full class colour. Class 0 is left as it is.
    """
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in 0..1, got {alpha}")
    lab = labels_2d(labels)
    rgb = to_rgb(image, lab.shape)
    out = rgb.astype(np.float64)
    contour_px = []
    for c in classes_present(lab):
        mask = lab == c
        col = class_color(colors, c)
        out[mask] = (1.0 - alpha) * out[mask] + alpha * col
        # boundary: pixels of the class with a 4-neighbour outside it (image edges do not count)
        edge = mask & ~ndimage.binary_erosion(mask, border_value=1)
        contour_px.append((edge, col))
    for edge, col in contour_px:
        out[edge] = col
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def save_rgb(path: str | Path, rgb: np.ndarray) -> None:
    with atomic_path(path) as tmp:
        Image.fromarray(rgb).save(tmp, format="PNG")


def save_overlay(
    path: str | Path,
    image: np.ndarray,
    labels: np.ndarray,
    colors: Sequence[tuple[int, int, int]],
    alpha: float = 0.45,
) -> None:
    """Write :func:`overlay` as a PNG at the image's own resolution."""
    save_rgb(path, overlay(image, labels, colors, alpha))
