"""3D preprocessing: crop/uncrop, normalization, resampling, and the preprocessed-case cache."""

from __future__ import annotations

import os

import numpy as np
import pytest

from medseg.data.cache import PreprocessedCache, fingerprint
from medseg.data.preprocess3d import crop_to_nonzero, intensity_stats, nonzero_mask, normalize, uncrop
from medseg.data.resample import lowres_axis, resample, resample_to_shape, target_shape
from medseg.errors import ConfigError


def blob(shape, spacing, radii_mm=(14.0, 11.0, 9.0)) -> np.ndarray:
    """A two-class ellipsoid label ``(1, *shape)`` centred in the volume (radii in mm)."""
    grids = np.meshgrid(*[(np.arange(s) + 0.5) * sp for s, sp in zip(shape, spacing)], indexing="ij")
    centre = [s * sp / 2 for s, sp in zip(shape, spacing)]
    d = sum(((g - c) / r) ** 2 for g, c, r in zip(grids, centre, radii_mm))
    lab = (d < 1).astype(np.uint8)
    lab[(d < 1) & (grids[0] > centre[0])] = 2
    return lab[None]


def dice(a: np.ndarray, b: np.ndarray, c: int) -> float:
    return 2 * np.sum((a == c) & (b == c)) / (np.sum(a == c) + np.sum(b == c))


# --------------------------------------------------------------------------- crop


def test_crop_uncrop_round_trip():
    rng = np.random.default_rng(0)
    image = np.zeros((2, 20, 18, 16), np.float32)
    image[0, 3:11, 5:15, 2:9] = rng.normal(size=(8, 10, 7))
    image[1, 12:14, 6:7, 4:12] = 1.0  # the box covers voxels non-zero in any channel
    label = (image[:1] > 0.5).astype(np.uint8)
    img_c, lab_c, bbox = crop_to_nonzero(image, label)
    assert bbox == [(3, 14), (5, 15), (2, 12)]
    assert img_c.shape == (2, 11, 10, 10) and lab_c.shape == (1, 11, 10, 10)
    np.testing.assert_array_equal(uncrop(img_c, bbox, image.shape[1:]), image)
    np.testing.assert_array_equal(uncrop(lab_c, bbox, label.shape), label)  # full shape accepted too
    assert uncrop(lab_c[0], bbox, (20, 18, 16), fill=0).shape == (20, 18, 16)  # no channel axis


def test_crop_of_empty_image_keeps_everything():
    image = np.zeros((1, 5, 6, 7), np.uint8)
    cropped, _, bbox = crop_to_nonzero(image)
    assert bbox == [(0, 5), (0, 6), (0, 7)] and cropped.shape == image.shape


def test_nonzero_mask_fills_holes():
    image = np.zeros((1, 9, 9, 9))
    image[0, 2:7, 2:7, 2:7] = 1
    image[0, 4, 4, 4] = 0
    assert nonzero_mask(image)[4, 4, 4]


# --------------------------------------------------------------------------- normalize


@pytest.mark.parametrize("dtype,scale", [(np.uint8, 1.0), (np.float32, 1e6), (np.float64, 1e6)])
def test_zscore_per_channel(dtype, scale):
    rng = np.random.default_rng(1)
    image = np.stack([rng.uniform(0, 200, (8, 9, 10)), rng.uniform(50, 60, (8, 9, 10))]) * scale
    out = normalize(image.astype(dtype), "zscore")
    assert out.dtype == np.float32
    np.testing.assert_allclose(out.mean(axis=(1, 2, 3)), 0, atol=1e-4)
    np.testing.assert_allclose(out.std(axis=(1, 2, 3)), 1, atol=1e-3)


def test_zscore_over_mask_zeroes_outside():
    image = np.zeros((1, 10, 10, 10), np.float32)
    image[0, 2:8, 2:8, 2:8] = np.random.default_rng(2).normal(50, 5, (6, 6, 6))
    mask = nonzero_mask(image)
    out = normalize(image, "zscore", mask=mask)
    assert np.all(out[0][~mask] == 0)
    assert abs(out[0][mask].mean()) < 1e-4 and abs(out[0][mask].std() - 1) < 1e-3


def test_ct_minmax_none_and_unknown():
    x = np.array([-2000, -1000, 0, 40, 80, 3000], np.float32).reshape(1, 6, 1, 1)
    stats = {"mean": 40.0, "std": 20.0, "p005": -1000.0, "p995": 1000.0}
    out = normalize(x, "ct", stats)
    np.testing.assert_allclose(out.ravel(), [-52, -52, -2, 0, 2, 48])
    np.testing.assert_allclose(normalize(x, "minmax").ravel()[[0, -1]], [0, 1])
    assert normalize(np.full((1, 2, 2, 2), 7), "minmax").max() == 0
    assert normalize(x.astype(np.int16), "none").dtype == np.float32
    two = normalize(np.concatenate([x, x]), ["ct", "none"], [stats, None])
    np.testing.assert_array_equal(two[1], x[0])
    with pytest.raises(ConfigError, match="unknown normalization"):
        normalize(x, "histogram")
    with pytest.raises(ConfigError, match="p005"):
        normalize(x, "ct", {"mean": 0})
    s = intensity_stats(np.arange(1001, dtype=np.float32))
    assert s["p005"] == 5.0 and s["p995"] == 995.0 and s["mean"] == 500.0


# --------------------------------------------------------------------------- resample


def test_target_shape_and_lowres_axis():
    assert target_shape((100, 80, 30), (0.5, 0.5, 2.5), (1.0, 1.0, 1.0)) == (50, 40, 75)
    assert target_shape((3, 3, 3), (1, 1, 1), (10, 10, 10)) == (1, 1, 1)
    assert lowres_axis((1.0, 1.0, 3.0)) is None and lowres_axis((0.8, 0.8, 3.5)) == 2
    assert lowres_axis((4.0, 4.0, 1.0)) is None  # two coarse axes: not separable


@pytest.mark.parametrize(
    "spacing,new_spacing",
    [((1.0, 1.0, 1.0), (0.7, 1.3, 1.6)), ((1.0, 1.0, 4.0), (1.0, 1.0, 1.5)), ((0.9, 0.9, 1.2), (0.6, 0.6, 0.6))],
)
def test_resample_shapes_and_label_round_trip(spacing, new_spacing):
    shape = (48, 40, 12) if spacing[2] > 2 else (48, 40, 36)
    label = blob(shape, spacing)
    up = resample(label, spacing, new_spacing, is_label=True)
    expected = target_shape(shape, spacing, new_spacing)
    assert up.shape == (1, *expected) and up.dtype == np.uint8
    assert set(np.unique(up)) == {0, 1, 2}
    back = resample_to_shape(up, shape, is_label=True, spacing=new_spacing)
    assert back.shape == label.shape
    for c in (1, 2):
        assert dice(label, back, c) > 0.95, (c, dice(label, back, c))
    nearest = resample(label, spacing, new_spacing, is_label=True, label_mode="nearest")
    assert nearest.shape == up.shape and set(np.unique(nearest)) == {0, 1, 2}

    image = label.astype(np.float32) * 100 + np.random.default_rng(3).normal(0, 1, label.shape).astype(np.float32)
    out = resample(image, spacing, new_spacing)
    assert out.shape == up.shape and out.dtype == np.float32
    assert abs(float(out.mean()) - float(image.mean())) < 2.0


def test_anisotropic_axis_resampled_with_nearest():
    # along a low-resolution axis (spacing ratio > 3) slices are repeated, not interpolated
    image = np.zeros((1, 8, 8, 4), np.float32)
    for k in range(4):
        image[0, :, :, k] = 10.0 * k
    out = resample(image, (1.0, 1.0, 4.0), (1.0, 1.0, 2.0))
    assert out.shape == (1, 8, 8, 8)
    assert sorted(np.unique(np.round(out, 4))) == [0.0, 10.0, 20.0, 30.0]
    spatial = resample_to_shape(image[0], (8, 8, 8), order=1, spacing=(1.0, 1.0, 4.0))  # no channel axis
    assert spatial.shape == (8, 8, 8)


# --------------------------------------------------------------------------- cache


def test_cache_hit_and_miss_on_config_or_mtime(tmp_path):
    src = tmp_path / "case1_0000.nii.gz"
    src.write_bytes(b"pretend image")
    cache = PreprocessedCache(tmp_path / "cache")
    config = {"spacing": [1.0, 1.0, 1.0], "norm": "zscore"}
    calls = []

    def make():
        calls.append(1)
        image = np.random.default_rng(len(calls)).normal(size=(1, 4, 5, 6))
        label = np.ones((1, 4, 5, 6), np.int64)
        return image, label, {"bbox": [(0, 4), (1, 6), (2, 8)], "spacing": np.array([1.0, 1.0, 1.0])}

    a = cache.get_or_make("case1", [src], config, make)
    assert len(calls) == 1
    assert isinstance(a.image, np.memmap) and a.image.dtype == np.float32 and a.label.dtype == np.uint8
    assert a.meta["bbox"] == [[0, 4], [1, 6], [2, 8]]
    assert sorted(p.name for p in (tmp_path / "cache").iterdir()) == ["case1.json", "case1_image.npy", "case1_label.npy"]

    b = cache.get_or_make("case1", [src], dict(config), make)  # hit
    assert len(calls) == 1
    np.testing.assert_array_equal(b.image, a.image)

    cache.get_or_make("case1", [src], {**config, "norm": "ct"}, make)  # config changed
    assert len(calls) == 2
    cache.get_or_make("case1", [src], {**config, "norm": "ct"}, make)
    assert len(calls) == 2

    st = src.stat()
    os.utime(src, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))  # input touched
    c = cache.get_or_make("case1", [src], {**config, "norm": "ct"}, make)
    assert len(calls) == 3 and not np.array_equal(np.asarray(c.image), np.asarray(a.image))
    assert fingerprint([src], config) != fingerprint([src], {**config, "norm": "ct"})


def test_cache_without_label_and_broken_record(tmp_path):
    src = tmp_path / "x.nii.gz"
    src.write_bytes(b"x")
    cache = PreprocessedCache(tmp_path / "c")
    cache.put("x", [src], {}, np.zeros((1, 2, 2, 2)), None, {})
    assert cache.get("x", [src], {}).label is None
    (tmp_path / "c" / "x.json").write_text("{broken")
    assert cache.get("x", [src], {}) is None
