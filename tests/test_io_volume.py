"""3D volume files through SimpleITK: axis convention, exact round trips, and the errors users see."""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk

from medseg.errors import DataError
from medseg.io import Geometry, ImageData, read_image, supported_suffixes, write_image
from medseg.io.volume import check_finite, read_volume

VOLUME_ENDINGS = [".nii", ".nii.gz", ".nrrd", ".mha", ".mhd"]


def rotation(ax: float, ay: float, az: float) -> np.ndarray:
    cx, sx, cy, sy, cz, sz = np.cos(ax), np.sin(ax), np.cos(ay), np.sin(ay), np.cos(az), np.sin(az)
    rx = np.array([[1, 0, 0], [0, cx, -sx], [0, sx, cx]])
    ry = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
    rz = np.array([[cz, -sz, 0], [sz, cz, 0], [0, 0, 1]])
    return rz @ ry @ rx


OBLIQUE = Geometry(
    spacing=(0.7, 0.85, 3.3),
    origin=(-12.345678, 7.25, 101.5),
    direction=tuple(rotation(0.2, -0.35, 0.6).ravel().tolist()),
)


def assert_geometry(a: Geometry, b: Geometry, atol: float) -> None:
    if atol == 0:
        assert a == b
    else:
        np.testing.assert_allclose(a.spacing, b.spacing, rtol=atol, atol=0)
        np.testing.assert_allclose(a.origin, b.origin, rtol=atol, atol=atol)
        np.testing.assert_allclose(a.direction, b.direction, rtol=0, atol=atol)


# NIfTI stores geometry as float32; NRRD stores direction*spacing in decimal; MetaImage is exact.
GEOMETRY_TOL = {".nii": 1e-6, ".nii.gz": 1e-6, ".nrrd": 1e-12, ".mha": 0, ".mhd": 0}


def test_volume_endings_registered():
    for s in VOLUME_ENDINGS:
        assert s in supported_suffixes()


def test_axes_follow_itk_index_order(tmp_path):
    arr_zyx = np.arange(3 * 5 * 7, dtype=np.int16).reshape(3, 5, 7)
    img = sitk.GetImageFromArray(arr_zyx)  # size (x=7, y=5, z=3)
    img.SetSpacing((0.5, 1.0, 2.5))
    sitk.WriteImage(img, str(tmp_path / "a.nii.gz"))
    data = read_image(tmp_path / "a.nii.gz")
    assert data.array.shape == (1, 7, 5, 3)
    assert data.geometry.spacing == (0.5, 1.0, 2.5)
    for idx in [(0, 0, 0), (6, 1, 2), (3, 4, 1)]:
        assert data.array[(0, *idx)] == img.GetPixel(*idx)


@pytest.mark.parametrize("ending", VOLUME_ENDINGS)
def test_round_trip_keeps_array_and_oblique_anisotropic_geometry(tmp_path, ending):
    rng = np.random.default_rng(1)
    arr = rng.integers(-1000, 3000, size=(1, 9, 8, 5)).astype(np.int16)
    tol = GEOMETRY_TOL[ending]
    write_image(tmp_path / f"orig{ending}", arr, OBLIQUE)
    a = read_image(tmp_path / f"orig{ending}")
    assert a.array.dtype == np.int16
    np.testing.assert_array_equal(a.array, arr)
    assert_geometry(a.geometry, OBLIQUE, max(tol, 1e-12) if tol else 1e-15)

    write_image(tmp_path / f"again{ending}", a.array, a.geometry)  # read -> write -> read
    b = read_image(tmp_path / f"again{ending}")
    np.testing.assert_array_equal(b.array, a.array)
    assert_geometry(b.geometry, a.geometry, tol)
    # atomic writes leave no temporary files behind
    leftovers = [p.name for p in tmp_path.iterdir() if p.name.startswith(".")]
    assert leftovers == []


@pytest.mark.parametrize("ending", [".nii.gz", ".nrrd", ".mha"])
def test_multichannel_float_round_trip(tmp_path, ending):
    arr = np.random.default_rng(2).normal(size=(2, 6, 5, 4)).astype(np.float32) * 1e6
    write_image(tmp_path / f"v{ending}", arr, OBLIQUE)
    back = read_image(tmp_path / f"v{ending}")
    assert back.array.dtype == np.float32
    np.testing.assert_array_equal(back.array, arr)


def test_truncated_nifti_gz_is_an_error(tmp_path):
    arr = np.random.default_rng(3).normal(size=(1, 20, 20, 10)).astype(np.float32)
    path = tmp_path / "case.nii.gz"
    write_image(path, arr, OBLIQUE)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) * 2 // 3])
    with pytest.raises(DataError, match="incomplete|truncated") as exc:
        read_image(path)
    assert "case.nii.gz" in str(exc.value)


def test_truncated_nii_and_mha_are_errors(tmp_path):
    arr = np.ones((1, 10, 10, 10), np.int16)
    for name in ("a.nii", "a.mha"):
        path = tmp_path / name
        write_image(path, arr)
        path.write_bytes(path.read_bytes()[:-50])
        with pytest.raises(DataError) as exc:
            read_image(path)
        assert name in str(exc.value)


def test_unreadable_file_is_an_error(tmp_path):
    path = tmp_path / "junk.nrrd"
    path.write_text("not an image")
    with pytest.raises(DataError, match="junk.nrrd"):
        read_image(path)


def _write_4d(path, t: int) -> None:
    vols = [sitk.GetImageFromArray(np.full((4, 5, 6), i, np.float32)) for i in range(t)]
    sitk.WriteImage(sitk.JoinSeries(vols), str(path))


def test_4d_file_where_3d_expected(tmp_path):
    path = tmp_path / "series.nii.gz"
    _write_4d(path, 3)
    assert read_image(path).array.shape == (1, 6, 5, 4, 3)
    with pytest.raises(DataError, match="4D") as exc:
        read_volume(path, expect_spatial_dims=3)
    assert "series.nii.gz" in str(exc.value) and "split" in str(exc.value)
    chans = read_volume(path, 3, fourth_dim_as_channels=True)
    assert chans.array.shape == (3, 6, 5, 4) and chans.geometry.ndim == 3
    assert [float(chans.array[c].mean()) for c in range(3)] == [0.0, 1.0, 2.0]


def test_4d_with_single_volume_is_squeezed(tmp_path):
    path = tmp_path / "one.nii.gz"
    _write_4d(path, 1)
    vol = read_volume(path)
    assert vol.array.shape[0] == 1 and vol.array.ndim == 4 and vol.geometry.ndim == 3


def test_non_finite_voxels_are_an_error(tmp_path):
    arr = np.zeros((1, 4, 4, 4), np.float32)
    arr[0, 1, 1, 1] = np.nan
    arr[0, 2, 2, 2] = np.inf
    write_image(tmp_path / "bad.nrrd", arr)
    img = read_image(tmp_path / "bad.nrrd")
    with pytest.raises(DataError, match="case 'liver_7' has 1 NaN and 1 infinite") as exc:
        check_finite(img, "liver_7")
    assert "bad.nrrd" in str(exc.value)
    check_finite(ImageData(np.ones((1, 2, 2, 2), np.float32), Geometry.identity(3)))  # fine


@pytest.mark.parametrize("ending", [".nii", ".nii.gz"])
def test_nifti_nan_is_not_hidden(tmp_path, ending):
    # ITK's NIfTI reader turns NaN/inf into 0; the reader puts them back so check_finite sees them
    arr = np.ones((1, 5, 4, 3), np.float32)
    arr[0, 4, 1, 2] = np.nan
    arr[0, 0, 3, 0] = -np.inf
    write_image(tmp_path / f"n{ending}", arr)
    back = read_image(tmp_path / f"n{ending}")
    assert np.isnan(back.array[0, 4, 1, 2]) and back.array[0, 0, 3, 0] == -np.inf
    assert np.isfinite(back.array).sum() == arr.size - 2
    with pytest.raises(DataError, match="1 NaN and 1 infinite"):
        check_finite(back, "c")


def test_a_zero_nifti_spacing_is_flagged(tmp_path, caplog):
    import struct

    path = tmp_path / "flat.nii"
    write_image(path, np.zeros((1, 4, 5, 6), np.int16), Geometry((1.0, 1.0, 2.0), (0.0, 0.0, 0.0), tuple(np.eye(3).ravel())))
    raw = bytearray(path.read_bytes())
    raw[76 + 12:76 + 16] = struct.pack("<f", 0.0)  # pixdim[3]: the slice spacing
    path.write_bytes(bytes(raw))
    with caplog.at_level("WARNING"):
        image = read_image(path)
    assert image.geometry.spacing[2] == 1.0  # what ITK makes of it
    assert "flat.nii" in caplog.text and "pixdim" in caplog.text and "axis 2" in caplog.text
