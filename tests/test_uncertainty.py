"""`medseg predict --uncertainty` and `medseg calibrate` on tiny trained runs, 2D and 3D."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from PIL import Image

from medseg.inference.temperature import apply_temperature
from medseg.inference.predictor import Predictor
from medseg.io import read_image
from tests.conftest import run_cli
from tests.helpers2d import write_disc_dataset
from tests.helpers3d import regrid, write_msd_dataset

FAST = ["--epochs", "2", "--iterations", "2", "--batch-size", "2", "--features", "4", "--depth", "2", "--threads", "1"]


pytestmark = pytest.mark.usefixtures("one_thread")


def read_csv(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def run2d(tmp_path_factory) -> tuple[Path, Path]:
    tmp = tmp_path_factory.mktemp("u2d")
    data = write_disc_dataset(tmp / "data", n=5, size=40)
    run_cli("train", data, "--out", tmp / "run", *FAST)
    return data, tmp / "run"


@pytest.fixture(scope="module")
def run3d(tmp_path_factory) -> tuple[Path, Path]:
    tmp = tmp_path_factory.mktemp("u3d")
    data = write_msd_dataset(tmp / "data", n=5)
    run_cli("train", data, "--out", tmp / "run", "--split", "60/20/20", *FAST)
    return data, tmp / "run"


def check_calibration_file(run: Path) -> float:
    rec = json.loads((run / "calibration.json").read_text())
    split = json.loads((run / "split.json").read_text())
    assert rec["cases"] == [e["key"] for e in split["val"]] and rec["voxels"] > 0
    assert 0.05 <= rec["temperature"] <= 20 and rec["nll_after"] <= rec["nll_before"] + 1e-9
    assert 0 <= rec["ece_before"] <= 1 and 0 <= rec["ece_after"] <= 1 and len(rec["bins_after"]) == rec["num_bins"]
    assert (run / "calibration_reliability.png").read_bytes()[:4] == b"\x89PNG"
    return rec["temperature"]


def test_2d_predict_uncertainty_writes_maps_and_csv(run2d, tmp_path):
    data, run = run2d
    out = tmp_path / "pred"
    run_cli("predict", run, data / "images", "--out", out, "--uncertainty", "--no-overlay")
    images = sorted((data / "images").glob("*.png"))
    rows = read_csv(out / "uncertainty.csv")
    assert [r["case"] for r in rows] == [p.stem for p in images]
    for img, row in zip(images, rows):
        png = np.asarray(Image.open(out / f"{img.stem}_entropy.png"))
        exact = np.load(out / f"{img.stem}_entropy.npy")
        assert png.dtype == np.uint8 and png.shape == exact.shape == np.asarray(Image.open(img)).shape
        assert exact.dtype == np.float32 and 0 <= exact.min() and exact.max() <= 1
        assert np.abs(png / 255.0 - exact).max() <= 0.5 / 255 + 1e-6
        assert 0 <= float(row["uncertainty"]) <= 1 and row["entropy_map"] == f"{img.stem}_entropy.png"


def test_2d_calibrate_and_the_predictor_applies_it(run2d, tmp_path):
    data, run = run2d
    run_cli("calibrate", run, "--tta")
    t = check_calibration_file(run)
    image = read_image(sorted((data / "images").glob("*.png"))[0])
    raw = Predictor.from_run(run, calibration=False).predict(image, probabilities=True)
    cal = Predictor.from_run(run).predict(image, probabilities=True)
    assert Predictor.from_run(run).temperature == pytest.approx(t)
    np.testing.assert_array_equal(cal.labels, raw.labels)
    np.testing.assert_allclose(cal.probabilities, apply_temperature(raw.probabilities, t), atol=1e-5)


def test_3d_predict_uncertainty_on_the_input_grid(run3d, tmp_path):
    data, run = run3d
    src = regrid(data / "imagesTr" / "case_001.nii.gz", tmp_path / "in" / "odd.nii.gz")  # another size, spacing, origin
    out = tmp_path / "pred"
    run_cli("predict", run, src, "--out", out, "--uncertainty")
    ent, ref = sitk.ReadImage(str(out / "odd_entropy.nii.gz")), sitk.ReadImage(str(src))
    assert ent.GetSize() == ref.GetSize() and ent.GetPixelID() == sitk.sitkFloat32
    np.testing.assert_allclose(ent.GetSpacing(), ref.GetSpacing(), atol=1e-6)
    np.testing.assert_allclose(ent.GetOrigin(), ref.GetOrigin(), atol=1e-5)
    np.testing.assert_allclose(ent.GetDirection(), ref.GetDirection(), atol=1e-6)
    arr = sitk.GetArrayFromImage(ent)
    assert arr.min() >= 0 and arr.max() <= 1 and arr.max() > 0
    (row,) = read_csv(out / "uncertainty.csv")
    assert row["case"] == "odd" and row["entropy_map"] == "odd_entropy.nii.gz" and 0 <= float(row["uncertainty"]) <= 1


def test_3d_calibrate_and_the_predictor_applies_it(run3d):
    data, run = run3d
    run_cli("calibrate", run)
    t = check_calibration_file(run)
    image = read_image(data / "imagesTr" / "case_000.nii.gz")
    raw = Predictor.from_run(run, calibration=False).predict(image, probabilities=True)
    cal = Predictor.from_run(run).predict(image, probabilities=True, uncertainty=True)
    np.testing.assert_array_equal(cal.labels, raw.labels)
    np.testing.assert_allclose(cal.probabilities, apply_temperature(raw.probabilities, t), atol=1e-5)
    assert cal.entropy.shape == cal.labels.shape and cal.uncertainty.region_voxels >= int((cal.labels > 0).sum())


@pytest.mark.parametrize("which", ["run2d", "run3d"])
def test_evaluate_reports_calibration(which, request, tmp_path):
    _, run = request.getfixturevalue(which)
    out = tmp_path / "eval"
    run_cli("evaluate", run, "--out", out)
    cal = json.loads((out / "summary.json").read_text())["calibration"]
    assert 0 <= cal["ece"] <= 1 and cal["voxels"] > 0 and len(cal["bins"]) == cal["num_bins"]
    assert sum(b["count"] for b in cal["bins"]) == cal["voxels"] and cal["temperature"] > 0
    assert (out / "reliability.png").read_bytes()[:4] == b"\x89PNG"
