"""FCN-8s (Long, Shelhamer & Darrell 2015, "Fully Convolutional Networks"), for 2D and 3D.

A VGG-like encoder of five conv stages, each closed by 2x max pooling (strides
2 ... 32), then the former fully connected layers as convolutions. Class scores
are predicted at strides 32, 16 and 8 (``fc7``, ``pool4``, ``pool3``) and fused
coarse to fine: upsample 2x and add, twice, then upsample 8x to the input.
The upsampling layers are transposed convolutions initialised to bilinear
interpolation and the skip score layers start at zero, as in the paper, so
training begins from the stride-32 prediction.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from medseg.errors import ConfigError
from medseg.models import layers as L
from medseg.models.base import SegmentationNet
from medseg.models.registry import register_model


def bilinear_upsampler(dims: int, channels: int, factor: int) -> nn.Module:
    """A transposed conv that upsamples by ``factor`` per axis, initialised to (bi/tri)linear interpolation."""
    k = 2 * factor
    up = L.conv_transpose(dims)(channels, channels, k, stride=factor, padding=factor // 2, bias=False)
    center = factor - 0.5
    filt1d = 1 - (torch.arange(k, dtype=torch.float32, device=up.weight.device) - center).abs() / factor
    filt = filt1d
    for _ in range(dims - 1):
        filt = filt.unsqueeze(-1) * filt1d
    with torch.no_grad():
        up.weight.zero_()
        for c in range(channels):
            up.weight[c, c] = filt
    return up


@register_model("fcn")
class FCN(SegmentationNet):
    """FCN-8s on a VGG-style encoder.

    Args:
        spatial_dims: 2 or 3.
        in_channels: input channels.
        num_classes: output channels (background included).
        features: channels of the first stage; stages use 1x, 2x, 4x, 8x, 8x (VGG-16 at 64).
        convs_per_stage: convolutions in each of the five stages (VGG-16: ``[2, 2, 3, 3, 3]``).
        fc_features: channels of the two convolutional "fully connected" layers
            (default ``16 * features``; VGG-16 has 4096).
        norm: ``batch`` (VGG-BN), ``instance``, ``group`` or ``none`` (the original VGG).
        act: activation name.
        dropout: dropout after each "fully connected" layer (0.5 in the paper).
    """

    def __init__(
        self,
        spatial_dims: int = 2,
        in_channels: int = 1,
        num_classes: int = 2,
        features: int = 64,
        convs_per_stage: Sequence[int] = (2, 2, 3, 3, 3),
        fc_features: int | None = None,
        norm: str = "batch",
        act: str = "relu",
        dropout: float = 0.0,
    ):
        super().__init__()
        if len(convs_per_stage) != 5 or min(convs_per_stage) < 1:
            raise ConfigError(f"convs_per_stage needs 5 positive entries, got {list(convs_per_stage)}")
        self.spatial_dims, self.num_classes = spatial_dims, num_classes
        d = spatial_dims
        chans = [features * m for m in (1, 2, 4, 8, 8)]
        fc = fc_features or 16 * features
        self.stages = nn.ModuleList()
        prev = in_channels
        for ch, n in zip(chans, convs_per_stage):
            convs = [L.ConvNormAct(d, prev if i == 0 else ch, ch, 3, norm_name=norm, act_name=act) for i in range(n)]
            self.stages.append(nn.Sequential(*convs, L.max_pool(d)(2, 2)))
            prev = ch

        def drop() -> nn.Module:
            return L.dropout(d)(dropout) if dropout > 0 else nn.Identity()

        self.fc = nn.Sequential(
            L.ConvNormAct(d, chans[4], fc, 3, norm_name=norm, act_name=act), drop(),
            L.ConvNormAct(d, fc, fc, 1, norm_name=norm, act_name=act), drop(),
        )
        self.score_fr = L.conv(d)(fc, num_classes, 1)
        self.score_pool4 = L.conv(d)(chans[3], num_classes, 1)
        self.score_pool3 = L.conv(d)(chans[2], num_classes, 1)
        for m in (self.score_pool4, self.score_pool3):
            nn.init.zeros_(m.weight)
            nn.init.zeros_(m.bias)
        self.up2_fr = bilinear_upsampler(d, num_classes, 2)
        self.up2_pool4 = bilinear_upsampler(d, num_classes, 2)
        self.up8 = bilinear_upsampler(d, num_classes, 8)

    @property
    def size_divisor(self) -> tuple[int, ...]:
        return (32,) * self.spatial_dims

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        feats = []
        for stage in self.stages:
            x = stage(x)
            feats.append(x)
        pool3, pool4 = feats[2], feats[3]
        y = self.up2_fr(self.score_fr(self.fc(x)))  # stride 32 -> 16
        y = self.up2_pool4(y + self.score_pool4(pool4))  # stride 16 -> 8
        return self.up8(y + self.score_pool3(pool3))  # stride 8 -> 1
