"""3D volumes end to end: train → predict → evaluate through the CLI, geometry kept, resume,
bad cases in a batch, split files, and the real Hippocampus data."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from medseg.data.split import read_split_file
from medseg.data.labels import LabelScheme
from medseg.data.dataset_kind import is_volume_dataset
from medseg.data.preprocess3d import Preprocess3D
from medseg.errors import DataError
from medseg.inference.predictor import Predictor
from medseg.io import Geometry, ImageData, read_image, write_image
from medseg.runfolder.history import read_history
from medseg.planning.topology import plan_topology
from medseg.training.setup import auto_patch_size, fit_resunet_stages
from medseg.models import create_model
from tests.conftest import run_cli, shared_path
from tests.helpers3d import GEOMETRY, oblique_direction, regrid, write_msd_dataset

FAST = ["--epochs", "2", "--iterations", "2", "--features", "4", "--depth", "2", "--threads", "1"]


pytestmark = pytest.mark.usefixtures("one_thread")



def geometry_of(path: Path) -> tuple:
    img = sitk.ReadImage(str(path))
    return img.GetSize(), img.GetSpacing(), img.GetOrigin(), img.GetDirection()


def assert_same_grid(a: Path, b: Path, tol: float = 0.0) -> None:
    (sa, spa, oa, da), (sb, spb, ob, db) = geometry_of(a), geometry_of(b)
    assert sa == sb
    np.testing.assert_allclose(spb, spa, rtol=tol, atol=tol)
    np.testing.assert_allclose(ob, oa, rtol=tol, atol=tol)
    np.testing.assert_allclose(db, da, rtol=0, atol=tol)


@pytest.fixture(scope="module")
def blob_run(tmp_path_factory) -> tuple[Path, Path]:
    tmp = tmp_path_factory.mktemp("blobs")
    data = write_msd_dataset(tmp / "data", n=6)
    run = tmp / "run"
    run_cli("train", data, "--out", run, "--split", "66/17/17", *FAST)
    return data, run


# --------------------------------------------------------------------------- units


def test_volume_dataset_detection(tmp_path):
    (tmp_path / "msd").mkdir()
    (tmp_path / "msd" / "dataset.json").write_text("{}")
    (tmp_path / "plain" / "images").mkdir(parents=True)
    write_image(tmp_path / "plain" / "images" / "a.nrrd", np.zeros((1, 4, 4, 4), np.float32))
    (tmp_path / "flat2d" / "images").mkdir(parents=True)
    (tmp_path / "flat2d" / "images" / "a.png").write_bytes(b"")
    assert is_volume_dataset(tmp_path / "msd") and is_volume_dataset(tmp_path / "plain")
    assert not is_volume_dataset(tmp_path / "flat2d") and not is_volume_dataset(tmp_path / "missing")


def test_split_file_matches_names_paths_and_channel_endings(tmp_path):
    keys = ["hippocampus_001", "hippocampus_003", "hippocampus_004", "hippocampus_006"]
    f = tmp_path / "split.json"
    f.write_text(json.dumps({"train": ["hippocampus_001", "./imagesTr/hippocampus_003.nii.gz", "hippocampus_004_0000.nii.gz"],
                             "val": [{"key": "hippocampus_006"}]}))
    assert read_split_file(f, keys) == {"train": keys[:3], "val": keys[3:], "test": []}
    f.write_text(json.dumps({"train": ["hippocampus_001", "hippocampus_999"], "val": []}))
    with pytest.raises(DataError, match="hippocampus_999"):
        read_split_file(f, keys)
    f.write_text(json.dumps({"train": ["hippocampus_001"], "val": ["hippocampus_001.nii.gz"]}))
    with pytest.raises(DataError, match="both"):
        read_split_file(f, keys)


def _topology(patch, spacing, depth):
    return plan_topology(patch, spacing, depth).to_json()


def test_patch_and_network_plan():
    assert auto_patch_size([(35, 51, 35), (36, 50, 37), (34, 47, 40)], 3, on_gpu=False) == (40, 56, 40)
    assert auto_patch_size([(300, 300, 90)], 3, on_gpu=False) == (128, 128, 96)
    iso = _topology((40, 56, 40), (1.0, 1.0, 1.0), 3)
    assert iso["strides"] == [[2, 2, 2]] * 3 and iso["kernel_sizes"] == [[3, 3, 3]] * 4
    thick = _topology((128, 128, 16), (0.8, 0.8, 5.0), 4)  # thick slices: no pooling or 3-wide kernels along z at first
    assert thick["strides"][0] == [2, 2, 1] and thick["kernel_sizes"][0] == [3, 3, 1]
    assert _topology((64, 64, 8), (1.0, 1.0, 1.0), 3)["strides"] == [[2, 2, 2], [2, 2, 1], [2, 2, 1]]


def test_resunet_stages_fit_a_small_patch():
    """The residual U-Net's default six stages would leave a 1-voxel bottleneck on a Hippocampus-sized patch
    (it downsamples by 32); fitted, it keeps at least 4 voxels per pooled axis and runs."""
    kw = fit_resunet_stages({"features": 4}, (24, 32, 24), (1.0, 1.0, 1.0))
    assert kw["blocks_per_stage"] == [1, 3, 4, 6] and kw["strides"] == [[2, 2, 2], [2, 2, 2], [1, 2, 1]]
    net = create_model("resunet", 3, 1, 3, **kw)
    assert net(torch.zeros(1, 1, 24, 32, 24)).shape == (1, 3, 24, 32, 24)
    assert len(fit_resunet_stages({"depth": 1}, (128, 128, 128), (1.0, 1.0, 1.0))["strides"]) == 1  # --depth caps
    assert fit_resunet_stages({"strides": [2]}, (8, 8, 8), None) == {"strides": [2]}  # a plan's own wins
    assert len(create_model("resunet", 2, 1, 2, features=4, depth=2).stages) == 3  # what `compare --depth` passes


def test_prediction_lands_on_the_input_grid():
    """A fixed 'model' that thresholds intensity: after crop, resampling and back, its labels
    must coincide with the thresholded input voxel for voxel (no shift, flip or resize)."""
    shape, spacing = (30, 26, 14), (0.9, 1.1, 2.6)
    grids = np.meshgrid(*[(np.arange(s) + 0.5) * sp for s, sp in zip(shape, spacing)], indexing="ij")
    centre = (12.0, 15.0, 17.0)
    inside = sum(((g - c) / 7.0) ** 2 for g, c in zip(grids, centre)) < 1
    image = np.where(inside, 1.0, 0.1).astype(np.float32)
    image[:3], image[:, -2:] = 0, 0  # cropped away, then put back
    conv = torch.nn.Conv3d(1, 2, 1)
    with torch.no_grad():
        conv.weight[:] = torch.tensor([-10.0, 10.0]).view(2, 1, 1, 1, 1)
        conv.bias[:] = torch.tensor([5.0, -5.0])
    pre = Preprocess3D(target_spacing=(1.0, 1.0, 1.0), normalization="none")
    predictor = Predictor(conv, pre, LabelScheme("index", [0, 4], ["background", "blob"]), (32, 32, 32), device="cpu")
    geometry = Geometry(spacing, (3.0, -2.0, 5.0), oblique_direction())
    pred = predictor.predict(ImageData(image[None], geometry), probabilities=True)
    assert pred.labels.shape == shape and pred.labels.dtype == np.uint8 and set(np.unique(pred.labels)) == {0, 1}
    values = predictor.scheme.encode(pred.labels)[0]  # what a prediction file holds: the label values
    assert set(np.unique(values)) == {0, 4}
    truth = inside & (image > 0)
    found = values == 4
    assert 2 * np.sum(found & truth) / (found.sum() + truth.sum()) > 0.95
    assert pred.probabilities.shape == (2, *shape)
    np.testing.assert_allclose(pred.probabilities.sum(0), 1.0, atol=1e-5)


# --------------------------------------------------------------------------- end to end


def test_train_writes_a_3d_run_folder(blob_run):
    _, run = blob_run
    for name in ("medseg_run.json", "model.safetensors", "model.json", "split.json", "labels.json", "history.csv",
                 "checkpoints/last.json", "plots/loss.png"):
        assert (run / name).is_file(), name
    info = json.loads((run / "medseg_run.json").read_text())
    assert info["task"] == "segmentation3d" and info["labels"]["names"] == ["background", "bright", "dark"]
    np.testing.assert_allclose(info["preprocess"]["target_spacing"], GEOMETRY.spacing, rtol=1e-6)
    assert len(info["patch_size"]) == 3 and all(p % 8 == 0 for p in info["patch_size"])
    assert info["train"]["batch_size"] == 2 and info["counts"] == {"train": 4, "val": 1, "test": 1}
    model = json.loads((run / "model.json").read_text())
    assert model["spatial_dims"] == 3 and model["features"] == 4
    assert model["strides"][0] == [2, 2, 1]  # z (2.5 mm) is over twice as coarse as y (1 mm): not pooled first
    assert [r["epoch"] for r in read_history(run / "history.csv")] == [0, 1]
    assert len(list((run / "preprocessed").glob("*_image.npy"))) == 5  # train + val


@pytest.mark.parametrize("suffix, tol", [(".nii.gz", 1e-6), (".mha", 0.0)])
def test_predict_writes_onto_the_inputs_own_grid(blob_run, tmp_path, suffix, tol):
    data, run = blob_run
    src = regrid(data / "imagesTr" / "case_000.nii.gz", tmp_path / "in" / f"odd{suffix}")  # other spacing, size, origin
    assert geometry_of(src)[0] != geometry_of(data / "imagesTr" / "case_000.nii.gz")[0]
    run_cli("predict", run, src, "--out", tmp_path / "pred", "--tta", "--save-probabilities")
    out = tmp_path / "pred" / f"odd{suffix}"
    assert_same_grid(src, out, tol)  # bit for bit in MHA; NIfTI stores geometry as float32
    labels = read_image(out).array
    assert labels.dtype == np.uint8 and set(np.unique(labels)) <= {0, 1, 2}
    probs = read_image(tmp_path / "pred" / f"odd_probabilities{suffix}").array
    assert probs.shape == (3, *labels.shape[1:])


def test_prediction_runs_in_the_validated_precision_unless_told_not_to(blob_run, tmp_path):
    """Predictors use training's autocast (bf16 where the CPU has it, as validation does); ``amp=False`` and
    ``--no-amp`` give float32. The two agree up to bf16 rounding."""
    from medseg.runtime.device import amp_dtype_for

    data, run = blob_run
    image = read_image(data / "imagesTr" / "case_000.nii.gz")
    amp, fp32 = Predictor.from_run(run, mirror=True), Predictor.from_run(run, mirror=True, amp=False)
    assert amp.amp_dtype == amp_dtype_for(torch.device("cpu")) and fp32.amp_dtype is None
    a, b = amp.predict(image, probabilities=True), fp32.predict(image, probabilities=True)
    assert np.abs(a.probabilities - b.probabilities).max() < 0.05
    assert (a.labels == b.labels).mean() > 0.99
    run_cli("predict", run, data / "imagesTr" / "case_000.nii.gz", "--out", tmp_path / "pred", "--tta", "--no-amp")
    np.testing.assert_array_equal(read_image(tmp_path / "pred" / "case_000.nii.gz").array[0], b.labels)


def test_evaluate_writes_per_case_csv_and_summary(blob_run):
    _, run = blob_run
    run_cli("evaluate", run)
    summary = json.loads((run / "evaluation" / "summary.json").read_text())
    assert summary["images"] == 1 and summary["source"] == "test split" and set(summary["classes"]) == {"bright", "dark"}
    lines = (run / "evaluation" / "per_case.csv").read_text().strip().splitlines()
    assert len(lines) == 2 and "dice_bright" in lines[0] and lines[1].startswith("case_")


def test_a_bad_case_is_reported_and_the_others_are_written(blob_run, tmp_path, capsys):
    data, run = blob_run
    folder = tmp_path / "batch"
    folder.mkdir()
    for name in ("case_001.nii.gz", "case_002.nii.gz"):
        shutil.copy(data / "imagesTr" / name, folder / name)
    raw = (data / "imagesTr" / "case_003.nii.gz").read_bytes()
    (folder / "case_003.nii.gz").write_bytes(raw[: len(raw) // 2])
    run_cli("predict", run, folder, "--out", tmp_path / "pred", code=1)
    assert sorted(p.name for p in (tmp_path / "pred").iterdir()) == ["case_001.nii.gz", "case_002.nii.gz", "quality.csv"]
    assert [r.split(",")[0] for r in (tmp_path / "pred" / "quality.csv").read_text().splitlines()] == ["case", "case_001", "case_002"]
    err = "".join(capsys.readouterr().err.split())  # the console wraps long paths anywhere
    assert "1input(s)failed" in err and "case_003.nii.gz" in err and ("truncated" in err or "incomplete" in err)


def test_3d_training_resumes(blob_run, tmp_path):
    from medseg.training.config import TrainConfig
    from medseg.training.run import train
    from medseg.training.setup import TrainSetup

    class Stop(Exception):
        pass

    class StopAfterTwoEpochs:
        def on_step(self, *a) -> None:
            pass

        def on_epoch_end(self, row) -> None:
            if row["epoch"] == 1:
                raise Stop

    data, _ = blob_run
    run = tmp_path / "run"
    setup = TrainSetup(str(data), str(run), split=(0.6, 0.4, 0.0), model_kwargs={"features": 4, "depth": 2},
                         train=TrainConfig(max_epochs=3, iterations_per_epoch=1, patience=0, threads=1))
    with pytest.raises(Stop):
        train(setup, callbacks=StopAfterTwoEpochs())
    assert [r["epoch"] for r in read_history(run / "history.csv")] == [0, 1]
    run_cli("train", data, "--out", run, code=2)  # a second plain `train` into the same folder is refused
    run_cli("train", "--resume", run)
    assert [r["epoch"] for r in read_history(run / "history.csv")] == [0, 1, 2]
    state = json.loads((run / "checkpoints" / "last.json").read_text())
    assert state["info"]["finished"] and state["info"]["stopped_by"] == "max_epochs"
    run_cli("evaluate", run)  # no test split: the validation cases
    assert json.loads((run / "evaluation" / "summary.json").read_text())["source"] == "val split"


def test_2d_only_options_are_refused_for_3d_data(blob_run, tmp_path, capsys):
    data, _ = blob_run
    run_cli("train", data, "--out", tmp_path / "run", "--size", "64", code=2)
    assert "--size" in capsys.readouterr().err
    run_cli("predict", blob_run[1], data / "imagesTr", "--out", tmp_path / "pred", "--format", "color", code=2)
    assert "--format" in capsys.readouterr().err and not (tmp_path / "pred").exists()


@pytest.mark.shared
def test_hippocampus_trains_and_predicts_on_its_grid(tmp_path):
    root = shared_path("datasets", "hippocampus")
    official = json.loads((root / "split_160_40.json").read_text())
    split = tmp_path / "split.json"
    split.write_text(json.dumps({"train": official["train"][:4], "val": official["val"][:2]}))
    run = tmp_path / "run"
    run_cli("train", root, "--out", run, "--split-file", split, "--epochs", "1", "--iterations", "2",
            "--features", "4", "--threads", "1")
    info = json.loads((run / "medseg_run.json").read_text())
    assert info["labels"]["names"] == ["background", "Anterior", "Posterior"] and info["counts"]["train"] == 4
    assert info["preprocess"]["target_spacing"] == [1.0, 1.0, 1.0]
    src = root / "imagesTr" / f"{official['val'][0]}.nii.gz"
    run_cli("predict", run, src, "--out", tmp_path / "pred")
    out = tmp_path / "pred" / src.name
    assert_same_grid(src, out, 1e-6)
    assert set(np.unique(read_image(out).array)) <= {0, 1, 2}


def test_plain_folders_with_undeclared_labels_and_ct_normalization(tmp_path):
    """images/ + labels/ in NRRD, label values 0/3/7 found in the data (no dataset.json), CT statistics."""
    from tests.helpers3d import blob_case

    rng = np.random.default_rng(3)
    data = tmp_path / "plain"
    for i in range(3):
        image, label = blob_case(rng)
        write_image(data / "images" / f"p{i}.nrrd", image[None], GEOMETRY)
        write_image(data / "labels" / f"p{i}.nrrd", np.array([0, 3, 7], np.uint8)[label][None], GEOMETRY)
    run = tmp_path / "run"
    run_cli("train", data, "--out", run, "--split", "67/33/0", "--normalization", "ct", "--patch-size", "16x16x8",
            "--epochs", "1", "--iterations", "1", "--features", "4", "--depth", "1", "--threads", "1")
    info = json.loads((run / "medseg_run.json").read_text())
    assert info["labels"]["codes"] == [0, 3, 7] and info["patch_size"] == [16, 16, 8]
    stats = info["preprocess"]["stats"][0]
    assert info["preprocess"]["normalization"] == "ct" and 60 < stats["mean"] < 200 and stats["p005"] < stats["p995"]
    assert (run / "preprocessed" / "intensity_stats.json").is_file()
    run_cli("predict", run, data / "images" / "p0.nrrd", "--out", tmp_path / "pred")
    out = tmp_path / "pred" / "p0.nrrd"
    assert_same_grid(data / "images" / "p0.nrrd", out, 1e-9)
    assert set(np.unique(read_image(out).array)) <= {0, 3, 7}
    run_cli("evaluate", run, "--data", data, "--out", tmp_path / "eval")
    summary = json.loads((tmp_path / "eval" / "summary.json").read_text())
    assert summary["images"] == 3 and set(summary["classes"]) == {"label_3", "label_7"}


def test_predict_a_dicom_series_folder(blob_run, tmp_path):
    from medseg.io.dicom import read_dicom_series, write_dicom_series

    data, run = blob_run
    image = read_image(data / "imagesTr" / "case_004.nii.gz")
    series = tmp_path / "series" / "patient7"
    write_dicom_series(series, np.round(image.array).astype(np.int16), image.geometry, modality="MR")
    run_cli("predict", run, series, "--out", tmp_path / "pred")
    out = tmp_path / "pred" / "patient7.nii.gz"
    ref = read_dicom_series(series)
    labels = read_image(out)
    assert labels.spatial_shape == ref.spatial_shape
    np.testing.assert_allclose(labels.geometry.spacing, ref.geometry.spacing, rtol=1e-6)
    np.testing.assert_allclose(labels.geometry.origin, ref.geometry.origin, atol=1e-5)
    np.testing.assert_allclose(labels.geometry.direction, ref.geometry.direction, atol=1e-6)


def test_empty_labels_are_allowed_and_named_in_a_warning(tmp_path, caplog):
    import logging

    from medseg.data.cache import PreprocessedCache
    from medseg.data.dataset3d import preprocess_cases
    from medseg.data.layouts import discover_volume_cases

    data = write_msd_dataset(tmp_path / "blobs", n=3)
    label = read_image(data / "labelsTr" / "case_001.nii.gz")
    write_image(data / "labelsTr" / "case_001.nii.gz", np.zeros_like(label.array), label.geometry)
    cases, _ = discover_volume_cases(data)
    with caplog.at_level(logging.WARNING, logger="medseg"):
        out = preprocess_cases(cases, Preprocess3D(target_spacing=(1.2, 1.0, 2.5)), PreprocessedCache(tmp_path / "cache"))
    assert len(out) == 3
    assert "empty label" in caplog.text and "case_001" in caplog.text and "case_000" not in caplog.text
