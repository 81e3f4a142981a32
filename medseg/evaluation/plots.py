"""Figures: label overlays, image/label grids and training curves, saved as PNG.

Plots are drawn on :class:`matplotlib.figure.Figure` objects directly (no pyplot,
no global state, no GUI backend) and every file is written atomically.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure
from matplotlib.patches import Patch
from PIL import Image
from scipy import ndimage

from medseg.io.atomic import atomic_path

log = logging.getLogger(__name__)

# Used for class indices beyond the given colours (tab10).
_FALLBACK_COLORS = (
    (31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189),
    (140, 86, 75), (227, 119, 194), (127, 127, 127), (188, 189, 34), (23, 190, 207),
)  # fmt: skip

_HISTORY_METRICS = (("loss", "Loss"), ("accuracy", "Accuracy"), ("dice", "Dice"))


def _to_rgb(image: np.ndarray, shape: tuple[int, int] | None = None) -> np.ndarray:
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


def _labels2d(labels: np.ndarray) -> np.ndarray:
    lab = np.asarray(labels)
    if lab.ndim == 3 and lab.shape[0] == 1:
        lab = lab[0]
    if lab.ndim != 2:
        raise ValueError(f"labels must be a 2D map of class indices, got shape {lab.shape}")
    return lab.astype(np.int64, copy=False)


def _color(colors: Sequence[Sequence[int]], c: int) -> np.ndarray:
    col = colors[c] if c < len(colors) else _FALLBACK_COLORS[c % len(_FALLBACK_COLORS)]
    return np.asarray(col, dtype=np.float64)[:3]


def _classes(lab: np.ndarray) -> list[int]:
    return [int(c) for c in np.unique(lab) if c > 0]


def label_rgb(labels: np.ndarray, colors: Sequence[tuple[int, int, int]]) -> np.ndarray:
    """Class indices to an ``(H, W, 3)`` ``uint8`` colour image; class 0 (and negatives) black."""
    lab = _labels2d(labels)
    out = np.zeros((*lab.shape, 3), dtype=np.uint8)
    for c in _classes(lab):
        out[lab == c] = _color(colors, c).astype(np.uint8)
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
    lab = _labels2d(labels)
    rgb = _to_rgb(image, lab.shape)
    out = rgb.astype(np.float64)
    contour_px = []
    for c in _classes(lab):
        mask = lab == c
        col = _color(colors, c)
        out[mask] = (1.0 - alpha) * out[mask] + alpha * col
        # boundary: pixels of the class with a 4-neighbour outside it (image edges do not count)
        edge = mask & ~ndimage.binary_erosion(mask, border_value=1)
        contour_px.append((edge, col))
    for edge, col in contour_px:
        out[edge] = col
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def _save_rgb(path: str | Path, rgb: np.ndarray) -> None:
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
    _save_rgb(path, overlay(image, labels, colors, alpha))


def _save_figure(fig: Figure, path: str | Path, dpi: int = 100) -> None:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=dpi, facecolor="white")


def image_label_grid(
    items: Sequence[tuple[str, np.ndarray, np.ndarray]],
    colors: Sequence[tuple[int, int, int]],
    path: str | Path,
    max_items: int = 8,
    *,
    names: Sequence[str] | None = None,
) -> None:
    """A PNG grid with one row per ``(title, image, labels)`` item: image | label map | overlay.

    At most ``max_items`` rows are drawn. ``names`` (class names by index), when
    given, adds a colour legend.
    """
    items = list(items)
    if not items:
        raise ValueError("no images to show")
    if max_items < 1:
        raise ValueError(f"max_items must be at least 1, got {max_items}")
    if len(items) > max_items:
        log.info("showing the first %d of %d images", max_items, len(items))
        items = items[:max_items]
    rows = len(items)
    panel = 3.0
    legend_h = 0.4 if names else 0.0
    fig = Figure(figsize=(3 * panel, rows * panel + legend_h), layout="constrained")
    axes = fig.subplots(rows, 3, squeeze=False)
    present: set[int] = set()
    for r, (title, image, labels) in enumerate(items):
        lab = _labels2d(labels)
        present.update(_classes(lab))
        panels = (
            (_to_rgb(image, lab.shape), str(title)),
            (label_rgb(lab, colors), "labels"),
            (overlay(image, lab, colors), "overlay"),
        )
        for ax, (arr, ttl) in zip(axes[r], panels):
            ax.imshow(arr, interpolation="nearest")
            ax.set_title(ttl, fontsize=9)
            ax.set_axis_off()
    if names:
        handles = [
            Patch(facecolor=_color(colors, c) / 255.0, edgecolor="black", label=names[c] if c < len(names) else str(c))
            for c in sorted(present)
        ]
        if handles:
            fig.legend(handles=handles, loc="outside lower center", ncol=min(len(handles), 6), fontsize=8, frameon=False)
    _save_figure(fig, path)


def _as_float(value) -> float | None:
    if value is None:
        return None
    if isinstance(value, str):
        value = value.strip()
        if not value:
            return None
    try:
        x = float(value)
    except (TypeError, ValueError):
        return None
    return x if math.isfinite(x) else None


def plot_history(rows: Sequence[dict], out_dir: Path) -> list[Path]:
    """Training curves: ``loss.png``, ``accuracy.png``, ``dice.png`` in ``out_dir``.

    Each figure plots ``train_<metric>`` and ``val_<metric>`` against ``epoch``
    (or the row number). Missing, empty or non-finite values are skipped; a figure
    with no values at all is not written. Returns the paths written.
    """
    out_dir = Path(out_dir)
    rows = list(rows)
    written: list[Path] = []
    epochs = []
    for i, row in enumerate(rows):
        e = _as_float(row.get("epoch"))
        epochs.append(e if e is not None else float(i + 1))
    for metric, title in _HISTORY_METRICS:
        series = []
        for split in ("train", "val"):
            key = f"{split}_{metric}"
            pts = [(x, _as_float(row.get(key))) for x, row in zip(epochs, rows)]
            pts = [(x, y) for x, y in pts if y is not None]
            if pts:
                series.append((split, pts))
        if not series:
            log.debug("no %s values in history; skipping %s.png", metric, metric)
            continue
        fig = Figure(figsize=(6.0, 4.0), layout="constrained")
        ax = fig.add_subplot()
        for split, pts in series:
            xs, ys = zip(*pts)
            ax.plot(xs, ys, marker="o" if len(pts) <= 30 else None, markersize=3, label=split)
        ax.set_xlabel("epoch")
        ax.set_ylabel(metric)
        ax.set_title(f"{title}: train vs val" if len(series) == 2 else f"{title} ({series[0][0]})")
        ax.grid(True, alpha=0.3)
        ax.legend()
        path = out_dir / f"{metric}.png"
        _save_figure(fig, path)
        written.append(path)
    return written
