"""The base class of every medseg network.

``forward`` pads the input up to the network's ``size_divisor`` (per axis),
runs the network and crops the logits back, so any input size works. With deep
supervision on, training-mode forward returns a list of logits, full resolution
first; eval-mode forward always returns one tensor ``(N, num_classes, *spatial)``.
"""

from __future__ import annotations

import torch
from torch import nn

from medseg.models.layers import pad_to_multiple


class SegmentationNet(nn.Module):
    spatial_dims: int
    num_classes: int

    @property
    def size_divisor(self) -> tuple[int, ...]:
        """Input sizes the network handles without padding are multiples of this, per axis."""
        return (1,) * self.spatial_dims

    def forward(self, x: torch.Tensor) -> torch.Tensor | list[torch.Tensor]:
        if x.ndim != self.spatial_dims + 2:
            raise ValueError(
                f"{type(self).__name__} (spatial_dims={self.spatial_dims}) expects input of shape "
                f"(N, C, {', '.join('XYZ'[: self.spatial_dims])}); got {tuple(x.shape)}"
            )
        x, crop = pad_to_multiple(x, self.size_divisor)
        out = self.forward_features(x)
        if isinstance(out, (list, tuple)):
            return [o[crop] if o.shape[2:] == x.shape[2:] else o for o in out]
        return out[crop]

    def forward_features(self, x: torch.Tensor) -> torch.Tensor | list[torch.Tensor]:
        raise NotImplementedError
