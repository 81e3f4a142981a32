"""SegNet (Badrinarayanan, Kendall & Cipolla 2017), for 2D and 3D.

An encoder of conv blocks, each closed by 2x max pooling that also returns the
argmax indices; a mirrored decoder that upsamples with max-unpooling at those
indices (the SegNet idea: no learned upsampling and no skip feature maps, only
the pooling positions are passed across), each followed by a conv block.
"""

from __future__ import annotations

import torch
from torch import nn

from medseg.errors import ConfigError
from medseg.models import layers as L
from medseg.models.base import SegmentationNet
from medseg.models.registry import register_model


def _block(dims: int, in_ch: int, out_ch: int, n: int, norm_name: str, act_name: str) -> nn.Sequential:
    """``n`` 3x3 ConvNormAct layers; the first maps ``in_ch`` to ``out_ch``."""
    return nn.Sequential(
        *(L.ConvNormAct(dims, in_ch if i == 0 else out_ch, out_ch, 3, norm_name=norm_name, act_name=act_name) for i in range(n))
    )


@register_model("segnet")
class SegNet(SegmentationNet):
    """SegNet encoder-decoder with max-unpooling.

    Args:
        spatial_dims: 2 or 3.
        in_channels: input channels.
        num_classes: output channels (background included).
        features: channels of the first stage; each stage doubles it, up to ``max_features``.
        depth: number of pooling stages (5 in the paper, on VGG-16).
        max_features: cap on the channels of deep stages.
        convs_per_stage: 3x3 convolutions per encoder and decoder stage.
        norm: ``batch`` (as in the paper), ``instance``, ``group`` or ``none``.
        act: activation name.
    """

    def __init__(
        self,
        spatial_dims: int = 2,
        in_channels: int = 1,
        num_classes: int = 2,
        features: int = 64,
        depth: int = 5,
        max_features: int = 512,
        convs_per_stage: int = 2,
        norm: str = "batch",
        act: str = "relu",
    ):
        super().__init__()
        if depth < 1 or convs_per_stage < 1:
            raise ConfigError(f"depth and convs_per_stage must be at least 1, got {depth} and {convs_per_stage}")
        self.spatial_dims, self.num_classes = spatial_dims, num_classes
        self.depth = depth
        d = spatial_dims
        chans = [min(features * 2**i, max_features) for i in range(depth)]
        self.encoders = nn.ModuleList(
            _block(d, in_channels if i == 0 else chans[i - 1], chans[i], convs_per_stage, norm, act) for i in range(depth)
        )
        self.pool = L.max_pool(d)(2, 2, return_indices=True)
        self.unpool = L.max_unpool(d)(2, 2)
        # decoder stage i (deepest first) maps chans[i] back to chans[i - 1] (chans[0] at the top)
        self.decoders = nn.ModuleList(
            _block(d, chans[i], chans[max(i - 1, 0)], convs_per_stage, norm, act) for i in reversed(range(depth))
        )
        self.head = L.conv(d)(chans[0], num_classes, 1)

    @property
    def size_divisor(self) -> tuple[int, ...]:
        return (2**self.depth,) * self.spatial_dims

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        pooled = []  # (indices, pre-pool size) per stage
        for enc in self.encoders:
            x = enc(x)
            size = x.shape[2:]
            x, idx = self.pool(x)
            pooled.append((idx, size))
        for dec in self.decoders:
            idx, size = pooled.pop()
            x = dec(self.unpool(x, idx, output_size=size))
        return self.head(x)
