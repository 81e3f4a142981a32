"""Report figures drawn with matplotlib (``Figure`` objects, Agg, no pyplot) and returned as PNG bytes."""

from __future__ import annotations

import io
import math
from collections.abc import Sequence

import numpy as np
from matplotlib.figure import Figure

from medseg.evaluation.aggregate import MIN_CI_N

_CURVES = (("loss", "Loss"), ("dice", "Dice"), ("accuracy", "Accuracy"))


def png_bytes(fig: Figure, dpi: int = 96) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, facecolor="white")
    return buf.getvalue()


def _plain(text: str) -> str:
    """Text matplotlib draws as it is (a ``$`` in a class name would start math mode)."""
    return str(text).replace("$", r"\$")


def _finite(value) -> float | None:
    try:
        x = float(value)
    except (TypeError, ValueError):
        return None
    return x if math.isfinite(x) else None


def training_curves(history: Sequence[dict], best_epoch: int | None = None) -> bytes | None:
    """Loss, Dice and accuracy per epoch, train vs val, side by side; ``None`` when the history has none of them.

    ``best_epoch`` (the epoch whose weights were kept) is marked with a dotted line.
    """
    epochs = [_finite(r.get("epoch")) for r in history]
    epochs = [e if e is not None else float(i) for i, e in enumerate(epochs)]
    panels = []
    for metric, title in _CURVES:
        series = []
        for split in ("train", "val"):
            pts = [(x, _finite(r.get(f"{split}_{metric}"))) for x, r in zip(epochs, history)]
            pts = [(x, y) for x, y in pts if y is not None]
            if pts:
                series.append((split, pts))
        if series:
            panels.append((title, series))
    if not panels:
        return None
    fig = Figure(figsize=(4.2 * len(panels), 3.2))
    fig.subplots_adjust(left=0.18 / len(panels), right=1 - 0.06 / len(panels), bottom=0.15, top=0.9, wspace=0.28)
    for ax, (title, series) in zip(fig.subplots(1, len(panels), squeeze=False)[0], panels):
        for split, pts in series:
            xs, ys = zip(*pts)
            ax.plot(xs, ys, marker="o" if len(pts) <= 30 else None, markersize=3, label=split)
        if best_epoch is not None:
            ax.axvline(best_epoch, color="0.4", linestyle=":", linewidth=1, label="best epoch")
        ax.set_title(title)
        ax.set_xlabel("epoch")
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8)
    return png_bytes(fig)


def box_plot(metric: str, values_by_class: dict[str, Sequence[float]]) -> bytes:
    """One box per class of the per-case values of ``metric``, with the cases drawn as jittered dots.

    NaN (undefined) values are left out; infinite ones (e.g. HD95 with an empty
    prediction) are counted in the class label, as they cannot be drawn.
    """
    names = list(values_by_class)
    data, labels = [], []
    for name in names:
        v = np.asarray([x for x in values_by_class[name] if x is not None and not math.isnan(x)], dtype=np.float64)
        inf = int(np.isinf(v).sum())
        data.append(v[np.isfinite(v)])
        labels.append(f"{_plain(name)}\n(n={v.size - inf}{f', {inf} inf' if inf else ''})")
    width = max(3.0, 1.1 * len(names) + 1.4)
    fig = Figure(figsize=(width, 3.2))
    fig.subplots_adjust(left=0.7 / width, right=1 - 0.15 / width, bottom=0.2, top=0.9)  # fixed margins: no layout engine (slow)
    ax = fig.add_subplot()
    rng = np.random.default_rng(0)
    positions = np.arange(1, len(names) + 1)
    drawn = [(p, d) for p, d in zip(positions, data) if d.size]
    boxed = [(p, d) for p, d in drawn if d.size >= MIN_CI_N]  # a box of two or three points says nothing: points only
    if boxed:
        ax.boxplot([d for _, d in boxed], positions=[p for p, _ in boxed], widths=0.55, showfliers=False,
                   medianprops={"color": "#c0392b"})
    for p, d in drawn:
        ax.scatter(p + rng.uniform(-0.14, 0.14, d.size), d, s=9, alpha=0.6, color="#2357a6", zorder=3)
    ax.set_xticks(positions, labels, fontsize=8)
    ax.set_xlim(0.4, len(names) + 0.6)
    ax.set_title(_plain(metric))
    ax.grid(True, axis="y", alpha=0.3)
    return png_bytes(fig)


def bland_altman(pairs_by_class: dict[str, tuple[Sequence[float], Sequence[float]]], unit: str,
                 colors: Sequence[Sequence[int]] | None = None) -> bytes | None:
    """Bland-Altman plots, one panel per class: predicted minus true volume against their mean, per case, with
    the mean difference (bias) and its 95% limits of agreement (bias ± 1.96 SD); ``None`` without data."""
    panels = [(name, np.asarray(p, float), np.asarray(t, float)) for name, (p, t) in pairs_by_class.items()]
    panels = [(n, p[np.isfinite(p) & np.isfinite(t)], t[np.isfinite(p) & np.isfinite(t)]) for n, p, t in panels]
    panels = [x for x in panels if x[1].size]
    if not panels:
        return None
    fig = Figure(figsize=(4.2 * len(panels), 3.4))
    for i, (name, pred, true) in enumerate(panels):
        ax = fig.add_subplot(1, len(panels), i + 1)
        mean, diff = (pred + true) / 2, pred - true
        color = tuple(v / 255 for v in colors[i + 1][:3]) if colors and i + 1 < len(colors) else "C0"
        ax.scatter(mean, diff, s=14, color=color, edgecolor="black", linewidth=0.3)
        bias = float(diff.mean())
        ax.axhline(bias, color="black", linewidth=1, label=f"bias {bias:.4g}")
        if diff.size >= MIN_CI_N:
            sd = float(diff.std(ddof=1))
            for sign in (-1, 1):
                ax.axhline(bias + sign * 1.96 * sd, color="gray", linestyle="--", linewidth=1)
            ax.set_title(f"{_plain(name)}: limits {bias - 1.96 * sd:.3g} to {bias + 1.96 * sd:.3g}", fontsize=9)
        else:
            ax.set_title(f"{_plain(name)} (fewer than {MIN_CI_N} cases: no limits)", fontsize=9)
        ax.axhline(0, color="#bbbbbb", linewidth=0.8)
        ax.set_xlabel(f"mean of predicted and true volume ({unit})", fontsize=8)
        ax.set_ylabel(f"predicted - true ({unit})", fontsize=8)
        ax.tick_params(labelsize=7)
        ax.legend(fontsize=7, loc="best")
    fig.tight_layout()
    return png_bytes(fig)
