"""Outputs never land among the inputs, files get the user's umask, paths print as written, and Ctrl-C says
how to resume (issue 16, defects 1, 7, 10 and 11)."""

from __future__ import annotations

import hashlib
import os
import shutil
import stat
from pathlib import Path

import pytest

from medseg.data.phantom import make_phantom_dataset
from medseg.io.atomic import write_json
from tests.conftest import run_cli

FAST = ["--epochs", "1", "--iterations", "2", "--batch-size", "2", "--features", "4", "--depth", "2", "--threads", "1",
        "--no-plan"]


def checksums(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def run2d(tmp_path_factory) -> tuple[Path, Path]:
    tmp = tmp_path_factory.mktemp("safety")
    data = make_phantom_dataset(tmp / "data", n_patients=3, slices_per_patient=2, size=48, seed=3)
    run = tmp / "run"
    run_cli("train", data, "--out", run, *FAST)
    return data, run


@pytest.fixture
def scans(run2d, tmp_path) -> Path:
    data, _ = run2d
    folder = tmp_path / "scans"
    folder.mkdir()
    for p in sorted((data / "images").iterdir())[:2]:
        shutil.copy(p, folder / p.name)
    return folder


def test_predict_refuses_to_write_into_the_folder_of_its_inputs(run2d, scans, capsys):
    _, run = run2d
    before = checksums(scans)
    run_cli("predict", run, scans, "--out", scans, code=2)
    assert "holds the scans" in capsys.readouterr().err
    one = next(iter(sorted(scans.iterdir())))
    run_cli("predict", run, one, "--out", scans, "--force", code=2)  # a file's own folder: refused even so
    assert checksums(scans) == before


def test_predict_into_a_folder_inside_the_inputs_needs_force(run2d, scans, capsys):
    _, run = run2d
    before = checksums(scans)
    run_cli("predict", run, scans, "--out", scans / "masks", code=2)
    err = " ".join(capsys.readouterr().err.split())
    assert "inside the input folder" in err and "--force" in err
    assert checksums(scans) == before
    run_cli("predict", run, scans, "--out", scans / "masks", "--force")
    assert {k: v for k, v in checksums(scans).items() if not k.startswith("masks")} == before
    assert len(list((scans / "masks").glob("*.png"))) >= 2


@pytest.mark.parametrize("umask,mode", [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_written_files_follow_the_umask(tmp_path, umask, mode):
    old = os.umask(umask)
    try:
        write_json(tmp_path / "a.json", {"x": 1})
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "a.json").stat().st_mode) == mode


def test_predictions_and_run_files_are_readable_by_the_group(run2d, scans, tmp_path):
    _, run = run2d
    old = os.umask(0o022)
    try:
        run_cli("predict", run, scans, "--out", tmp_path / "out")
    finally:
        os.umask(old)
    files = [p for p in (tmp_path / "out").iterdir() if p.is_file()]
    assert files and all(stat.S_IMODE(p.stat().st_mode) & 0o044 == 0o044 for p in files)


@pytest.mark.parametrize("name", ["q[/z]", "sub[i]ject", "[bold]x"])
def test_paths_are_printed_as_written(run2d, tmp_path, capsys, name):
    _, run = run2d
    run_cli("predict", run, tmp_path / name, "--out", tmp_path / "o", code=2)
    assert name in capsys.readouterr().err
    run_cli("inspect", tmp_path / name, code=2)
    assert name in capsys.readouterr().err


def test_ctrl_c_in_training_says_how_to_resume(run2d, tmp_path, capsys, monkeypatch):
    import medseg.training.run as training_run

    data, _ = run2d

    def interrupted(setup, callbacks=None, resume=False):
        (Path(setup.out) / "checkpoints").mkdir(parents=True)
        (Path(setup.out) / "checkpoints" / "last.json").write_text("{}")
        raise KeyboardInterrupt

    monkeypatch.setattr(training_run, "train", interrupted)
    out = tmp_path / "run"
    run_cli("train", data, "--out", out, *FAST, code=130)
    err = "".join(capsys.readouterr().err.split())  # rich wraps long paths anywhere
    assert f"medsegtrain--resume{out}" in err and f"{out}/checkpoints" in err

    def interrupted_early(setup, callbacks=None, resume=False):
        raise KeyboardInterrupt

    monkeypatch.setattr(training_run, "train", interrupted_early)
    run_cli("train", data, "--out", tmp_path / "run2", *FAST, code=130)
    assert "nothing to resume" in " ".join(capsys.readouterr().err.split())


def test_an_output_path_that_is_a_file_is_a_clear_error(run2d, scans, tmp_path, capsys):
    _, run = run2d
    blocker = tmp_path / "not_a_folder"
    blocker.write_text("the user's file")
    run_cli("predict", run, scans, "--out", blocker, code=2)
    err = capsys.readouterr().err
    assert "error:" in err and "not_a_folder" in err and "Traceback" not in err
    assert blocker.read_text() == "the user's file"
    run_cli("inspect", run2d[0], "--out", tmp_path, code=2)  # a folder where the JSON file should go
    err = capsys.readouterr().err
    assert "error:" in err and "Traceback" not in err


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_an_unwritable_output_folder_is_a_clear_error(run2d, scans, tmp_path, capsys):
    _, run = run2d
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    run_cli("predict", run, scans, "--out", locked / "out", code=2)
    assert "locked" in capsys.readouterr().err


@pytest.mark.parametrize("flag,value", [("--patients", "0"), ("--size", "-5"), ("--slices", "0")])
def test_synth_refuses_impossible_sizes(tmp_path, capsys, flag, value):
    run_cli("synth", tmp_path / "d", flag, value, code=2)
    assert flag in capsys.readouterr().err
    assert not (tmp_path / "d").exists()


def test_weights_of_another_shape_than_the_config_are_a_clear_error(run2d, tmp_path, capsys):
    import json

    _, run = run2d
    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    config = json.loads((copy / "model.json").read_text())
    config["features"] = 8  # the weights were trained with 4
    (copy / "model.json").write_text(json.dumps(config))
    run_cli("predict", copy, tmp_path, "--out", tmp_path / "o", code=2)
    err = " ".join(capsys.readouterr().err.split())
    assert "do not match the model config" in err and "model.safetensors" in err


def test_training_never_replaces_files_it_did_not_write(run2d, tmp_path, capsys):
    data, _ = run2d
    out = tmp_path / "mine"
    out.mkdir()
    (out / "model.json").write_text('{"mine": true}')
    run_cli("train", data, "--out", out, *FAST, code=2)
    assert "model.json" in capsys.readouterr().err
    assert (out / "model.json").read_text() == '{"mine": true}' and sorted(p.name for p in out.iterdir()) == ["model.json"]


def test_a_volume_given_to_a_2d_run_is_a_clear_error(run2d, tmp_path, capsys):
    import numpy as np

    from medseg.io import Geometry, write_image

    _, run = run2d
    volume = tmp_path / "scan.nii.gz"
    write_image(volume, np.zeros((1, 8, 8, 4), np.float32), Geometry((1.0, 1.0, 1.0), (0.0, 0.0, 0.0), tuple(np.eye(3).ravel())))
    run_cli("predict", run, volume, "--out", tmp_path / "o", code=2)
    err = " ".join(capsys.readouterr().err.split())
    assert "scan.nii.gz" in err and "trained on 2D images" in err and "Traceback" not in err


def test_predict_replaces_existing_outputs_only_when_told(run2d, scans, tmp_path, capsys):
    _, run = run2d
    out = tmp_path / "out"
    run_cli("predict", run, scans, "--out", out)
    first = checksums(out)
    mine = out / "notes.txt"
    mine.write_text("mine")
    run_cli("predict", run, scans, "--out", out, code=2)  # the masks of the first run are there now
    err = " ".join(capsys.readouterr().err.split())
    assert "would be replaced" in err and "--overwrite" in err
    assert checksums(out) == {**first, "notes.txt": checksums(out)["notes.txt"]}
    run_cli("predict", run, scans, "--out", out, "--overwrite")
    assert set(checksums(out)) == set(first) | {"notes.txt"} and mine.read_text() == "mine"


def test_synth_and_demo_write_again_only_into_their_own_folder(tmp_path, capsys):
    run_cli("synth", tmp_path / "d", "--patients", "3", "--slices", "1", "--size", "32")
    run_cli("synth", tmp_path / "d", "--patients", "1", "--slices", "1", "--size", "32")  # its own folder: remade
    assert len(list((tmp_path / "d" / "images").iterdir())) == 1  # not a mix of two phantoms
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "a.png").write_bytes(b"x")
    run_cli("synth", tmp_path / "mine", code=2)
    run_cli("demo", "--out", tmp_path / "d", code=2)  # synth's folder is not the demo's
    assert "not empty" in capsys.readouterr().err
    assert sorted(p.name for p in (tmp_path / "mine").iterdir()) == ["a.png"]


def test_training_off_a_terminal_writes_one_line_per_epoch_and_says_each_thing_once(run2d, tmp_path, capsys):
    data, _ = run2d
    run_cli("train", data, "--out", tmp_path / "run", "--epochs", "3", "--iterations", "1", "--batch-size", "2",
            "--features", "4", "--depth", "2", "--threads", "1")
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("epoch ")]
    assert [line.split(",")[0] for line in lines] == ["epoch 0", "epoch 1", "epoch 2"]
    assert all("loss" in line and "val dice" in line for line in lines)
    flat = " ".join(err.split())
    for said in ("found 6 cases", "report:", "plan (made from the data"):
        assert flat.count(said) == 1, f"{said!r} said {flat.count(said)} times"


def test_version(capsys):
    import medseg

    run_cli("--version")
    assert capsys.readouterr().out.strip().startswith(f"medseg {medseg.__version__}")


def test_the_run_records_what_it_ran_with(run2d):
    import json

    import torch

    _, run = run2d
    env = json.loads((run / "medseg_run.json").read_text())["environment"]
    assert env["torch"] == torch.__version__ and env["device"] == "cpu" and env["precision"] in ("bfloat16", "float32")
    assert env["threads"] >= 1 and env["python"].count(".") == 2
    assert "Python" in (run / "report.html").read_text()


def test_demo_adopts_its_own_folder_from_before_the_mark(tmp_path, monkeypatch):
    """A demo_out/ written before demo marked its folders (the demo's entries only, a phantom, a run on out/data)
    is remade; a folder that only has the same names is the user's and is refused."""
    import json

    import medseg.data.phantom as phantom

    out = tmp_path / "demo_out"
    for name in ("data", "run", "predictions"):
        (out / name).mkdir(parents=True)
    (out / "preview.png").write_bytes(b"old")
    (out / "data" / "scan001.txt").write_text("a user's project with the same folder names")
    run_cli("demo", "--out", out, code=2)  # no phantom and no run on out/data: the user's, refused
    assert (out / "data" / "scan001.txt").is_file() and not (out / ".medseg_owner").exists()
    (out / "data" / "scan001.txt").unlink()
    (out / "data" / "labels.json").write_text("{}")
    (out / "run" / "medseg_run.json").write_text(json.dumps({"data": str(out / "data")}))

    class Stop(Exception):
        pass

    def stop(*args, **kwargs):
        raise Stop  # past the folder checks: enough for this test

    monkeypatch.setattr(phantom, "make_phantom_dataset", stop)
    with pytest.raises(Stop):
        run_cli("demo", "--out", out)
    assert (out / ".medseg_owner").read_text().strip() == "demo" and not (out / "run").exists()
