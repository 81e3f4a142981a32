"""Layer factories keyed by ``spatial_dims`` (after MONAI's ``layers/factories.py``).

Networks ask for ``conv(dims)``, ``norm("instance", dims, ch)`` and so on, so a
network is written once and works in 2D and 3D. ``spatial_dims`` stays a plain
int, which serialises to JSON with the rest of the constructor arguments.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from medseg.errors import ConfigError

NORMS = ("batch", "instance", "group", "none")
ACTS = ("relu", "leakyrelu", "gelu", "prelu")


def _check_dims(spatial_dims: int) -> int:
    if spatial_dims not in (2, 3):
        raise ConfigError(f"spatial_dims must be 2 or 3, got {spatial_dims!r}")
    return spatial_dims


def conv(spatial_dims: int) -> type[nn.Module]:
    return {2: nn.Conv2d, 3: nn.Conv3d}[_check_dims(spatial_dims)]


def conv_transpose(spatial_dims: int) -> type[nn.Module]:
    return {2: nn.ConvTranspose2d, 3: nn.ConvTranspose3d}[_check_dims(spatial_dims)]


def max_pool(spatial_dims: int) -> type[nn.Module]:
    return {2: nn.MaxPool2d, 3: nn.MaxPool3d}[_check_dims(spatial_dims)]


def max_unpool(spatial_dims: int) -> type[nn.Module]:
    return {2: nn.MaxUnpool2d, 3: nn.MaxUnpool3d}[_check_dims(spatial_dims)]


def avg_pool(spatial_dims: int) -> type[nn.Module]:
    return {2: nn.AvgPool2d, 3: nn.AvgPool3d}[_check_dims(spatial_dims)]


def adaptive_avg_pool(spatial_dims: int) -> type[nn.Module]:
    return {2: nn.AdaptiveAvgPool2d, 3: nn.AdaptiveAvgPool3d}[_check_dims(spatial_dims)]


def dropout(spatial_dims: int) -> type[nn.Module]:
    return {2: nn.Dropout2d, 3: nn.Dropout3d}[_check_dims(spatial_dims)]


def interp_mode(spatial_dims: int) -> str:
    return {2: "bilinear", 3: "trilinear"}[_check_dims(spatial_dims)]


def norm(name: str, spatial_dims: int, channels: int) -> nn.Module:
    """A normalisation layer by name: ``batch``, ``instance`` (affine), ``group`` or ``none``."""
    _check_dims(spatial_dims)
    if name == "batch":
        return {2: nn.BatchNorm2d, 3: nn.BatchNorm3d}[spatial_dims](channels)
    if name == "instance":
        return {2: nn.InstanceNorm2d, 3: nn.InstanceNorm3d}[spatial_dims](channels, affine=True)
    if name == "group":
        groups = next(g for g in (8, 4, 2, 1) if channels % g == 0)
        return nn.GroupNorm(groups, channels)
    if name == "none":
        return nn.Identity()
    raise ConfigError(f"unknown norm '{name}'", hint=f"choose one of: {', '.join(NORMS)}")


def act(name: str) -> nn.Module:
    if name == "relu":
        return nn.ReLU(inplace=True)
    if name == "leakyrelu":
        return nn.LeakyReLU(0.01, inplace=True)
    if name == "gelu":
        return nn.GELU()
    if name == "prelu":
        return nn.PReLU()
    raise ConfigError(f"unknown activation '{name}'", hint=f"choose one of: {', '.join(ACTS)}")


def as_tuple(value: int | Sequence[int], spatial_dims: int) -> tuple[int, ...]:
    """Broadcast an int to one value per spatial axis; check a sequence's length."""
    if isinstance(value, int):
        return (value,) * spatial_dims
    value = tuple(int(v) for v in value)
    if len(value) != spatial_dims:
        raise ConfigError(f"expected {spatial_dims} values (one per axis), got {list(value)}")
    return value


def stride_product(strides: Sequence[Sequence[int]], spatial_dims: int) -> tuple[int, ...]:
    """Total downsampling per axis of a stack of per-axis strides."""
    div = [1] * spatial_dims
    for s in strides:
        div = [d * si for d, si in zip(div, s)]
    return tuple(div)


class ConvNormAct(nn.Sequential):
    """conv → norm → activation, with 'same' padding for odd kernels."""

    def __init__(
        self,
        spatial_dims: int,
        in_ch: int,
        out_ch: int,
        kernel_size: int | Sequence[int] = 3,
        stride: int | Sequence[int] = 1,
        dilation: int = 1,
        norm_name: str = "instance",
        act_name: str = "leakyrelu",
    ):
        k = as_tuple(kernel_size, spatial_dims)
        pad = tuple(dilation * (ki // 2) for ki in k)
        layers: list[nn.Module] = [
            conv(spatial_dims)(in_ch, out_ch, k, stride=stride, padding=pad, dilation=dilation, bias=norm_name == "none"),
            norm(norm_name, spatial_dims, out_ch),
        ]
        if act_name != "none":
            layers.append(act(act_name))
        super().__init__(*layers)


def pad_to_multiple(x: torch.Tensor, divisors: Sequence[int]) -> tuple[torch.Tensor, tuple[slice, ...]]:
    """Zero-pad the spatial axes of ``x`` up to multiples of ``divisors``.

    Returns the padded tensor and the slices that crop a same-size output back.
    """
    spatial = x.shape[2:]
    target = [-(-s // d) * d for s, d in zip(spatial, divisors)]
    if list(spatial) == target:
        return x, tuple(slice(None) for _ in spatial)
    pad: list[int] = []
    for s, t in reversed(list(zip(spatial, target))):
        pad += [0, t - s]
    crop = (slice(None), slice(None)) + tuple(slice(0, s) for s in spatial)
    return nn.functional.pad(x, pad), crop
