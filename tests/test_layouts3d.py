"""3D dataset layouts (Decathlon, nnU-Net raw, plain folders), loading cases, and the errors users see."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from tests.conftest import shared_path
from medseg.data.layouts import discover_volume_cases
from medseg.data.volume_case import VolumeCase, grid_differences, load_case
from medseg.errors import DataError
from medseg.io import Geometry, write_image

GEOM = Geometry(spacing=(0.8, 0.8, 2.0), origin=(-10.0, 5.0, 30.0))
SHAPE = (12, 10, 6)


def _vol(path: Path, value=None, geometry=GEOM, shape=SHAPE, dtype=np.float32, seed=0) -> Path:
    rng = np.random.default_rng(seed)
    arr = rng.normal(100, 20, size=(1, *shape)) if value is None else np.asarray(value).reshape(1, *shape)
    write_image(path, arr.astype(dtype), geometry)
    return path


def _lab(path: Path, values=(0, 1, 2), dtype=np.uint8, geometry=GEOM, shape=SHAPE) -> Path:
    arr = np.zeros(shape)
    flat = arr.reshape(-1)
    flat[: len(values)] = values
    return _vol(path, arr, geometry, shape, dtype)


def _nnunet(root: Path, cases=("a", "b"), channels=2, labels=True) -> Path:
    for i, c in enumerate(cases):
        for ch in range(channels):
            _vol(root / "imagesTr" / f"{c}_{ch:04d}.nii.gz", seed=10 * i + ch)
        if labels:
            _lab(root / "labelsTr" / f"{c}.nii.gz")
    meta = {
        "channel_names": {str(ch): f"mod{ch}" for ch in range(channels)},
        "labels": {"background": 0, "edema": 1, "tumor": 2},
        "numTraining": len(cases),
        "file_ending": ".nii.gz",
    }
    (root / "dataset.json").write_text(json.dumps(meta))
    return root


# --------------------------------------------------------------------------- real data


@pytest.mark.shared
def test_msd_hippocampus_layout():
    root = shared_path("datasets", "hippocampus")
    cases, info = discover_volume_cases(root)
    assert len(cases) == 200
    assert info["layout"] == "msd" and info["labels"] == {0: "background", 1: "Anterior", 2: "Posterior"}
    assert info["channel_names"] == ["MRI"] and info["num_channels"] == 1
    by_key = {c.key: c for c in cases}
    # 001: uint8 image; 003: float32 image and float32 label
    for key in ("hippocampus_001", "hippocampus_003"):
        image, label = load_case(by_key[key])
        assert image.array.ndim == 4 and image.array.shape[0] == 1
        assert label.array.dtype == np.uint8 and label.array.shape == image.array.shape
        assert set(np.unique(label.array)) <= {0, 1, 2}
    assert load_case(by_key["hippocampus_001"])[0].array.dtype == np.uint8
    assert load_case(by_key["hippocampus_003"])[0].array.dtype == np.float32


# --------------------------------------------------------------------------- nnU-Net raw


def test_nnunet_raw_two_channels(tmp_path):
    cases, info = discover_volume_cases(_nnunet(tmp_path))
    assert [c.key for c in cases] == ["a", "b"]
    assert info["layout"] == "nnunet" and info["channel_names"] == ["mod0", "mod1"]
    assert info["labels"] == {0: "background", 1: "edema", 2: "tumor"}
    assert cases[0].images == (tmp_path / "imagesTr" / "a_0000.nii.gz", tmp_path / "imagesTr" / "a_0001.nii.gz")
    image, label = load_case(cases[0])
    assert image.array.shape == (2, *SHAPE) and image.array.dtype == np.float32
    assert label.array.shape == (1, *SHAPE) and label.array.dtype == np.uint8
    np.testing.assert_allclose(image.geometry.spacing, GEOM.spacing)


def test_nnunet_missing_channel_file(tmp_path):
    _nnunet(tmp_path)
    (tmp_path / "imagesTr" / "b_0001.nii.gz").unlink()
    with pytest.raises(DataError, match="missing channel file of case 'b'") as exc:
        discover_volume_cases(tmp_path)
    assert "b_0001.nii.gz" in str(exc.value)


def test_nnunet_label_without_image(tmp_path):
    _nnunet(tmp_path)
    _lab(tmp_path / "labelsTr" / "zz.nii.gz")
    with pytest.raises(DataError, match="label without image") as exc:
        discover_volume_cases(tmp_path)
    assert "zz.nii.gz" in str(exc.value)


def test_nnunet_image_without_label(tmp_path):
    _nnunet(tmp_path)
    (tmp_path / "labelsTr" / "a.nii.gz").unlink()
    with pytest.raises(DataError, match="image without label") as exc:
        discover_volume_cases(tmp_path)
    assert "a.nii.gz" in str(exc.value)
    cases, _ = discover_volume_cases(tmp_path, require_labels=False)
    assert [c.label is None for c in cases] == [True, False]
    assert load_case(cases[0])[1] is None


def test_channel_grid_mismatch_names_both_files(tmp_path):
    _nnunet(tmp_path)
    shifted = Geometry(GEOM.spacing, (-10.0, 5.0, 31.0))
    _vol(tmp_path / "imagesTr" / "a_0001.nii.gz", geometry=shifted)
    cases, _ = discover_volume_cases(tmp_path)
    with pytest.raises(DataError, match="different grids") as exc:
        load_case(cases[0])
    msg = str(exc.value)
    assert "a_0000.nii.gz" in msg and "a_0001.nii.gz" in msg and "origin" in msg


def test_label_grid_mismatch_names_case_and_difference(tmp_path):
    _nnunet(tmp_path)
    _lab(tmp_path / "labelsTr" / "b.nii.gz", geometry=Geometry((0.8, 0.8, 2.5), GEOM.origin))
    cases, _ = discover_volume_cases(tmp_path)
    with pytest.raises(DataError, match="case 'b': label and image are on different grids: spacing") as exc:
        load_case(cases[1])
    assert "b.nii.gz" in str(exc.value)
    # within the 1e-3 relative tolerance it is accepted
    _lab(tmp_path / "labelsTr" / "b.nii.gz", geometry=Geometry((0.8, 0.8, 2.0005), GEOM.origin))
    load_case(cases[1])


def test_unexpected_label_values_listed(tmp_path):
    _nnunet(tmp_path)
    _lab(tmp_path / "labelsTr" / "a.nii.gz", values=(0, 1, 5, 7))
    cases, _ = discover_volume_cases(tmp_path)
    with pytest.raises(DataError, match="not declared in the dataset labels: 5, 7"):
        load_case(cases[0])


def test_float_labels_integral_ok_fractional_error(tmp_path):
    _nnunet(tmp_path)
    _lab(tmp_path / "labelsTr" / "a.nii.gz", values=(0, 2.0, 1.0), dtype=np.float32)
    cases, _ = discover_volume_cases(tmp_path)
    _, label = load_case(cases[0])
    assert label.array.dtype == np.uint8 and label.meta["values"] == [0, 1, 2]
    _lab(tmp_path / "labelsTr" / "a.nii.gz", values=(0, 0.5), dtype=np.float32)
    with pytest.raises(DataError, match="non-integer values"):
        load_case(cases[0])


def test_nan_image_names_the_case(tmp_path):
    _nnunet(tmp_path)
    arr = np.ones(SHAPE, np.float32)
    arr[1, 1, 1] = np.nan
    _vol(tmp_path / "imagesTr" / "b_0000.nii.gz", arr)
    cases, _ = discover_volume_cases(tmp_path)
    with pytest.raises(DataError, match="case 'b' has 1 NaN"):
        load_case(cases[1])


# --------------------------------------------------------------------------- MSD and plain folders


def test_msd_multimodal_4d_and_v1_channel_files(tmp_path):
    vols = [sitk.GetImageFromArray(np.full(SHAPE[::-1], i, np.float32)) for i in range(2)]
    (tmp_path / "imagesTr").mkdir()
    sitk.WriteImage(sitk.JoinSeries(vols), str(tmp_path / "imagesTr" / "brain_1.nii.gz"))
    _lab(tmp_path / "labelsTr" / "brain_1.nii.gz", geometry=Geometry.identity(3))
    meta = {
        "modality": {"0": "FLAIR", "1": "T1"},
        "labels": {"0": "background", "1": "edema", "2": "tumour"},
        "training": [{"image": "./imagesTr/brain_1.nii.gz", "label": "./labelsTr/brain_1.nii.gz"}],
    }
    (tmp_path / "dataset.json").write_text(json.dumps(meta))
    cases, info = discover_volume_cases(tmp_path)
    assert info["channel_names"] == ["FLAIR", "T1"]
    image, _ = load_case(cases[0])
    assert image.array.shape == (2, *SHAPE) and float(image.array[1].mean()) == 1.0

    # nnU-Net v1: listed as X.nii.gz, stored as X_0000.nii.gz, X_0001.nii.gz
    (tmp_path / "imagesTr" / "brain_1.nii.gz").unlink()
    for ch in range(2):
        _vol(tmp_path / "imagesTr" / f"brain_1_{ch:04d}.nii.gz", geometry=Geometry.identity(3))
    cases, _ = discover_volume_cases(tmp_path)
    assert len(cases[0].images) == 2
    assert load_case(cases[0])[0].array.shape == (2, *SHAPE)


def test_msd_listed_image_missing(tmp_path):
    meta = {"labels": {"0": "bg"}, "training": [{"image": "./imagesTr/x.nii.gz", "label": "./labelsTr/x.nii.gz"}]}
    (tmp_path / "dataset.json").write_text(json.dumps(meta))
    with pytest.raises(DataError, match="image listed in dataset.json not found") as exc:
        discover_volume_cases(tmp_path)
    assert "x.nii.gz" in str(exc.value)


def test_plain_folders_match_by_stem_across_formats(tmp_path):
    _vol(tmp_path / "images" / "p1.nii.gz")
    _vol(tmp_path / "images" / "p2.mha")
    _lab(tmp_path / "labels" / "p1.nrrd")
    _lab(tmp_path / "labels" / "p2.nii")
    (tmp_path / "images" / ".DS_Store").write_text("x")
    cases, info = discover_volume_cases(tmp_path)
    assert info["layout"] == "folders" and info["labels"] is None
    assert [(c.key, c.label.name) for c in cases] == [("p1", "p1.nrrd"), ("p2", "p2.nii")]
    image, label = load_case(cases[1])
    assert image.array.shape == label.array.shape == (1, *SHAPE)


def test_plain_folder_errors(tmp_path):
    (tmp_path / "images").mkdir()
    with pytest.raises(DataError, match="no volume files"):
        discover_volume_cases(tmp_path)
    _vol(tmp_path / "images" / "p1.nii.gz")
    _lab(tmp_path / "labels" / "p9.nii.gz")
    with pytest.raises(DataError, match="label without image") as exc:
        discover_volume_cases(tmp_path)
    assert "p9.nii.gz" in str(exc.value)
    (tmp_path / "labels" / "p9.nii.gz").unlink()
    with pytest.raises(DataError, match="image without label") as exc:
        discover_volume_cases(tmp_path)
    assert "p1.nii.gz" in str(exc.value)


def test_empty_root_is_an_error(tmp_path):
    with pytest.raises(DataError, match="no dataset found"):
        discover_volume_cases(tmp_path)


def test_grid_differences_tolerance():
    g = Geometry((1.0, 1.0, 3.0), (100.0, -50.0, 0.0))
    assert grid_differences((4, 4, 4), g, (4, 4, 4), Geometry((1.0005, 1.0, 3.0), (100.05, -50.0, 0.0005))) == []
    diffs = grid_differences((4, 4, 4), g, (4, 4, 5), Geometry((1.0, 1.0, 3.0), (100.0, -50.0, 0.5)))
    assert diffs[0] == "size 4x4x4 vs 4x4x5" and diffs[1].startswith("origin")


def test_volume_case_is_hashable():
    c = VolumeCase("a", (Path("a_0000.nii.gz"),), Path("a.nii.gz"))
    assert {c: 1}[c] == 1
