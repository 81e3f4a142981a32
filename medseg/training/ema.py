"""An exponential moving average (EMA) of a network's weights, kept by PyTorch's
:class:`torch.optim.swa_utils.AveragedModel`.

The average starts as a copy of the network; update ``n`` (``n`` updates before it) makes
``ema = d * ema + (1 - d) * weights`` with ``d = min(decay, (1 + n) / (10 + n))``, so that the average
does not drag the initial weights along for the first few hundred steps; buffers are copied. (The
copy counts as the averaged model's first sample, so its ``n_averaged`` is ``updates + 1``.) With
``TrainConfig(ema_decay=...)`` the engine validates and saves the averaged network: it smooths the
step-to-step noise of the weights, which late in a short run is larger than what one more epoch adds.
"""

from __future__ import annotations

import torch
from torch.optim.swa_utils import AveragedModel


class WeightEMA:
    """The averaged copy of ``model`` (``module``), updated by :meth:`update`.

    Args:
        model: the network being trained (its plain module, not a DDP/compile wrapper).
        decay: the largest per-step decay, in (0, 1); the average spans about ``1 / (1 - decay)`` steps.
    """

    def __init__(self, model: torch.nn.Module, decay: float):
        if not 0.0 < decay < 1.0:
            raise ValueError(f"EMA decay must be in (0, 1), got {decay}")
        self.decay = decay
        self.averaged = AveragedModel(model, avg_fn=self._average, use_buffers=False)
        self.averaged.n_averaged.fill_(1)  # the copy of the initial weights is the first sample
        self.averaged.eval()
        for p in self.averaged.parameters():
            p.requires_grad_(False)

    def _average(self, avg: torch.Tensor, new: torch.Tensor, n_averaged: torch.Tensor) -> torch.Tensor:
        n = int(n_averaged) - 1  # updates before this one
        d = min(self.decay, (1 + n) / (10 + n))
        return torch.lerp(avg, new, 1.0 - d)

    @property
    def module(self) -> torch.nn.Module:
        """The averaged network (validated and saved)."""
        return self.averaged.module

    @property
    def updates(self) -> int:
        return int(self.averaged.n_averaged) - 1

    @updates.setter
    def updates(self, n: int) -> None:  # restored from a checkpoint
        self.averaged.n_averaged.fill_(int(n) + 1)

    @torch.no_grad()
    def update(self, model: torch.nn.Module) -> None:
        self.averaged.update_parameters(model)
        for avg, new in zip(self.module.buffers(), model.buffers()):
            avg.copy_(new)
