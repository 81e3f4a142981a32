"""DeepLabV3+ (Chen et al. 2018, "Encoder-Decoder with Atrous Separable Convolution"), for 2D and 3D.

A ResNet-style encoder (basic residual blocks, four stages at strides 4, 8, 16
and 32) whose last stages trade striding for dilation so that the features stay
at ``output_stride`` 16 or 8; atrous spatial pyramid pooling (ASPP: a 1x1
branch, three dilated 3x3 branches and an image-pooling branch); and the V3+
decoder, which fuses the upsampled ASPP output with projected stride-4
low-level features before upsampling to the input size. Widths scale with
``features`` (64 gives ResNet-18 widths, 256 ASPP channels and a 48-channel
low-level projection as in the paper).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn
from torch.nn import functional as F

from medseg.errors import ConfigError
from medseg.models import layers as L
from medseg.models.base import SegmentationNet
from medseg.models.registry import register_model
from medseg.models.resunet import ResBlock


class ASPP(nn.Module):
    """Atrous spatial pyramid pooling (DeepLabV3).

    The image-pooling branch has no normalisation: after global pooling it sees one
    value per channel, which batch or instance norm cannot handle at batch size 1.
    """

    def __init__(self, dims: int, in_ch: int, out_ch: int, rates: Sequence[int], norm_name: str, act_name: str, dropout: float):
        super().__init__()
        self.branches = nn.ModuleList(
            [L.ConvNormAct(dims, in_ch, out_ch, 1, norm_name=norm_name, act_name=act_name)]
            + [L.ConvNormAct(dims, in_ch, out_ch, 3, dilation=int(r), norm_name=norm_name, act_name=act_name) for r in rates]
        )
        self.pool = nn.Sequential(L.adaptive_avg_pool(dims)(1), L.conv(dims)(in_ch, out_ch, 1), L.act(act_name))
        self.project = nn.Sequential(
            L.ConvNormAct(dims, out_ch * (len(rates) + 2), out_ch, 1, norm_name=norm_name, act_name=act_name),
            L.dropout(dims)(dropout) if dropout > 0 else nn.Identity(),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pooled = self.pool(x).expand(-1, -1, *x.shape[2:])
        return self.project(torch.cat([b(x) for b in self.branches] + [pooled], dim=1))


@register_model("deeplabv3plus")
class DeepLabV3Plus(SegmentationNet):
    """DeepLabV3+ with a ResNet-style encoder.

    Args:
        spatial_dims: 2 or 3.
        in_channels: input channels.
        num_classes: output channels (background included).
        features: channels of the first residual stage; stages use 1x, 2x, 4x, 8x. The ASPP
            and decoder use ``4 * features`` channels, the low-level projection ``3 * features // 4``.
        blocks: residual blocks in each of the four stages (``[2, 2, 2, 2]`` is ResNet-18).
        output_stride: 16 (last stage dilated) or 8 (last two stages dilated).
        atrous_rates: dilation rates of the three 3x3 ASPP branches (``[6, 12, 18]`` at stride 16;
            the paper doubles them at stride 8).
        norm: ``batch`` (as in the paper), ``instance``, ``group`` or ``none``.
        act: activation name.
        dropout: dropout after the ASPP projection.
    """

    def __init__(
        self,
        spatial_dims: int = 2,
        in_channels: int = 1,
        num_classes: int = 2,
        features: int = 64,
        blocks: Sequence[int] = (2, 2, 2, 2),
        output_stride: int = 16,
        atrous_rates: Sequence[int] = (6, 12, 18),
        norm: str = "batch",
        act: str = "relu",
        dropout: float = 0.0,
    ):
        super().__init__()
        if output_stride not in (8, 16):
            raise ConfigError(f"output_stride must be 8 or 16, got {output_stride}")
        if len(blocks) != 4 or min(blocks) < 1:
            raise ConfigError(f"blocks needs 4 positive entries (one per stage), got {list(blocks)}")
        if len(atrous_rates) != 3:
            raise ConfigError(f"atrous_rates needs 3 entries, got {list(atrous_rates)}")
        self.spatial_dims, self.num_classes = spatial_dims, num_classes
        self.output_stride = output_stride
        d = spatial_dims
        # stem: stride 4 (3x3 stride-2 conv, 3x3 conv, 3x3 stride-2 max pool)
        self.stem = nn.Sequential(
            L.ConvNormAct(d, in_channels, features, 3, stride=2, norm_name=norm, act_name=act),
            L.ConvNormAct(d, features, features, 3, norm_name=norm, act_name=act),
            L.max_pool(d)(3, stride=2, padding=1),
        )
        chans = [features * m for m in (1, 2, 4, 8)]
        # (stride, dilation) of stages 1-4: stride 4, 8, 16, 32 -> dilate instead past output_stride
        plan = [(1, 1), (2, 1), (2, 1), (1, 2)] if output_stride == 16 else [(1, 1), (2, 1), (1, 2), (1, 4)]
        # as in torchvision's ResNet, a dilated stage's first block keeps the previous dilation
        self.stages = nn.ModuleList()
        prev, prev_dil = features, 1
        for ch, n, (stride, dil) in zip(chans, blocks, plan):
            self.stages.append(nn.Sequential(
                ResBlock(d, prev, ch, stride=stride, dilation=prev_dil, norm_name=norm, act_name=act),
                *(ResBlock(d, ch, ch, dilation=dil, norm_name=norm, act_name=act) for _ in range(n - 1)),
            ))
            prev, prev_dil = ch, dil
        aspp_ch, low_ch = 4 * features, max(1, 3 * features // 4)
        self.aspp = ASPP(d, chans[-1], aspp_ch, atrous_rates, norm, act, dropout)
        self.low_proj = L.ConvNormAct(d, chans[0], low_ch, 1, norm_name=norm, act_name=act)
        self.decoder = nn.Sequential(
            L.ConvNormAct(d, aspp_ch + low_ch, aspp_ch, 3, norm_name=norm, act_name=act),
            L.ConvNormAct(d, aspp_ch, aspp_ch, 3, norm_name=norm, act_name=act),
        )
        self.head = L.conv(d)(aspp_ch, num_classes, 1)

    @property
    def size_divisor(self) -> tuple[int, ...]:
        return (self.output_stride,) * self.spatial_dims

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        mode = L.interp_mode(self.spatial_dims)
        low = self.stages[0](self.stem(x))
        y = low
        for stage in self.stages[1:]:
            y = stage(y)
        y = F.interpolate(self.aspp(y), size=low.shape[2:], mode=mode, align_corners=False)
        y = self.head(self.decoder(torch.cat([y, self.low_proj(low)], dim=1)))
        return F.interpolate(y, size=x.shape[2:], mode=mode, align_corners=False)
