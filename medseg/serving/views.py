"""The viewer's pictures: one plane of a job's scan with its mask blended in (per-class colours, a chosen opacity,
hidden classes left out), as a PNG drawn on the server.

A 2D scan is its one picture. A 3D scan has three planes through voxel ``index``: axial (fixed z; rows y, columns
x), coronal (fixed y; z upwards) and sagittal (fixed x; z upwards), each stretched to its voxels' physical
aspect. Drawing on the server keeps the page free of WebGL and of any script library: it works offline, in
headless browsers and on thin clients, and looks like the report's overlays (:mod:`medseg.inference.overlays`).
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from medseg.inference.overlays import overlay, to_rgb

PLANES = ("axial", "coronal", "sagittal")
#: the longer side of a drawn plane, in pixels
DRAWN = 512


def plane_of(array: np.ndarray, plane: str, index: int) -> np.ndarray:
    """The 2D plane of an ``(x, y, z)`` array, rows first, as displayed."""
    axis = {"axial": 2, "coronal": 1, "sagittal": 0}[plane]
    index = int(np.clip(index, 0, array.shape[axis] - 1))
    cut = np.take(array, index, axis=axis).T  # rows: the later remaining axis
    return cut if plane == "axial" else cut[::-1]  # z upwards


def render(view: Path, dims: int, spacing: Sequence[float], colors: Sequence, plane: str = "axial", index: int | None = None,
           opacity: float = 0.45, hidden: Sequence[int] = ()) -> bytes:
    """The PNG of one plane (see the module doc); ``index`` ``None``: the middle."""
    image = np.load(view / "image.npy", mmap_mode="r")
    labels = np.load(view / "labels.npy", mmap_mode="r")
    if dims == 2:
        picture, lab, aspect = np.asarray(image), np.array(labels), (1.0, 1.0)
    else:
        axis = {"axial": 2, "coronal": 1, "sagittal": 0}[plane]
        index = labels.shape[axis] // 2 if index is None else index
        picture, lab = plane_of(image, plane, index), plane_of(labels, plane, index).copy()
        sx, sy, sz = (list(spacing) + [1.0, 1.0, 1.0])[:3]
        aspect = {"axial": (sy, sx), "coronal": (sz, sx), "sagittal": (sz, sy)}[plane]
    for c in hidden:
        lab[lab == c] = 0
    rgb = overlay(picture, lab, colors, alpha=float(opacity)) if opacity > 0 else to_rgb(picture, lab.shape)
    rows, cols = rgb.shape[:2]
    height, width = rows * aspect[0], cols * aspect[1]
    scale = DRAWN / max(height, width)
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    buf = io.BytesIO()
    Image.fromarray(rgb).resize(size, Image.NEAREST).save(buf, format="PNG")
    return buf.getvalue()
