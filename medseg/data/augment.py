"""Batched data augmentation on the batch's own device (CPU or GPU), for 2D and 3D.

Two stages, as in TorchIO: :meth:`BatchAugment.sample` draws every sample's
parameters from a seeded ``torch.Generator`` (small CPU tensors, in a fixed
order, so a seed gives the same parameters whatever the device), and
:meth:`BatchAugment.apply` applies them with a few whole-batch tensor
operations on the batch's device. ``apply`` is a pure function of the
parameters: the noise field is drawn from a seed held in them.

Spatial transforms go through **one** ``grid_sample`` for the samples that need
one: mirroring, rotation, scaling and an optional elastic deformation (a smooth
random displacement field: random vectors on a coarse grid of control points,
upsampled linearly) are folded into a single sampling grid. Samples that are
only mirrored are flipped exactly, without interpolation. Image and label go
through the same grid, the label by nearest neighbour or, with
``label_interp="onehot"``, by linear interpolation of its one-hot encoding
followed by argmax, so they stay aligned. Rotations and scalings are made in
voxel space (or in physical space when ``spacing`` is given), so they stay
rigid on non-cubic patches.

Intensity transforms (per sample, in this order): Gaussian noise, Gaussian blur,
brightness (multiplicative), contrast, low-resolution simulation (nearest
downsampling, linear upsampling) and gamma.

Shapes: ``image`` ``(B, C, *S)`` float, ``label`` ``(B, *S)`` integer; ``S`` has
2 or 3 axes in tensor order. Axis numbers in the config are spatial axes
(0 = the first spatial axis).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, fields

import torch
import torch.nn.functional as F

LABEL_INTERP = ("nearest", "onehot")


@dataclass
class AugmentConfig:
    """Probabilities (per sample) and ranges. A probability of 0 switches a transform off.

    Attributes:
        flip_prob: probability of mirroring, per sample and allowed axis.
        flip_axes: spatial axes that may be mirrored (``None``: all). Thick-slice data may exclude
            the slice axis, so that anatomy is only mirrored where the network sees it at full resolution.
        affine_prob: probability of a rotation + scaling.
        rotate_deg: largest rotation angle (2D in-plane; 3D about each axis of ``rotate_axes``).
        rotate_axes: 3D: the axes rotated about (``None``: all three); e.g. ``[2]`` rotates in-plane only.
        scale: range of the isotropic zoom factor (> 1 zooms in).
        spacing: voxel spacing (tensor axis order) so that rotations are rigid in physical space;
            ``None``: isotropic voxels.
        elastic_prob: probability of an elastic deformation.
        elastic_magnitude: range of the standard deviation of the displacement, in voxels.
        elastic_points: control points per axis of the coarse displacement grid (smaller = smoother).
        label_interp: ``nearest`` or ``onehot`` (smoother borders, K times the sampling work).
        intensity_prob: probability of each of brightness, contrast, gamma and noise.
        brightness, contrast, gamma: ranges of the factors (1 = unchanged).
        noise_std: largest standard deviation of the additive Gaussian noise, relative to the sample's
            own standard deviation (so it means the same for z-scored and 0..1-scaled images).
        blur_prob, blur_sigma: probability and range of the Gaussian blur's sigma (voxels).
        lowres_prob, lowres_zoom: probability and range of the downsampling factor of the
            low-resolution simulation.
    """

    flip_prob: float = 0.5
    flip_axes: Sequence[int] | None = None
    affine_prob: float = 0.3
    rotate_deg: float = 20.0
    rotate_axes: Sequence[int] | None = None
    scale: tuple[float, float] = (0.85, 1.2)
    spacing: Sequence[float] | None = None
    elastic_prob: float = 0.0
    elastic_magnitude: tuple[float, float] = (1.0, 3.0)
    elastic_points: int = 5
    label_interp: str = "nearest"
    intensity_prob: float = 0.2
    brightness: tuple[float, float] = (0.75, 1.25)
    contrast: tuple[float, float] = (0.75, 1.25)
    gamma: tuple[float, float] = (0.7, 1.5)
    noise_std: float = 0.1
    blur_prob: float = 0.1
    blur_sigma: tuple[float, float] = (0.5, 1.0)
    lowres_prob: float = 0.1
    lowres_zoom: tuple[float, float] = (0.5, 1.0)

    def __post_init__(self) -> None:
        if self.label_interp not in LABEL_INTERP:
            raise ValueError(f"label_interp must be one of {LABEL_INTERP}, got {self.label_interp!r}")

    @classmethod
    def from_dict(cls, d: dict) -> "AugmentConfig":
        known = {f.name for f in fields(cls)}
        return cls(**{k: (tuple(v) if isinstance(v, list) else v) for k, v in d.items() if k in known})


@dataclass
class AugmentParams:
    """Every sample's parameters (CPU tensors; ``B`` samples, ``D`` spatial axes)."""

    shape: tuple[int, ...]       # the spatial shape they were drawn for
    flips: torch.Tensor          # (B, D) bool
    matrix: torch.Tensor         # (B, D, D) output → input normalised coordinates (tensor axis order)
    elastic: torch.Tensor        # (B, D, *points) coarse displacement in voxels (zeros where off)
    spatial: torch.Tensor        # (B,) bool: the sample needs the sampling grid (rotation/scaling/elastic)
    noise: torch.Tensor          # (B,) standard deviation, 0 = none
    blur: torch.Tensor           # (B,) sigma in voxels, 0 = none
    brightness: torch.Tensor     # (B,) factor, 1 = none
    contrast: torch.Tensor       # (B,)
    lowres: torch.Tensor         # (B,) zoom, 1 = none
    gamma: torch.Tensor          # (B,)
    seed: int                    # of the noise field


def _uniform(gen: torch.Generator, shape, lo: float, hi: float) -> torch.Tensor:
    return lo + (hi - lo) * torch.rand(shape, generator=gen)


def rotation_matrices(angles: torch.Tensor, dims: int) -> torch.Tensor:
    """``(B, 3)`` angles in radians (2D: column 0) → ``(B, dims, dims)`` rotations (3D: about axes 0, 1, 2 in turn)."""
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


def _axis_mask(axes: Sequence[int] | None, dims: int) -> torch.Tensor:
    mask = torch.ones(dims, dtype=torch.bool)
    if axes is not None:
        mask[:] = False
        mask[[int(a) for a in axes if int(a) < dims]] = True
    return mask


def _base_grid(shape: Sequence[int], device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """Voxel centres in normalised coordinates (``align_corners=False``), ``(*S, D)`` in tensor axis order."""
    axes = [(torch.arange(n, device=device, dtype=dtype) * 2 + 1) / n - 1 for n in shape]
    return torch.stack(torch.meshgrid(*axes, indexing="ij"), dim=-1)


def _gaussian_kernels(sigmas: torch.Tensor, radius: int) -> torch.Tensor:
    """``(n,)`` sigmas → ``(n, 2 * radius + 1)`` normalised 1D Gaussian kernels."""
    x = torch.arange(-radius, radius + 1, dtype=sigmas.dtype, device=sigmas.device)
    k = torch.exp(-0.5 * (x[None] / sigmas[:, None].clamp_min(1e-3)) ** 2)
    return k / k.sum(1, keepdim=True)


def gaussian_blur(x: torch.Tensor, sigmas: torch.Tensor) -> torch.Tensor:
    """Blur each sample of ``x`` ``(n, C, *S)`` with its own isotropic sigma (voxels), separably."""
    n, c, *spatial = x.shape
    d = len(spatial)
    radius = max(1, int(math.ceil(3 * float(sigmas.max()))))
    kernels = _gaussian_kernels(sigmas.to(x.device, x.dtype), radius).repeat_interleave(c, 0)  # (n*c, k)
    conv = {2: F.conv2d, 3: F.conv3d}[d]
    y = x.reshape(1, n * c, *spatial)
    for axis in range(d):
        shape = [n * c, 1] + [1] * d
        shape[2 + axis] = 2 * radius + 1
        pad = [0, 0] * d
        pad[2 * (d - 1 - axis)] = pad[2 * (d - 1 - axis) + 1] = radius
        y = conv(F.pad(y, pad, mode="replicate"), kernels.view(shape), groups=n * c)
    return y.view(x.shape)


class BatchAugment:
    """Draws and applies random spatial and intensity transforms to whole batches (see the module docstring)."""

    def __init__(self, config: AugmentConfig | None = None):
        self.config = config or AugmentConfig()
        self._grids: dict[tuple, torch.Tensor] = {}

    # ------------------------------------------------------------------ parameters
    def sample(self, batch_size: int, shape: Sequence[int], generator: torch.Generator,
               strength: float = 1.0) -> AugmentParams:
        """Draw the parameters of ``batch_size`` samples of spatial ``shape`` (2 or 3 axes).

        ``strength`` in [0, 1] scales every probability (0: no sample is transformed); the same
        random numbers are drawn for any strength, so the stream that follows does not depend on it."""
        if not 0.0 <= strength <= 1.0:
            raise ValueError(f"augmentation strength must be in [0, 1], got {strength}")
        cfg, b, shape = self.config, batch_size, tuple(int(s) for s in shape)
        d = len(shape)
        g = generator

        def on(p: float) -> torch.Tensor:
            return torch.rand(b, generator=g) < p * strength

        def factor(p: float, rng: tuple[float, float], off: float) -> torch.Tensor:
            return torch.where(on(p), _uniform(g, b, *rng), torch.full((b,), off))

        flips = (torch.rand(b, d, generator=g) < cfg.flip_prob * strength) & _axis_mask(cfg.flip_axes, d)
        do_affine = on(cfg.affine_prob)
        angles = _uniform(g, (b, 3), -1, 1) * math.radians(cfg.rotate_deg)
        if d == 3:
            angles = angles * _axis_mask(cfg.rotate_axes, 3)
        zoom = _uniform(g, b, *cfg.scale)
        do_elastic = on(cfg.elastic_prob)
        magnitude = _uniform(g, b, *cfg.elastic_magnitude) * do_elastic
        elastic = torch.randn((b, d) + (cfg.elastic_points,) * d, generator=g) * magnitude.view(-1, *[1] * (d + 1))

        # rotation + zoom in voxel (or physical) space, expressed in normalised coordinates
        half = torch.tensor(shape, dtype=torch.float32) / 2
        if cfg.spacing is not None:
            half = half * torch.tensor([float(s) for s in cfg.spacing], dtype=torch.float32)
        rot = rotation_matrices(angles, d) / zoom.view(-1, 1, 1)
        rot = torch.diag(1 / half) @ rot @ torch.diag(half)
        rot = torch.where(do_affine.view(-1, 1, 1), rot, torch.eye(d).expand(b, d, d))
        matrix = rot * torch.where(flips, -1.0, 1.0)[:, None, :]   # mirror the output axes first

        noise = torch.where(on(cfg.intensity_prob), _uniform(g, b, 0, cfg.noise_std), torch.zeros(b))
        blur = factor(cfg.blur_prob, cfg.blur_sigma, 0.0)
        brightness = factor(cfg.intensity_prob, cfg.brightness, 1.0)
        contrast = factor(cfg.intensity_prob, cfg.contrast, 1.0)
        lowres = factor(cfg.lowres_prob, cfg.lowres_zoom, 1.0)
        gamma = factor(cfg.intensity_prob, cfg.gamma, 1.0)
        seed = int(torch.randint(0, 2**62, (1,), generator=g))
        return AugmentParams(shape, flips, matrix, elastic, do_affine | do_elastic, noise, blur, brightness,
                             contrast, lowres, gamma, seed)

    # ------------------------------------------------------------------ application
    def apply(self, params: AugmentParams, image: torch.Tensor, label: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Transform ``image`` ``(B, C, *S)`` float and ``label`` ``(B, *S)`` integer together."""
        if tuple(image.shape[2:]) != params.shape or tuple(label.shape) != (image.shape[0], *params.shape):
            raise ValueError(f"parameters drawn for {params.shape}, got image {tuple(image.shape)} and label {tuple(label.shape)}")
        image, label = self._spatial(params, image, label)
        return self._intensity(params, image), label

    def __call__(self, image: torch.Tensor, label: torch.Tensor, generator: torch.Generator,
                 strength: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
        return self.apply(self.sample(image.shape[0], image.shape[2:], generator, strength), image, label)

    def _spatial(self, p: AugmentParams, image: torch.Tensor, label: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        d = image.ndim - 2
        flip_only = (~p.spatial & p.flips.any(1)).nonzero().flatten().tolist()
        warp = p.spatial.nonzero().flatten().tolist()
        if not flip_only and not warp:
            return image, label
        image, label = image.clone(), label.clone()
        for i in flip_only:  # exact mirroring, no interpolation
            axes = [a for a in range(d) if p.flips[i, a]]
            image[i] = image[i].flip([1 + a for a in axes])
            label[i] = label[i].flip(axes)
        if warp:
            idx = torch.tensor(warp, device=image.device)
            grid = self._grid(p, warp, image)
            image[idx] = F.grid_sample(image[idx], grid, mode="bilinear", padding_mode="zeros", align_corners=False)
            label[idx] = self._warp_label(label[idx], grid)
        return image, label

    def _grid(self, p: AugmentParams, samples: list[int], image: torch.Tensor) -> torch.Tensor:
        """The sampling grid ``(n, *S, D)`` (in grid_sample's reversed axis order) of the given samples."""
        dev, dtype, shape = image.device, image.dtype, p.shape
        key = (shape, dev, dtype)
        if key not in self._grids:
            self._grids = {key: _base_grid(shape, dev, dtype)}
        base = self._grids[key]
        mats = p.matrix[samples].to(dev, dtype)                                   # (n, D, D)
        coords = torch.einsum("...j,nij->n...i", base, mats)                       # (n, *S, D)
        elastic = p.elastic[samples]
        if elastic.abs().sum() > 0:
            mode = "bilinear" if len(shape) == 2 else "trilinear"
            disp = F.interpolate(elastic.to(dev, dtype), size=shape, mode=mode, align_corners=True)  # voxels
            scale = 2 / torch.tensor(shape, device=dev, dtype=dtype)
            coords = coords + disp.movedim(1, -1) * scale
        return coords.flip(-1)

    def _warp_label(self, label: torch.Tensor, grid: torch.Tensor) -> torch.Tensor:
        if self.config.label_interp == "onehot":
            k = int(label.max()) + 1
            onehot = F.one_hot(label.long(), k).movedim(-1, 1).to(grid.dtype)
            probs = F.grid_sample(onehot, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
            # outside the input every class is 0: background wins the tie
            return probs.argmax(1).to(label.dtype)
        lab = F.grid_sample(label[:, None].to(grid.dtype), grid, mode="nearest", padding_mode="zeros", align_corners=False)
        return lab[:, 0].round().to(label.dtype)

    def _intensity(self, p: AugmentParams, x: torch.Tensor) -> torch.Tensor:
        dev = x.device
        view = (-1,) + (1,) * (x.ndim - 1)
        axes = tuple(range(1, x.ndim))
        if (p.noise > 0).any():
            sel = (p.noise > 0).nonzero().flatten().to(dev)
            gen = torch.Generator(device=dev).manual_seed(p.seed)
            noise = torch.randn((len(sel), *x.shape[1:]), generator=gen, device=dev, dtype=x.dtype)
            # relative to each sample's spread, so images scaled to 0..1 get as much noise as z-scored ones
            spread = x[sel].std(dim=axes, keepdim=True).clamp_min(1e-6)
            x = x.index_add(0, sel, noise * spread * p.noise[p.noise > 0].to(dev, x.dtype).view(view))
        if (p.blur > 0).any():
            sel = (p.blur > 0).nonzero().flatten().to(dev)
            x = x.index_copy(0, sel, gaussian_blur(x[sel], p.blur[p.blur > 0]))
        if (p.brightness != 1).any():
            x = x * p.brightness.to(dev, x.dtype).view(view)
        if (p.contrast != 1).any():
            mean = x.mean(dim=axes, keepdim=True)
            x = (x - mean) * p.contrast.to(dev, x.dtype).view(view) + mean
        for i in (p.lowres != 1).nonzero().flatten().tolist():
            spatial = x.shape[2:]
            small = [max(1, round(s * float(p.lowres[i]))) for s in spatial]
            down = F.interpolate(x[i : i + 1], size=small, mode="nearest")
            up = F.interpolate(down, size=spatial, mode="bilinear" if len(spatial) == 2 else "trilinear", align_corners=False)
            x = x.index_copy(0, torch.tensor([i], device=dev), up)
        if (p.gamma != 1).any():
            g = p.gamma.to(dev, x.dtype).view(view)
            lo = x.amin(dim=axes, keepdim=True)
            rng = (x.amax(dim=axes, keepdim=True) - lo).clamp_min(1e-6)
            x = torch.where(g != 1, ((x - lo) / rng).clamp_min(0).pow(g) * rng + lo, x)
        return x
