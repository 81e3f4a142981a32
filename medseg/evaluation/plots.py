"""Figures: image/label grids and training curves, saved as PNG (label overlays: :mod:`medseg.inference.overlays`).

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

from medseg.inference.overlays import class_color, classes_present, label_rgb, labels_2d, overlay, to_rgb
from medseg.io.atomic import atomic_path

log = logging.getLogger(__name__)

_HISTORY_METRICS = (("loss", "Loss"), ("accuracy", "Accuracy"), ("dice", "Dice"))


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
        lab = labels_2d(labels)
        present.update(classes_present(lab))
        panels = (
            (to_rgb(image, lab.shape), str(title)),
            (label_rgb(lab, colors), "labels"),
            (overlay(image, lab, colors), "overlay"),
        )
        for ax, (arr, ttl) in zip(axes[r], panels):
            ax.imshow(arr, interpolation="nearest")
            ax.set_title(ttl, fontsize=9)
            ax.set_axis_off()
    if names:
        handles = [
            Patch(facecolor=class_color(colors, c) / 255.0, edgecolor="black", label=names[c] if c < len(names) else str(c))
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
