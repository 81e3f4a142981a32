"""An exponential moving average (EMA) of a network's weights.

After every optimiser step, ``ema = d * ema + (1 - d) * weights`` (buffers are copied), with
``d = min(decay, (1 + n) / (10 + n))`` at update ``n``, so that the average does not drag the
random initial weights along for the first few hundred steps. With ``TrainConfig(ema_decay=...)``
the engine validates and saves the averaged network: it smooths the step-to-step noise of the
weights, which late in a short run is larger than what one more epoch adds.
"""

from __future__ import annotations

import copy

import torch


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
        self.updates = 0
        self.module = copy.deepcopy(model).eval()
        for p in self.module.parameters():
            p.requires_grad_(False)

    def current_decay(self) -> float:
        return min(self.decay, (1 + self.updates) / (10 + self.updates))

    @torch.no_grad()
    def update(self, model: torch.nn.Module) -> None:
        d = self.current_decay()
        for avg, new in zip(self.module.parameters(), model.parameters()):
            avg.lerp_(new.detach(), 1.0 - d)
        for avg, new in zip(self.module.buffers(), model.buffers()):
            avg.copy_(new)
        self.updates += 1
