"""U-Net (Ronneberger et al. 2015), written once for 2D and 3D.

The classic configuration is ``features=64, depth=4`` (64-128-256-512-1024) with
dropout at the bottleneck and transposed-convolution upsampling; ``features``
sets the width so that small runs fit a CPU. ``strides`` gives the downsampling
per stage and per axis, so that anisotropic volumes can skip pooling along a
coarse axis. Deep-supervision heads add lower-resolution outputs in training.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from medseg.errors import ConfigError
from medseg.models import layers as L
from medseg.models.base import SegmentationNet
from medseg.models.registry import register_model


class DoubleConv(nn.Sequential):
    def __init__(self, dims: int, in_ch: int, out_ch: int, kernel, norm_name: str, act_name: str, drop: float = 0.0):
        mods: list[nn.Module] = [L.ConvNormAct(dims, in_ch, out_ch, kernel, norm_name=norm_name, act_name=act_name)]
        if drop > 0:
            mods.append(L.dropout(dims)(drop))
        mods.append(L.ConvNormAct(dims, out_ch, out_ch, kernel, norm_name=norm_name, act_name=act_name))
        super().__init__(*mods)


class Up(nn.Module):
    """Upsample the deeper features, concatenate the skip, then two convolutions."""

    def __init__(self, dims: int, in_ch: int, skip_ch: int, out_ch: int, stride, kernel, upsample: str, norm_name, act_name):
        super().__init__()
        if upsample == "transpose":
            self.up = L.conv_transpose(dims)(in_ch, out_ch, stride, stride=stride)
        elif upsample == "interp":
            self.up = nn.Sequential(
                nn.Upsample(scale_factor=tuple(float(s) for s in stride), mode=L.interp_mode(dims), align_corners=False),
                L.conv(dims)(in_ch, out_ch, 1),
            )
        else:
            raise ConfigError(f"unknown upsample '{upsample}'", hint="choose 'transpose' or 'interp'")
        self.conv = DoubleConv(dims, out_ch + skip_ch, out_ch, kernel, norm_name, act_name)

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        return self.conv(torch.cat([self.up(x), skip], dim=1))


class UNetDecoder(nn.Module):
    """The U-Net family's upsampling path, from the encoder's skips to logits.

    ``chans[i]`` and ``strides[i]`` describe encoder stage ``i`` (stride ``i`` leads from
    stage ``i`` to ``i + 1``). With ``deep_supervision``, 1x1 heads on the lower decoder
    outputs make training-mode forward return ``[full resolution, half, quarter, ...]``.
    """

    def __init__(self, dims: int, chans: Sequence[int], strides: Sequence[tuple[int, ...]], kernels: Sequence,
                 num_classes: int, upsample: str, norm_name: str, act_name: str, deep_supervision: bool = False):
        super().__init__()
        n = len(strides)
        self.deep_supervision = deep_supervision
        self.ups = nn.ModuleList(
            Up(dims, chans[i + 1], chans[i], chans[i], strides[i], kernels[i], upsample, norm_name, act_name)
            for i in reversed(range(n))
        )
        self.head = L.conv(dims)(chans[0], num_classes, 1)
        self.ds_heads = nn.ModuleList(
            L.conv(dims)(chans[i], num_classes, 1) for i in range(1, n)
        ) if deep_supervision else nn.ModuleList()

    def forward(self, skips: list[torch.Tensor]) -> torch.Tensor | list[torch.Tensor]:
        skips = list(skips)
        y = skips.pop()
        decoded = []
        for up in self.ups:
            y = up(y, skips.pop())
            decoded.append(y)
        out = self.head(y)
        if self.deep_supervision and self.training:
            # decoded[-1] is full resolution, decoded[-2] half, ...
            return [out, *(head(decoded[-1 - i]) for i, head in enumerate(self.ds_heads, start=1))]
        return out


@register_model("unet")
class UNet(SegmentationNet):
    """Classic U-Net.

    Args:
        spatial_dims: 2 or 3.
        in_channels: input channels (1 for grayscale/CT/MRI, 3 for RGB).
        num_classes: output channels (background included).
        features: channels of the first stage; each stage doubles it, up to ``max_features``.
        depth: number of downsampling steps (4 in the classic U-Net).
        max_features: cap on the channels of deep stages.
        strides: per-stage downsampling, an int or one value per axis for each of ``depth`` stages.
        kernel_sizes: per-stage kernel sizes (``depth + 1`` entries), int or per axis; default 3.
        norm: ``batch``, ``instance``, ``group`` or ``none``.
        act: activation name.
        dropout: dropout rate at the bottleneck (the classic U-Net uses 0.5).
        upsample: ``transpose`` (classic) or ``interp`` (interpolation then 1x1 conv).
        deep_supervision: add 1x1 heads on decoder stages; training forward returns a list.
    """

    def __init__(
        self,
        spatial_dims: int = 2,
        in_channels: int = 1,
        num_classes: int = 2,
        features: int = 64,
        depth: int = 4,
        max_features: int = 1024,
        strides: Sequence[int | Sequence[int]] | None = None,
        kernel_sizes: Sequence[int | Sequence[int]] | None = None,
        norm: str = "instance",
        act: str = "leakyrelu",
        dropout: float = 0.0,
        upsample: str = "transpose",
        deep_supervision: bool = False,
    ):
        super().__init__()
        if depth < 1:
            raise ConfigError(f"depth must be at least 1, got {depth}")
        self.spatial_dims, self.num_classes = spatial_dims, num_classes
        self.deep_supervision = deep_supervision
        strides = [2] * depth if strides is None else list(strides)
        kernels = [3] * (depth + 1) if kernel_sizes is None else list(kernel_sizes)
        if len(strides) != depth or len(kernels) != depth + 1:
            raise ConfigError(f"need {depth} strides and {depth + 1} kernel sizes for depth {depth}")
        self.strides = [L.as_tuple(s, spatial_dims) for s in strides]
        kernels = [L.as_tuple(k, spatial_dims) for k in kernels]
        chans = [min(features * 2**i, max_features) for i in range(depth + 1)]

        self.stem = DoubleConv(spatial_dims, in_channels, chans[0], kernels[0], norm, act)
        self.pools = nn.ModuleList(L.max_pool(spatial_dims)(s, s) for s in self.strides)
        self.downs = nn.ModuleList(
            DoubleConv(spatial_dims, chans[i], chans[i + 1], kernels[i + 1], norm, act, drop=dropout if i == depth - 1 else 0.0)
            for i in range(depth)
        )
        self.decoder = UNetDecoder(spatial_dims, chans, self.strides, kernels, num_classes, upsample, norm, act, deep_supervision)

    @property
    def size_divisor(self) -> tuple[int, ...]:
        return L.stride_product(self.strides, self.spatial_dims)

    def forward_features(self, x: torch.Tensor):
        skips = [self.stem(x)]
        for pool, down in zip(self.pools, self.downs):
            skips.append(down(pool(skips[-1])))
        return self.decoder(skips)
