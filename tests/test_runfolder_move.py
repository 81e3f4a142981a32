"""A run folder works from any working directory and after it is moved; data that moved gets a clear
error and `medseg relocate`."""

from __future__ import annotations

import json
import shutil

import pytest

from tests.conftest import run_cli
from helpers2d import write_disc_dataset
from helpers3d import write_msd_dataset

pytestmark = pytest.mark.usefixtures("one_thread")

FAST_2D = ["--no-plan", "--epochs", "1", "--iterations", "2", "--batch-size", "2", "--features", "4", "--depth", "2",
           "--threads", "1"]
FAST_3D = ["--no-plan", "--epochs", "1", "--iterations", "1", "--features", "4", "--depth", "2", "--threads", "1"]


@pytest.mark.parametrize("dims", [2, 3])
def test_a_run_works_from_elsewhere_after_it_moves_and_after_its_data_moves(tmp_path, monkeypatch, capsys, dims):
    data = (write_disc_dataset(tmp_path / "data", n=8) if dims == 2 else write_msd_dataset(tmp_path / "data", n=5))
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    run_cli("train", "../data", "--out", "run", *(FAST_2D if dims == 2 else FAST_3D))  # relative paths
    split = json.loads((work / "run" / "split.json").read_text())
    assert split["split_format"] == 2 and not any(p.startswith(("/", "..")) for e in split["train"] for p in e["images"])

    moved = tmp_path / "elsewhere" / "run_moved"
    moved.parent.mkdir()
    shutil.move(str(work / "run"), str(moved))
    monkeypatch.chdir(moved.parent)
    run_cli("evaluate", moved)
    assert json.loads((moved / "evaluation" / "summary.json").read_text())["mean_dice"]["n"] >= 1
    sample = next((data / ("images" if dims == 2 else "imagesTr")).iterdir())
    run_cli("predict", moved, sample, "--out", tmp_path / "preds")
    assert any((tmp_path / "preds").iterdir())
    run_cli("calibrate", moved)
    assert (moved / "calibration.json").is_file()
    run_cli("report", moved)
    assert (moved / "report.html").is_file()
    run_cli("train", "--resume", moved)  # finished: reads its setup and split, and says so

    shutil.move(str(data), str(tmp_path / "data_new"))
    capsys.readouterr()
    run_cli("evaluate", moved, code=2)
    err = capsys.readouterr().err
    assert "is missing" in err and "medseg relocate" in err
    run_cli("relocate", moved, tmp_path / "data_new")
    run_cli("evaluate", moved)
    assert json.loads((moved / "medseg_run.json").read_text())["data"] == str((tmp_path / "data_new").resolve())


def test_relocate_refuses_a_folder_without_the_runs_cases(tmp_path, capsys):
    data = write_disc_dataset(tmp_path / "data", n=8)
    run_cli("train", data, "--out", tmp_path / "run", *FAST_2D)
    (tmp_path / "other").mkdir()
    capsys.readouterr()
    run_cli("relocate", tmp_path / "run", tmp_path / "other", code=2)
    assert "is missing" in capsys.readouterr().err
    assert json.loads((tmp_path / "run" / "medseg_run.json").read_text())["data"] == str(data.resolve())


def test_a_split_of_the_old_format_still_reads(tmp_path, monkeypatch):
    from medseg.runfolder.split import read_split

    data = write_disc_dataset(tmp_path / "data", n=4)
    run = tmp_path / "run"
    run.mkdir()
    (run / "medseg_run.json").write_text(json.dumps({"format_version": 1, "data": str(data.resolve())}))
    monkeypatch.chdir(tmp_path)  # old runs stored paths as given on the command line
    (run / "split.json").write_text(json.dumps({
        "fractions": [0.5, 0.5, 0.0], "seed": 0,
        "train": [{"key": "case0", "image": "data/images/case0.png", "masks": ["data/masks/case0.png"], "fov": None,
                   "group": "case0"}],
        "val": [{"key": "case1", "images": [str(data / "images" / "case1.png")], "label": str(data / "masks" / "case1.png")}]}))
    monkeypatch.chdir(run)  # ... and are read from elsewhere: the tail that exists under the data folder is used
    split = read_split(run)
    assert split["train"][0].images == (data.resolve() / "images" / "case0.png",)
    assert split["train"][0].labels == (data.resolve() / "masks" / "case0.png",)
    assert split["val"][0].labels == (data / "masks" / "case1.png",) and split["test"] == []
