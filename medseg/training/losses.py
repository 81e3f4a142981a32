"""Cross-entropy + soft Dice (MONAI's ``DiceCELoss``), with optional deep supervision.

``logits``: ``(N, K, *S)`` (or a list of them, full resolution first, for deep supervision);
``target``: ``(N, *S)`` integer class ids. Dice is the batch soft Dice over the foreground classes
(background excluded, smoothing 1e-5), as in nnU-Net; losses are computed in float32.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from monai.losses import DiceCELoss as _DiceCE
from monai.losses import DiceLoss
from torch import nn

SMOOTH = 1e-5


def soft_dice_loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """1 - the batch soft Dice of ``softmax(logits)`` over the foreground classes; ``target`` ``(N, *S)`` class ids."""
    return DiceLoss(include_background=False, to_onehot_y=True, softmax=True, batch=True, smooth_nr=SMOOTH,
                    smooth_dr=SMOOTH)(logits.float(), target[:, None].long())


class DiceCELoss(nn.Module):
    def __init__(self, dice_weight: float = 1.0, ce_weight: float = 1.0):
        super().__init__()
        self.loss = _DiceCE(include_background=False, to_onehot_y=True, softmax=True, batch=True, smooth_nr=SMOOTH,
                            smooth_dr=SMOOTH, lambda_dice=dice_weight, lambda_ce=ce_weight)

    def single(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return self.loss(logits.float(), target[:, None].long())

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
