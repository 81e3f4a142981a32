"""DICOM series folders: round trip with oblique geometry, several series in one folder."""

from __future__ import annotations

import numpy as np
import pytest

from medseg.errors import DataError
from medseg.io import Geometry, read_image
from medseg.io.dicom import list_dicom_series, read_dicom_series, write_dicom_series
from test_io_volume import OBLIQUE, assert_geometry


def _volume(seed=0, shape=(1, 10, 8, 5), lo=-1000, hi=2000, dtype=np.int16):
    return np.random.default_rng(seed).integers(lo, hi, size=shape).astype(dtype)


def test_round_trip_oblique_anisotropic(tmp_path):
    arr = _volume()
    write_dicom_series(tmp_path / "a", arr, OBLIQUE, modality="CT", description="ct export")
    a = read_image(tmp_path / "a")  # a folder dispatches to DICOM
    assert a.array.dtype == np.int16
    np.testing.assert_array_equal(a.array, arr)
    assert_geometry(a.geometry, OBLIQUE, 1e-9)
    assert a.meta["modality"] == "CT" and a.meta["description"] == "ct export" and a.meta["slices"] == 5

    write_dicom_series(tmp_path / "b", a.array, a.geometry, modality="CT")
    b = read_dicom_series(tmp_path / "b")
    np.testing.assert_array_equal(b.array, a.array)
    assert_geometry(b.geometry, a.geometry, 1e-9)  # DICOM decimal strings hold 16 characters


def test_mask_export_as_secondary_capture_keeps_geometry(tmp_path):
    mask = _volume(1, lo=0, hi=3, dtype=np.uint8)
    write_dicom_series(tmp_path / "m", mask, OBLIQUE)
    back = read_dicom_series(tmp_path / "m")
    np.testing.assert_array_equal(back.array, mask)
    assert_geometry(back.geometry, OBLIQUE, 1e-9)
    with pytest.raises(DataError, match="modality='CT'"):
        write_dicom_series(tmp_path / "neg", _volume(2), OBLIQUE)  # signed values need CT/MR/PT


def test_left_handed_grid_written_as_the_same_physical_volume(tmp_path):
    d = np.asarray(OBLIQUE.direction).reshape(3, 3) * [1, 1, -1]
    geom = Geometry(OBLIQUE.spacing, OBLIQUE.origin, tuple(d.ravel()))
    arr = _volume(3)
    write_dicom_series(tmp_path / "l", arr, geom, modality="MR")
    back = read_dicom_series(tmp_path / "l")
    np.testing.assert_array_equal(back.array[..., ::-1], arr)
    last = np.asarray(geom.origin) + d @ (np.asarray(geom.spacing) * [0, 0, arr.shape[3] - 1])
    np.testing.assert_allclose(back.geometry.origin, last, atol=1e-6)


def test_two_series_the_largest_is_read_unless_one_is_named(tmp_path):
    folder = tmp_path / "study"
    write_dicom_series(folder, _volume(4, shape=(1, 10, 8, 5)), OBLIQUE, modality="CT", series_uid="1.2.3.4.1", description="arterial")
    write_dicom_series(
        folder, _volume(5, shape=(1, 10, 8, 3)), OBLIQUE, modality="CT", series_uid="1.2.3.4.2",
        description="venous", file_prefix="V",
    )
    assert sorted(s.uid for s in list_dicom_series(folder)) == ["1.2.3.4.1", "1.2.3.4.2"]
    assert read_image(folder).array.shape == (1, 10, 8, 5)  # the rule: the largest image series
    chosen = read_dicom_series(folder, series_uid="1.2.3.4.2")
    assert chosen.array.shape == (1, 10, 8, 3) and chosen.meta["series_uid"] == "1.2.3.4.2"
    with pytest.raises(DataError, match="no DICOM series with UID 9.9"):
        read_dicom_series(folder, series_uid="9.9")


def test_two_series_of_one_size_and_none_chosen_lists_both(tmp_path):
    folder = tmp_path / "study"
    write_dicom_series(folder, _volume(4), OBLIQUE, modality="CT", series_uid="1.2.3.4.1", description="arterial")
    write_dicom_series(folder, _volume(5), OBLIQUE, modality="CT", series_uid="1.2.3.4.2", description="venous", file_prefix="V")
    with pytest.raises(DataError) as exc:
        read_image(folder)
    msg = str(exc.value)
    assert "2 image series" in msg and "1.2.3.4.1" in msg and "1.2.3.4.2" in msg
    assert "arterial" in msg and "venous" in msg and "--series-uid" in msg


def test_folder_without_dicom_is_an_error(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no DICOM series"):
        read_image(tmp_path / "empty")


def test_existing_files_not_overwritten(tmp_path):
    write_dicom_series(tmp_path / "s", _volume(6), OBLIQUE, modality="CT")
    with pytest.raises(DataError, match="exist already"):
        write_dicom_series(tmp_path / "s", _volume(6), OBLIQUE, modality="CT")


def _series_of_eight(folder):
    geometry = Geometry((0.8, 0.8, 2.0), (0.0, 0.0, 0.0), tuple(np.eye(3).ravel()))
    return write_dicom_series(folder, _volume(5, shape=(1, 12, 10, 8)), geometry, modality="CT")


def test_a_corrupt_slice_is_refused_by_name(tmp_path):
    """GDCM skips an unreadable slice and ITK stretches the rest over the gap (7 slices, 2.333 mm): refused."""
    files = _series_of_eight(tmp_path / "s")
    (tmp_path / "s" / "notes.txt").write_text("not a slice, and not of the series' ending: ignored")
    assert read_dicom_series(tmp_path / "s").array.shape[-1] == 8
    files[3].write_bytes(np.random.default_rng(0).integers(0, 256, 200, dtype=np.uint8).tobytes())
    with pytest.raises(DataError, match="not readable DICOM") as e:
        read_dicom_series(tmp_path / "s")
    assert e.value.path == files[3]


def test_a_missing_slice_names_the_gap(tmp_path):
    files = _series_of_eight(tmp_path / "s")
    files[4].unlink()
    with pytest.raises(DataError, match=f"slice gap of 4 mm between {files[3].name} and {files[5].name}"):
        read_dicom_series(tmp_path / "s")


def test_a_rescaled_series_is_not_taken_for_a_truncated_one(tmp_path):
    """GDCM hands out float64 after a rescale slope; the size check counts the 16 bits stored per voxel."""
    rng = np.random.default_rng(3)
    volume = rng.normal(100.0, 30.0, (1, 64, 64, 4)).astype(np.float32)  # not integral: stored with a slope
    write_dicom_series(tmp_path / "s", volume, Geometry((0.8, 0.8, 2.0), (0.0, 0.0, 0.0), tuple(np.eye(3).ravel())),
                       modality="MR")
    back = read_dicom_series(tmp_path / "s")
    assert back.array.shape == volume.shape
    np.testing.assert_allclose(back.array, volume, atol=0.01)
