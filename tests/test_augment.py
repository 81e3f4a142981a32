"""Batched augmentation: image and label stay aligned, seeds reproduce, 2D and 3D, shapes and dtypes."""

from __future__ import annotations

import pytest
import torch

from medseg.data.augment import AugmentConfig, BatchAugment, gaussian_blur

SHAPES = {2: (48, 64), 3: (24, 32, 20)}
SPATIAL_ONLY = dict(intensity_prob=0.0, blur_prob=0.0, lowres_prob=0.0)


def blobs(shape, batch: int = 4, seed: int = 0) -> torch.Tensor:
    """Label maps ``(B, *S)`` with an off-centre two-class blob and a marked corner (no symmetry)."""
    g = torch.Generator().manual_seed(seed)
    grids = torch.meshgrid(*[torch.arange(s, dtype=torch.float32) for s in shape], indexing="ij")
    label = torch.zeros(batch, *shape, dtype=torch.int64)
    for b in range(batch):
        centre = [float(torch.randint(6, s - 6, (1,), generator=g)) for s in shape]
        r2 = sum((x - c) ** 2 for x, c in zip(grids, centre))
        label[b][r2 < 25] = 1
        label[b][r2 < 6] = 2
        label[b][tuple(slice(0, 4) for _ in shape)] = 1
    return label


@pytest.mark.parametrize("dims", [2, 3])
@pytest.mark.parametrize("label_interp", ["nearest", "onehot"])
def test_image_and_label_stay_aligned(dims, label_interp):
    """An image equal to its label map, transformed with it, still equals it where the transform moved things."""
    label = blobs(SHAPES[dims])
    image = label[:, None].float()
    cfg = AugmentConfig(affine_prob=1.0, elastic_prob=1.0, elastic_magnitude=(2.0, 3.0), label_interp=label_interp, **SPATIAL_ONLY)
    x, y = BatchAugment(cfg)(image, label, torch.Generator().manual_seed(1))
    moved = y != label
    assert moved.float().mean() > 0.01  # the transform did something
    agree = (x[:, 0].round().long() == y)
    assert agree.float().mean() > 0.995
    assert agree[moved].float().mean() > 0.95  # voxels that moved moved together


@pytest.mark.parametrize("dims", [2, 3])
def test_mirroring_is_exact_and_respects_allowed_axes(dims):
    label = blobs(SHAPES[dims])
    image = torch.randn(label.shape[0], 2, *label.shape[1:])
    cfg = AugmentConfig(flip_prob=1.0, flip_axes=[0], affine_prob=0.0, **SPATIAL_ONLY)
    aug = BatchAugment(cfg)
    params = aug.sample(label.shape[0], label.shape[1:], torch.Generator().manual_seed(0))
    assert params.flips[:, 0].all() and not params.flips[:, 1:].any()
    x, y = aug.apply(params, image, label)
    assert torch.equal(y, label.flip(1)) and torch.equal(x, image.flip(2))
    assert torch.equal(label, blobs(SHAPES[dims]))  # inputs are not modified


@pytest.mark.parametrize("dims", [2, 3])
def test_seeded_parameters_reproduce(dims):
    label = blobs(SHAPES[dims])
    image = torch.randn(label.shape[0], 1, *label.shape[1:], generator=torch.Generator().manual_seed(3))
    cfg = AugmentConfig(affine_prob=0.5, elastic_prob=0.5, intensity_prob=0.5, blur_prob=0.5, lowres_prob=0.5)
    aug = BatchAugment(cfg)
    a = aug(image, label, torch.Generator().manual_seed(7))
    b = aug(image, label, torch.Generator().manual_seed(7))
    c = aug(image, label, torch.Generator().manual_seed(8))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert not torch.equal(a[0], c[0])
    # parameters are drawn separately from applying them: the same parameters give the same result
    params = aug.sample(label.shape[0], label.shape[1:], torch.Generator().manual_seed(7))
    x, y = aug.apply(params, image, label)
    assert torch.equal(x, a[0]) and torch.equal(y, a[1])
    assert x.dtype == image.dtype and y.dtype == label.dtype
    assert x.shape == image.shape and y.shape == label.shape


def test_intensity_transforms_leave_labels_and_change_images():
    label = blobs(SHAPES[3], batch=3)
    image = label[:, None].float() + 0.1 * torch.randn(label.shape[0], 1, *label.shape[1:])
    cfg = AugmentConfig(flip_prob=0.0, affine_prob=0.0, intensity_prob=1.0, blur_prob=1.0, lowres_prob=1.0, noise_std=0.2)
    aug = BatchAugment(cfg)
    params = aug.sample(3, label.shape[1:], torch.Generator().manual_seed(0))
    x, y = aug.apply(params, image, label)
    assert torch.equal(y, label)
    assert torch.isfinite(x).all() and not torch.allclose(x, image)


def test_gaussian_blur_per_sample_sigma():
    x = torch.zeros(2, 1, 15, 15, 15)
    x[:, :, 7, 7, 7] = 1.0
    out = gaussian_blur(x, torch.tensor([0.5, 2.0]))
    assert torch.allclose(out.sum((1, 2, 3, 4)), torch.ones(2), atol=1e-4)  # mass is kept
    assert out[0, 0, 7, 7, 7] > out[1, 0, 7, 7, 7]  # the wider kernel spreads more
    assert torch.allclose(out[1, 0, 7, 7, 6], out[1, 0, 6, 7, 7])  # isotropic


def test_rotation_is_rigid_on_non_cubic_patches():
    """A rotated off-centre disc in a non-square 2D patch moves but stays a disc (same extent along both axes)."""
    shape = (40, 64)
    grids = torch.meshgrid(*[torch.arange(s, dtype=torch.float32) + 0.5 for s in shape], indexing="ij")
    label = (((grids[0] - 20) ** 2 + (grids[1] - 22) ** 2) < 64).long()[None]
    cfg = AugmentConfig(flip_prob=0.0, affine_prob=1.0, rotate_deg=60.0, scale=(1.0, 1.0), **SPATIAL_ONLY)
    aug = BatchAugment(cfg)
    params = aug.sample(1, shape, torch.Generator().manual_seed(0))
    _, y = aug.apply(params, label.float()[:, None], label)
    assert (y != label).sum() > 20  # it moved
    extent = [int(y[0].any(dim=1 - a).sum()) for a in range(2)]
    assert abs(extent[0] - extent[1]) <= 1 and abs(int(y.sum()) - int(label.sum())) <= 0.05 * int(label.sum())


def test_unknown_label_interpolation_is_refused():
    with pytest.raises(ValueError, match="label_interp"):
        AugmentConfig(label_interp="cubic")


@pytest.mark.parametrize("dims", [2, 3])
def test_strength_scales_how_many_samples_are_transformed(dims):
    """Strength 0 leaves every sample as it is; 0.5 transforms fewer samples than 1; the random stream
    that follows is the same for any strength (the augmentation warm-up changes no later draw)."""
    label = blobs(SHAPES[dims], batch=32)
    image = label[:, None].float() + 0.1 * torch.randn(label.shape)[:, None]
    aug = BatchAugment(AugmentConfig(flip_prob=0.5, affine_prob=0.5, intensity_prob=0.5, blur_prob=0.5, lowres_prob=0.5))
    x, y = aug(image, label, torch.Generator().manual_seed(2), 0.0)
    assert torch.equal(x, image) and torch.equal(y, label)

    sparse = BatchAugment(AugmentConfig(flip_prob=0.0, affine_prob=0.6, **SPATIAL_ONLY))

    def changed(strength: float) -> int:
        x, _ = sparse(image, label, torch.Generator().manual_seed(2), strength)
        return int((x != image).flatten(1).any(1).sum())

    assert 0 < changed(0.5) < changed(1.0)
    streams = []
    for strength in (0.0, 0.3, 1.0):
        g = torch.Generator().manual_seed(5)
        aug.sample(8, SHAPES[dims], g, strength)
        streams.append(torch.rand(4, generator=g))
    assert all(torch.equal(s, streams[0]) for s in streams)
    with pytest.raises(ValueError, match="strength"):
        aug.sample(2, SHAPES[dims], torch.Generator(), 1.5)
