"""Corpus cases: bad 3D datasets and volumes (``medseg train`` / ``medseg inspect``)."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import numpy as np

from medseg.io import Geometry, write_image
from tests.helpers3d import GEOMETRY, write_msd_dataset
from tests.hostile.conftest import FAST
from tests.hostile.corpus import Runs, case, edited_json


def _data(tmp: Path, n: int = 4) -> Path:
    return write_msd_dataset(tmp / "data", n=n)


def _train(tmp: Path, data: Path, *extra) -> list:
    return ["train", data, "--out", tmp / "run", "--split", "50/25/25", "--patch-size", "16x16x8", *FAST, *extra]


def _rewrite(path: Path, change) -> None:
    from medseg.io import read_image

    image = read_image(path)
    write_image(path, change(image.array), image.geometry)


@case(names="case_003.nii.gz", says="different grids")
def train_with_a_label_one_slice_larger_in_the_test_split(tmp: Path, runs: Runs) -> list:
    """Defect 9: a label one slice larger than its image, in whichever split the case falls."""
    data = _data(tmp)
    _rewrite(data / "labelsTr" / "case_003.nii.gz", lambda a: np.concatenate([a, a[..., -1:]], axis=-1))
    (tmp / "split.json").write_text(json.dumps({"train": ["case_000", "case_001"], "val": ["case_002"], "test": ["case_003"]}))
    return _train(tmp, data, "--split-file", tmp / "split.json")


@case(names="case_001.nii.gz", says="different grids")
def train_with_a_label_on_a_shifted_origin(tmp: Path, runs: Runs) -> list:
    data = _data(tmp)
    label = data / "labelsTr" / "case_001.nii.gz"
    from medseg.io import read_image

    lab = read_image(label)
    write_image(label, lab.array, Geometry(GEOMETRY.spacing, (0.0, 0.0, 0.0), GEOMETRY.direction))
    return _train(tmp, data)


@case(names="dataset.json")
def train_with_a_malformed_dataset_json(tmp: Path, runs: Runs) -> list:
    data = _data(tmp)
    (data / "dataset.json").write_text('{"name": "Blobs", "training": [')
    return _train(tmp, data)


@case(names="case_009.nii.gz")
def train_with_dataset_json_listing_a_missing_file(tmp: Path, runs: Runs) -> list:
    data = _data(tmp)
    with edited_json(data / "dataset.json") as meta:
        meta["training"].append({"image": "./imagesTr/case_009.nii.gz", "label": "./labelsTr/case_009.nii.gz"})
        meta["numTraining"] += 1
    return _train(tmp, data)


@case(names="case_002.nii.gz", says="0.5")
def train_with_a_label_of_fractional_values(tmp: Path, runs: Runs) -> list:
    data = _data(tmp)
    _rewrite(data / "labelsTr" / "case_002.nii.gz", lambda a: np.where(a > 0, a - 0.5, 0).astype(np.float32))
    return _train(tmp, data)


@case(names="case_000.nii.gz", says="7")
def train_with_a_label_value_dataset_json_does_not_declare(tmp: Path, runs: Runs) -> list:
    data = _data(tmp)
    _rewrite(data / "labelsTr" / "case_000.nii.gz", lambda a: np.where(a == 2, 7, a).astype(np.uint8))
    return _train(tmp, data)


@case(names="case_001", says="NaN")
def train_with_nan_voxels(tmp: Path, runs: Runs) -> list:
    data = _data(tmp)

    def nan(a):
        a = a.astype(np.float32)
        a[0, 5, 5, 5] = np.nan
        return a
    _rewrite(data / "imagesTr" / "case_001.nii.gz", nan)
    return _train(tmp, data)


@case(names="case_002.nii.gz")
def train_with_a_garbage_volume(tmp: Path, runs: Runs) -> list:
    data = _data(tmp)
    (data / "imagesTr" / "case_002.nii.gz").write_bytes(gzip.compress(b"\x00garbage" * 40))
    return _train(tmp, data)


@case(names="case_003.nii.gz")
def train_with_a_truncated_volume(tmp: Path, runs: Runs) -> list:
    data = _data(tmp)
    p = data / "imagesTr" / "case_003.nii.gz"
    p.write_bytes(p.read_bytes()[:400])
    return _train(tmp, data)


@case(names="case_001.nii.gz")
def train_with_a_gzip_that_is_not_gzip(tmp: Path, runs: Runs) -> list:
    data = _data(tmp)
    (data / "labelsTr" / "case_001.nii.gz").write_text("this is a text file")
    return _train(tmp, data)


@case(names="--size")
def train_3d_data_with_a_2d_option(tmp: Path, runs: Runs) -> list:
    return _train(tmp, _data(tmp), "--size", "64")


@case(names="--channels")
def train_3d_data_with_a_channel_count(tmp: Path, runs: Runs) -> list:
    return _train(tmp, _data(tmp), "--channels", "3")


@case(names="case_000.nii.gz", says="spacing", code=0)
def inspect_a_volume_with_zero_pixdim(tmp: Path, runs: Runs) -> list:
    """Defect 9: a NIfTI pixdim of 0 is flagged (read as 1 mm), naming the file."""
    data = _data(tmp)
    p = data / "imagesTr" / "case_000.nii.gz"
    raw = bytearray(gzip.decompress(p.read_bytes()))
    raw[80:84] = np.float32(0.0).tobytes()  # pixdim[1]
    p.write_bytes(gzip.compress(bytes(raw)))
    return ["inspect", data, "--out", tmp / "fp.json"]


@case(names="0x4x4", says="spacing")
def train_with_a_zero_target_spacing(tmp: Path, runs: Runs) -> list:
    return _train(tmp, _data(tmp), "--target-spacing", "0x4x4")
