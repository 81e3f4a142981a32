"""Overlap metrics from a confusion matrix: Dice, IoU, pixel accuracy.

Shapes and conventions:

- ``pred`` and ``target`` are integer label maps of the same shape, any number
  of dims (``(H, W)``, ``(D, H, W)`` or batched); values are class ids ``0..K-1``.
- ``mask`` (optional, same shape, bool) restricts the evaluation, e.g. to a
  retinal field of view; pixels outside it are ignored entirely.
- Per-class Dice and IoU are ``NaN`` when the class is absent from both
  prediction and truth (nothing to find, nothing found): such cases are left out
  of means rather than counted as 1 or 0. A class present in only one of them
  scores 0.
"""

from __future__ import annotations

import numpy as np
import torch


def confusion_matrix(pred, target, num_classes: int, mask=None) -> np.ndarray:
    """``(K, K)`` int64 counts, rows = truth, columns = prediction."""
    p = torch.as_tensor(np.asarray(pred) if not torch.is_tensor(pred) else pred).reshape(-1).long()
    t = torch.as_tensor(np.asarray(target) if not torch.is_tensor(target) else target).reshape(-1).long()
    if p.shape != t.shape:
        raise ValueError(f"pred and target differ in size: {tuple(p.shape)} vs {tuple(t.shape)}")
    if mask is not None:
        m = torch.as_tensor(np.asarray(mask) if not torch.is_tensor(mask) else mask).reshape(-1).bool()
        p, t = p[m.to(p.device)], t[m.to(t.device)]
    cm = torch.bincount(t * num_classes + p, minlength=num_classes * num_classes)
    return cm.reshape(num_classes, num_classes).cpu().numpy().astype(np.int64)


def scores_from_confusion(cm: np.ndarray) -> dict[str, np.ndarray | float]:
    """Per-class ``dice`` and ``iou`` (arrays of length K) and overall ``accuracy``."""
    cm = cm.astype(np.float64)
    tp = np.diag(cm)
    fp = cm.sum(0) - tp
    fn = cm.sum(1) - tp
    with np.errstate(invalid="ignore", divide="ignore"):
        dice = np.where(2 * tp + fp + fn > 0, 2 * tp / (2 * tp + fp + fn), np.nan)
        iou = np.where(tp + fp + fn > 0, tp / (tp + fp + fn), np.nan)
    total = cm.sum()
    return {"dice": dice, "iou": iou, "accuracy": float(tp.sum() / total) if total else float("nan")}


class OverlapMetric:
    """Stateful per-class Dice/IoU/accuracy, accumulated over batches.

    ``update(pred, target, mask=None)`` once per batch or image (shapes as in the
    module docstring); ``aggregate()`` returns the pooled scores (all pixels of
    all updates together); ``reset()`` clears. For per-image means, compute one
    :func:`scores_from_confusion` per image instead.
    """

    def __init__(self, num_classes: int):
        self.num_classes = num_classes
        self.reset()

    def reset(self) -> None:
        self.cm = np.zeros((self.num_classes, self.num_classes), dtype=np.int64)

    def update(self, pred, target, mask=None) -> np.ndarray:
        """Add one batch or image; returns its own confusion matrix (for per-image scores)."""
        cm = confusion_matrix(pred, target, self.num_classes, mask)
        self.cm += cm
        return cm

    def aggregate(self) -> dict[str, np.ndarray | float]:
        return scores_from_confusion(self.cm)


def mean_foreground(values: np.ndarray) -> float:
    """Mean over classes 1..K-1 ignoring NaN; NaN when all are NaN."""
    fg = np.asarray(values, dtype=np.float64)[1:]
    fg = fg[~np.isnan(fg)]
    return float(fg.mean()) if fg.size else float("nan")
