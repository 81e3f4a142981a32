"""End to end on small data: train → evaluate → predict through the CLI, resume, DRIVE."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from medseg.cli.main import main
from medseg.data.phantom import make_phantom_dataset
from medseg.runfolder.history import read_history
from tests.conftest import shared_path
from tests.helpers2d import write_disc_dataset

FAST = ["--epochs", "2", "--iterations", "3", "--batch-size", "2", "--features", "4", "--depth", "2", "--threads", "2"]


def run_cli(*args: str) -> None:
    try:
        main([str(a) for a in args])
    except SystemExit as e:
        assert e.code in (0, None), f"medseg {' '.join(map(str, args))} exited with {e.code}"


@pytest.fixture(scope="module")
def phantom_run(tmp_path_factory) -> tuple[Path, Path]:
    tmp = tmp_path_factory.mktemp("phantom")
    data = make_phantom_dataset(tmp / "data", n_patients=5, slices_per_patient=2, size=64, seed=1)
    run = tmp / "run"
    run_cli("train", data, "--out", run, *FAST)
    return data, run


def test_train_writes_a_complete_run_folder(phantom_run):
    data, run = phantom_run
    for name in ("medseg_run.json", "model.safetensors", "model.json", "split.json", "labels.json", "history.csv",
                 "checkpoints/last.safetensors", "checkpoints/last.json", "plots/loss.png"):
        assert (run / name).is_file(), name
    info = json.loads((run / "medseg_run.json").read_text())
    assert info["labels"]["kind"] == "index" and info["labels"]["names"] == ["background", "body", "lung", "tumour"]
    assert json.loads((run / "model.json").read_text())["features"] == 4
    rows = read_history(run / "history.csv")
    assert [r["epoch"] for r in rows] == [0, 1]
    assert all(np.isfinite(r["train_loss"]) and r["val_loss"] is not None for r in rows)


def test_split_keeps_patients_together(phantom_run):
    _, run = phantom_run
    split = json.loads((run / "split.json").read_text())
    groups = {name: {e["group"] for e in split[name]} for name in ("train", "val", "test")}
    assert groups["train"] and groups["val"] and groups["test"]
    assert not (groups["train"] & groups["test"]) and not (groups["train"] & groups["val"]) and not (groups["val"] & groups["test"])


def test_evaluate_writes_per_image_csv_and_summary(phantom_run):
    _, run = phantom_run
    run_cli("evaluate", run)
    summary = json.loads((run / "evaluation" / "summary.json").read_text())
    split = json.loads((run / "split.json").read_text())
    assert summary["images"] == len(split["test"])
    assert set(summary["classes"]) == {"body", "lung", "tumour"}
    lines = (run / "evaluation" / "per_image.csv").read_text().strip().splitlines()
    assert len(lines) == 1 + len(split["test"]) and "dice_lung" in lines[0]
    assert 0.0 <= summary["accuracy"]["mean"] <= 1.0


def test_predict_writes_masks_at_original_size(phantom_run, tmp_path):
    data, run = phantom_run
    image = sorted((data / "images").iterdir())[0]
    out = tmp_path / "pred"
    run_cli("predict", run, image, "--out", out, "--format", "color")
    mask = Image.open(out / f"{image.stem}.png")
    assert mask.size == Image.open(image).size and mask.mode == "RGB"
    assert (out / f"{image.stem}_overlay.png").is_file()
    run_cli("predict", run, image, "--out", out / "idx", "--format", "index", "--no-overlay")
    ids = np.asarray(Image.open(out / "idx" / f"{image.stem}.png"))
    assert ids.max() <= 3 and not (out / "idx" / f"{image.stem}_overlay.png").exists()


def test_resized_training_predicts_at_original_size(tmp_path):
    data = write_disc_dataset(tmp_path / "discs", n=5, size=40)
    run = tmp_path / "run"
    run_cli("train", data, "--out", run, "--size", "32", "--split", "60/20/20", *FAST)
    out = tmp_path / "pred"
    run_cli("predict", run, data / "images", "--out", out)
    assert len(list(out.glob("case?.png"))) == 5
    m = np.asarray(Image.open(out / "case0.png"))
    assert m.shape == (40, 40) and set(np.unique(m)) <= {0, 255}  # written in the training masks' 0/255 encoding


class _Interrupt(Exception):
    pass


class _StopAfter:
    def __init__(self, epochs: int):
        self.epochs = epochs

    def on_step(self, *a) -> None:
        pass

    def on_epoch_end(self, row) -> None:
        if row["epoch"] + 1 >= self.epochs:
            raise _Interrupt


def test_interrupted_training_resumes(tmp_path):
    from medseg.training.config import TrainConfig
    from medseg.training.run import train
    from medseg.training.setup import TrainSetup

    data = write_disc_dataset(tmp_path / "discs", n=5, size=32)
    setup = TrainSetup(str(data), str(tmp_path / "run"), model_kwargs={"features": 4, "depth": 2},
                         train=TrainConfig(max_epochs=4, iterations_per_epoch=2, batch_size=2, patience=0))
    with pytest.raises(_Interrupt):
        train(setup, callbacks=_StopAfter(2))
    assert [r["epoch"] for r in read_history(tmp_path / "run" / "history.csv")] == [0, 1]
    with pytest.raises(SystemExit) as e:  # a second plain `train` into the same folder is refused
        main(["train", str(data), "--out", str(tmp_path / "run")])
    assert e.value.code == 2
    run_cli("train", "--resume", tmp_path / "run")
    assert [r["epoch"] for r in read_history(tmp_path / "run" / "history.csv")] == [0, 1, 2, 3]
    state = json.loads((tmp_path / "run" / "checkpoints" / "last.json").read_text())
    assert state["info"]["finished"] and state["info"]["stopped_by"] == "max_epochs"


def test_time_budget_stops_training(tmp_path):
    data = write_disc_dataset(tmp_path / "discs", n=4, size=32)
    run = tmp_path / "run"
    run_cli("train", data, "--out", run, "--features", "4", "--depth", "2", "--time-budget", "2s",
            "--epochs", "100000", "--iterations", "2", "--batch-size", "2", "--patience", "0")
    state = json.loads((run / "checkpoints" / "last.json").read_text())
    assert state["info"]["stopped_by"] == "time_budget"
    assert state["info"]["epoch"] < 100000 - 1


@pytest.mark.shared
def test_drive_trains_and_predicts(tmp_path):
    drive = shared_path("datasets", "drive")
    data = tmp_path / "drive4"
    for sub, pattern in (("images", "{}_training.tif"), ("1st_manual", "{}_manual1.gif"), ("mask", "{}_training_mask.gif")):
        (data / sub).mkdir(parents=True)
        for k in ("21", "22", "23", "24"):
            os.symlink(drive / "training" / sub / pattern.format(k), data / sub / pattern.format(k))
    run = tmp_path / "run"
    run_cli("train", data, "--out", run, "--split", "50/25/25", "--patch-size", "64", *FAST)
    info = json.loads((run / "medseg_run.json").read_text())
    assert info["preprocess"]["channels"] == 3 and info["labels"]["kind"] == "binary"
    test_image = drive / "testing" / "images" / "01_test.tif"
    run_cli("predict", run, test_image, "--out", tmp_path / "pred")
    pred = np.asarray(Image.open(tmp_path / "pred" / "01_test.png"))
    assert pred.shape == (584, 565) and set(np.unique(pred)) <= {0, 255}
    run_cli("evaluate", run, "--data", drive / "testing", "--out", tmp_path / "eval")
    summary = json.loads((tmp_path / "eval" / "summary.json").read_text())
    assert summary["images"] == 20 and summary["fov_restricted"] == 20
