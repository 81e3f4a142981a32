"""``medseg export`` bundles and the ONNX Runtime backend (issue 19): the same labels as PyTorch float32."""

from __future__ import annotations

import json

import numpy as np
import pytest

from medseg.io import read_image
from tests.conftest import run_cli
from tests.helpers2d import write_disc_dataset
from tests.helpers3d import write_msd_dataset

pytestmark = pytest.mark.usefixtures("one_thread")
FAST = ["--epochs", "2", "--iterations", "2", "--batch-size", "2", "--features", "4", "--depth", "2", "--threads", "1",
        "--no-plan"]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("export")
    data2d = write_disc_dataset(tmp / "d2", n=6, size=48)
    run_cli("train", data2d, "--out", tmp / "r2", *FAST)
    data3d = write_msd_dataset(tmp / "d3", n=4)
    run_cli("train", data3d, "--out", tmp / "r3", "--split", "50/25/25", "--patch-size", "16x16x8", *FAST)
    return {2: (data2d / "images", tmp / "r2"), 3: (data3d / "imagesTr", tmp / "r3")}


@pytest.mark.parametrize("dims", [2, 3])
def test_a_bundle_predicts_what_the_run_predicts(runs, dims, tmp_path):
    inputs, run = runs[dims]
    run_cli("export", run, "--out", tmp_path / "bundle")
    bundle = json.loads((tmp_path / "bundle" / "bundle.json").read_text())
    assert bundle["spatial_dims"] == dims and bundle["network"]["max_abs_difference_from_torch"] < 1e-3
    assert bundle["labels"] == json.loads((run / "medseg_run.json").read_text())["labels"]
    run_cli("predict", run, inputs, "--out", tmp_path / "torch", "--no-amp", "--tta", "--save-probabilities")
    run_cli("predict", tmp_path / "bundle", inputs, "--out", tmp_path / "onnx", "--tta", "--save-probabilities")
    run_cli("predict", run, inputs, "--out", tmp_path / "run_onnx", "--backend", "onnxruntime", "--tta")
    masks = sorted(p.name for p in (tmp_path / "torch").iterdir() if "_" not in p.name.removeprefix("case_") and p.suffix != ".csv")
    assert masks
    for name in masks:
        want = read_image(tmp_path / "torch" / name).array
        assert np.array_equal(read_image(tmp_path / "onnx" / name).array, want), name
        assert np.array_equal(read_image(tmp_path / "run_onnx" / name).array, want), name
    probabilities = sorted((tmp_path / "torch").glob("*_probabilities*"))
    assert probabilities
    for p in probabilities:
        a = np.load(p) if p.suffix == ".npy" else read_image(p).array
        b = np.load(tmp_path / "onnx" / p.name) if p.suffix == ".npy" else read_image(tmp_path / "onnx" / p.name).array
        np.testing.assert_allclose(b, a, atol=1e-4)
    # the bundle carries the run's quality control: the same flags and scores
    assert (tmp_path / "bundle" / "quality.json").is_file()
    want = (tmp_path / "torch" / "quality.csv").read_text().splitlines()
    assert len(want) == len(masks) + 1
    for got in ((tmp_path / "onnx" / "quality.csv").read_text().splitlines(), (tmp_path / "run_onnx" / "quality.csv").read_text().splitlines()):
        assert [r.split(",")[:2] + r.split(",")[4:5] for r in got] == [r.split(",")[:2] + r.split(",")[4:5] for r in want]


def test_an_export_folder_is_remade_only_by_export(runs, tmp_path, capsys):
    _, run = runs[2]
    run_cli("export", run, "--out", tmp_path / "b")
    run_cli("export", run, "--out", tmp_path / "b")  # its own folder: written again
    assert sorted(p.name for p in (tmp_path / "b").iterdir()) == [".medseg_owner", "bundle.json", "model.onnx", "quality.json"]
