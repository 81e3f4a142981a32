"""Batched data augmentation on the batch's own device (CPU or GPU).

Random parameters are drawn for every sample of a batch from a seeded
``torch.Generator`` (:meth:`BatchAugment.sample`) and then applied in a few
whole-batch tensor operations (:meth:`BatchAugment.apply`): image and label go
through the same flips and the same ``grid_sample`` affine, the label with
nearest-neighbour interpolation, so they stay aligned. Works for 2D and 3D.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass
class AugmentConfig:
    """Probabilities and ranges. Set a probability to 0 to switch a transform off."""

    flip_prob: float = 0.5          # per sample and axis
    flip_axes: tuple[int, ...] | None = None  # spatial axes that may be mirrored (None = all)
    affine_prob: float = 0.3        # per sample: rotation + scaling
    rotate_deg: float = 20.0        # max rotation (in-plane for 2D; about each axis for 3D)
    scale: tuple[float, float] = (0.85, 1.2)
    intensity_prob: float = 0.2     # per sample and transform
    brightness: tuple[float, float] = (0.75, 1.25)   # multiplicative
    contrast: tuple[float, float] = (0.75, 1.25)
    gamma: tuple[float, float] = (0.7, 1.5)
    noise_std: float = 0.1


@dataclass
class AugmentParams:
    flips: torch.Tensor          # (B, D) bool
    affine: torch.Tensor | None  # (B, D, D+1) matrices for affine_grid, or None when no sample is transformed
    brightness: torch.Tensor     # (B,)  1 = unchanged
    contrast: torch.Tensor       # (B,)
    gamma: torch.Tensor          # (B,)
    noise: torch.Tensor          # (B,)  std, 0 = none


def _uniform(gen: torch.Generator, n: int, lo: float, hi: float) -> torch.Tensor:
    return lo + (hi - lo) * torch.rand(n, generator=gen)


def _rotation_matrix(angles: torch.Tensor, dims: int) -> torch.Tensor:
    """(B, dims) angles in radians → (B, dims, dims) rotation matrices (2D uses angles[:, 0])."""
    b = angles.shape[0]
    if dims == 2:
        c, s = torch.cos(angles[:, 0]), torch.sin(angles[:, 0])
        return torch.stack([torch.stack([c, -s], 1), torch.stack([s, c], 1)], 1)
    rot = torch.eye(3).repeat(b, 1, 1)
    for axis in range(3):
        c, s = torch.cos(angles[:, axis]), torch.sin(angles[:, axis])
        m = torch.eye(3).repeat(b, 1, 1)
        i, j = [a for a in range(3) if a != axis]
        m[:, i, i], m[:, i, j], m[:, j, i], m[:, j, j] = c, -s, s, c
        rot = rot @ m
    return rot


class BatchAugment:
    def __init__(self, config: AugmentConfig | None = None):
        self.config = config or AugmentConfig()

    def sample(self, batch_size: int, spatial_dims: int, generator: torch.Generator) -> AugmentParams:
        cfg, b, d = self.config, batch_size, spatial_dims
        flips = torch.rand(b, d, generator=generator) < cfg.flip_prob
        if cfg.flip_axes is not None:
            allowed = torch.zeros(d, dtype=torch.bool)
            allowed[list(cfg.flip_axes)] = True
            flips &= allowed
        affine = None
        do_affine = torch.rand(b, generator=generator) < cfg.affine_prob
        if do_affine.any():
            angles = _uniform(generator, b * d, -1, 1).view(b, d) * math.radians(cfg.rotate_deg)
            scales = _uniform(generator, b, *cfg.scale)
            mat = _rotation_matrix(angles, d) * (1.0 / scales)[:, None, None]  # grid coords: zoom in when scale > 1
            mat = torch.where(do_affine[:, None, None], mat, torch.eye(d).expand(b, d, d))
            affine = torch.cat([mat, torch.zeros(b, d, 1)], dim=2)

        def maybe(lo: float, hi: float) -> torch.Tensor:
            on = torch.rand(b, generator=generator) < cfg.intensity_prob
            return torch.where(on, _uniform(generator, b, lo, hi), torch.ones(b))

        brightness, contrast, gamma = maybe(*cfg.brightness), maybe(*cfg.contrast), maybe(*cfg.gamma)
        noise_on = torch.rand(b, generator=generator) < cfg.intensity_prob
        noise = torch.where(noise_on, _uniform(generator, b, 0, cfg.noise_std), torch.zeros(b))
        return AugmentParams(flips, affine, brightness, contrast, gamma, noise)

    def apply(self, params: AugmentParams, image: torch.Tensor, label: torch.Tensor, generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Transform ``image`` (B,C,*S) float and ``label`` (B,*S) integer together."""
        dev = image.device
        d = image.ndim - 2
        # mirroring: flip the whole batch along an axis, keep it where the sample asked for it
        for axis in range(d):
            sel = params.flips[:, axis].to(dev)
            if sel.any():
                image = torch.where(sel.view(-1, *[1] * (d + 1)), image.flip(2 + axis), image)
                label = torch.where(sel.view(-1, *[1] * d), label.flip(1 + axis), label)
        if params.affine is not None:
            # affine_grid works in (x, y[, z]) = reversed tensor-axis order; our matrices are
            # symmetric in meaning (rotation + isotropic scale), so the order only flips the angle sign.
            grid = F.affine_grid(params.affine.to(dev, image.dtype), list(image.shape), align_corners=False)
            image = F.grid_sample(image, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
            lab = F.grid_sample(label[:, None].to(image.dtype), grid, mode="nearest", padding_mode="zeros", align_corners=False)
            label = lab[:, 0].round().to(label.dtype)
        image = self._intensity(params, image, generator)
        return image, label

    def _intensity(self, p: AugmentParams, x: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        shape = (-1,) + (1,) * (x.ndim - 1)
        dev = x.device
        axes = tuple(range(1, x.ndim))
        x = x * p.brightness.to(dev).view(shape)
        mean = x.mean(dim=axes, keepdim=True)
        x = (x - mean) * p.contrast.to(dev).view(shape) + mean
        g = p.gamma.to(dev).view(shape)
        if (p.gamma != 1).any():
            lo = x.amin(dim=axes, keepdim=True)
            hi = x.amax(dim=axes, keepdim=True)
            rng = (hi - lo).clamp_min(1e-6)
            x = torch.where(g != 1, ((x - lo) / rng).clamp_min(0).pow(g) * rng + lo, x)
        if (p.noise > 0).any():
            if generator is not None and generator.device == x.device:
                noise = torch.randn(x.shape, generator=generator, device=dev, dtype=x.dtype)
            else:
                noise = torch.randn(x.shape, generator=generator, dtype=x.dtype).to(dev)
            x = x + noise * p.noise.to(dev).view(shape)
        return x

    def __call__(self, image: torch.Tensor, label: torch.Tensor, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        params = self.sample(image.shape[0], image.ndim - 2, generator)
        return self.apply(params, image, label, generator)
