"""Residual-encoder U-Net (nnU-Net "ResEnc", Isensee et al. 2024), for 2D and 3D.

The encoder of a U-Net is replaced by a ResNet-style one: every stage is a
strided convolution followed by ``blocks_per_stage[i]`` basic residual blocks
(He et al. 2016). The decoder is the plain U-Net one (transposed convolution,
concatenation of the skip, two convolutions). nnU-Net's ResEnc-M preset is
``features=32, blocks_per_stage=[1, 3, 4, 6, 6, 6]`` with channels capped at 320.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from medseg.errors import ConfigError
from medseg.models import layers as L
from medseg.models.base import SegmentationNet
from medseg.models.registry import register_model
from medseg.models.unet import UNetDecoder


class ResBlock(nn.Module):
    """Basic residual block: two 3x3 convs and a (projected) identity shortcut.

    Also used by the DeepLabV3+ encoder, hence ``stride`` and ``dilation``.
    """

    def __init__(self, dims: int, in_ch: int, out_ch: int, kernel=3, stride=1, dilation: int = 1,
                 norm_name: str = "instance", act_name: str = "leakyrelu"):
        super().__init__()
        self.conv1 = L.ConvNormAct(dims, in_ch, out_ch, kernel, stride, dilation, norm_name, act_name)
        self.conv2 = L.ConvNormAct(dims, out_ch, out_ch, kernel, 1, dilation, norm_name, "none")
        strided = any(s != 1 for s in L.as_tuple(stride, dims))
        if in_ch != out_ch or strided:
            self.shortcut = nn.Sequential(
                L.conv(dims)(in_ch, out_ch, 1, stride=stride, bias=norm_name == "none"), L.norm(norm_name, dims, out_ch)
            )
        else:
            self.shortcut = nn.Identity()
        self.act = L.act(act_name)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.conv2(self.conv1(x)) + self.shortcut(x))


@register_model("resunet")
class ResUNet(SegmentationNet):
    """U-Net with a residual encoder (nnU-Net ResEnc style).

    Args:
        spatial_dims: 2 or 3.
        in_channels: input channels.
        num_classes: output channels (background included).
        features: channels of the first stage; each stage doubles it, up to ``max_features``.
        blocks_per_stage: residual blocks per encoder stage; its length is the number of
            stages (downsampling steps = length - 1).
        max_features: cap on the channels of deep stages (320 in nnU-Net).
        strides: downsampling of stages 1.. (``len(blocks_per_stage) - 1`` entries, int or per axis);
            default 2 everywhere.
        kernel_sizes: kernel size per stage (``len(blocks_per_stage)`` entries); default 3.
        norm: ``batch``, ``instance``, ``group`` or ``none``.
        act: activation name.
        upsample: ``transpose`` or ``interp`` (see :class:`medseg.models.unet.Up`).
        deep_supervision: add 1x1 heads on decoder stages; training forward returns a list,
            full resolution first.
        depth: downsampling steps, if given: ``blocks_per_stage`` is cut to ``depth + 1`` stages (or extended
            with its last entry), as ``--depth`` does for the U-Net.
    """

    def __init__(
        self,
        spatial_dims: int = 2,
        in_channels: int = 1,
        num_classes: int = 2,
        features: int = 32,
        blocks_per_stage: Sequence[int] = (1, 3, 4, 6, 6, 6),
        max_features: int = 320,
        strides: Sequence[int | Sequence[int]] | None = None,
        kernel_sizes: Sequence[int | Sequence[int]] | None = None,
        norm: str = "instance",
        act: str = "leakyrelu",
        upsample: str = "transpose",
        deep_supervision: bool = False,
        depth: int | None = None,
    ):
        super().__init__()
        blocks = [int(b) for b in blocks_per_stage]
        if depth is not None:
            if depth < 1:
                raise ConfigError(f"depth must be at least 1, got {depth}")
            blocks = (blocks + [blocks[-1]] * depth)[: depth + 1]
        n = len(blocks)
        if n < 2 or min(blocks) < 0:
            raise ConfigError(f"blocks_per_stage needs at least 2 non-negative entries, got {list(blocks_per_stage)}")
        self.spatial_dims, self.num_classes = spatial_dims, num_classes
        self.deep_supervision = deep_supervision
        strides = [2] * (n - 1) if strides is None else list(strides)
        kernels = [3] * n if kernel_sizes is None else list(kernel_sizes)
        if len(strides) != n - 1 or len(kernels) != n:
            raise ConfigError(f"need {n - 1} strides and {n} kernel sizes for {n} stages")
        self.strides = [L.as_tuple(s, spatial_dims) for s in strides]
        kernels = [L.as_tuple(k, spatial_dims) for k in kernels]
        chans = [min(features * 2**i, max_features) for i in range(n)]

        stage_strides = [(1,) * spatial_dims, *self.strides]
        self.stages = nn.ModuleList()
        for i in range(n):
            prev = in_channels if i == 0 else chans[i - 1]
            self.stages.append(nn.Sequential(
                L.ConvNormAct(spatial_dims, prev, chans[i], kernels[i], stage_strides[i], norm_name=norm, act_name=act),
                *(ResBlock(spatial_dims, chans[i], chans[i], kernels[i], norm_name=norm, act_name=act) for _ in range(blocks[i])),
            ))
        self.decoder = UNetDecoder(spatial_dims, chans, self.strides, kernels, num_classes, upsample, norm, act, deep_supervision)

    @property
    def size_divisor(self) -> tuple[int, ...]:
        return L.stride_product(self.strides, self.spatial_dims)

    def forward_features(self, x: torch.Tensor):
        skips = []
        for stage in self.stages:
            x = stage(x)
            skips.append(x)
        return self.decoder(skips)
