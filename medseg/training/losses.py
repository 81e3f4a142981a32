"""Cross-entropy + soft Dice, with optional deep supervision.

``logits``: ``(N, K, *S)`` (or a list of them, full resolution first, for deep
supervision); ``target``: ``(N, *S)`` integer class ids. Dice is the batch soft
Dice over foreground classes (background excluded), as in nnU-Net.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def soft_dice_loss(logits: torch.Tensor, target: torch.Tensor, smooth: float = 1e-5) -> torch.Tensor:
    k = logits.shape[1]
    probs = logits.float().softmax(1)
    onehot = F.one_hot(target.long(), k).movedim(-1, 1).to(probs.dtype)
    dims = (0,) + tuple(range(2, logits.ndim))
    inter = (probs * onehot).sum(dims)
    denom = probs.sum(dims) + onehot.sum(dims)
    dice = (2 * inter + smooth) / (denom + smooth)
    return 1 - dice[1:].mean() if k > 1 else 1 - dice.mean()


class DiceCELoss(nn.Module):
    def __init__(self, dice_weight: float = 1.0, ce_weight: float = 1.0):
        super().__init__()
        self.dice_weight, self.ce_weight = dice_weight, ce_weight

    def single(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        ce = F.cross_entropy(logits.float(), target.long())
        return self.ce_weight * ce + self.dice_weight * soft_dice_loss(logits, target)

    def forward(self, logits, target: torch.Tensor) -> torch.Tensor:
        if not isinstance(logits, (list, tuple)):
            return self.single(logits, target)
        # deep supervision: weights 1, 1/2, 1/4, ... normalised; targets downsampled by nearest
        weights = torch.tensor([0.5**i for i in range(len(logits))])
        weights = weights / weights.sum()
        total = 0.0
        for w, out in zip(weights.tolist(), logits):
            t = target
            if out.shape[2:] != target.shape[1:]:
                t = F.interpolate(target[:, None].float(), size=out.shape[2:], mode="nearest")[:, 0].long()
            total = total + w * self.single(out, t)
        return total
