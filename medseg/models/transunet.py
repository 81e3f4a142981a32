"""A transformer U-Net after TransUNet (Chen et al. 2021), for 2D and 3D and any input size.

A convolutional encoder downsamples to stride ``2**depth``; the bottleneck
feature map is flattened into tokens (one per voxel) and passed through a stack
of pre-norm transformer encoder layers (global self-attention); the tokens are
folded back into a feature map and a U-Net decoder with skip connections
upsamples to the input size. Position is given by a depthwise-convolution
positional encoding (CPVT, Chu et al. 2021), which works for any token count
and any number of spatial axes, so no input size is fixed at construction (as
MONAI's UNETR's learned position embedding would need).
"""

from __future__ import annotations

import torch
from torch import nn

from medseg.errors import ConfigError
from medseg.models import layers as L
from medseg.models.base import SegmentationNet
from medseg.models.registry import register_model
from medseg.models.unet import DoubleConv, Up


class TokenTransformer(nn.Module):
    """Conv positional encoding, ``layers`` pre-norm transformer encoder layers and a final LayerNorm."""

    def __init__(self, dims: int, dim: int, layers: int, heads: int, mlp_ratio: float, dropout: float):
        super().__init__()
        self.pos = L.conv(dims)(dim, dim, 3, padding=1, groups=dim)
        self.layers = nn.ModuleList(
            nn.TransformerEncoderLayer(
                dim, heads, int(dim * mlp_ratio), dropout, activation="gelu", batch_first=True, norm_first=True
            )
            for _ in range(layers)
        )
        self.norm = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.pos(x)
        shape = x.shape
        tokens = x.flatten(2).transpose(1, 2)  # (N, L, C)
        for layer in self.layers:
            tokens = layer(tokens)
        return self.norm(tokens).transpose(1, 2).reshape(shape)


@register_model("transunet")
class TransUNet(SegmentationNet):
    """Conv encoder, transformer bottleneck, U-Net decoder.

    Args:
        spatial_dims: 2 or 3.
        in_channels: input channels.
        num_classes: output channels (background included).
        features: channels of the full-resolution stage; each stage doubles it, up to ``max_features``.
        depth: downsampling steps of the conv encoder; tokens are taken at stride ``2**depth``
            (4 gives stride 16, as in TransUNet).
        max_features: cap on the channels of deep stages.
        embed_dim: transformer width (must be divisible by ``num_heads``).
        num_layers: transformer encoder layers (12 in TransUNet's ViT-B; fewer is lighter).
        num_heads: attention heads.
        mlp_ratio: hidden width of the transformer MLP relative to ``embed_dim``.
        dropout: dropout inside the transformer layers.
        norm: norm of the conv layers: ``batch``, ``instance``, ``group`` or ``none``.
        act: activation of the conv layers.
    """

    def __init__(
        self,
        spatial_dims: int = 2,
        in_channels: int = 1,
        num_classes: int = 2,
        features: int = 32,
        depth: int = 4,
        max_features: int = 320,
        embed_dim: int = 256,
        num_layers: int = 4,
        num_heads: int = 8,
        mlp_ratio: float = 4.0,
        dropout: float = 0.0,
        norm: str = "instance",
        act: str = "leakyrelu",
    ):
        super().__init__()
        if depth < 1:
            raise ConfigError(f"depth must be at least 1, got {depth}")
        if embed_dim % num_heads:
            raise ConfigError(f"embed_dim ({embed_dim}) must be divisible by num_heads ({num_heads})")
        self.spatial_dims, self.num_classes = spatial_dims, num_classes
        self.depth = depth
        d = spatial_dims
        chans = [min(features * 2**i, max_features) for i in range(depth + 1)]
        self.stem = DoubleConv(d, in_channels, chans[0], 3, norm, act)
        self.downs = nn.ModuleList(
            nn.Sequential(
                L.ConvNormAct(d, chans[i], chans[i + 1], 3, stride=2, norm_name=norm, act_name=act),
                L.ConvNormAct(d, chans[i + 1], chans[i + 1], 3, norm_name=norm, act_name=act),
            )
            for i in range(depth)
        )
        self.embed = L.conv(d)(chans[-1], embed_dim, 1)
        self.transformer = TokenTransformer(d, embed_dim, num_layers, num_heads, mlp_ratio, dropout)
        self.unembed = L.ConvNormAct(d, embed_dim, chans[-1], 1, norm_name=norm, act_name=act)
        self.ups = nn.ModuleList(
            Up(d, chans[i + 1], chans[i], chans[i], (2,) * d, 3, "transpose", norm, act) for i in reversed(range(depth))
        )
        self.head = L.conv(d)(chans[0], num_classes, 1)

    @property
    def size_divisor(self) -> tuple[int, ...]:
        return (2**self.depth,) * self.spatial_dims

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        skips = [self.stem(x)]
        for down in self.downs:
            skips.append(down(skips[-1]))
        y = self.unembed(self.transformer(self.embed(skips.pop())))
        for up in self.ups:
            y = up(y, skips.pop())
        return self.head(y)
