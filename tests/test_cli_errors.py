"""Bad input reaches the user as one clear message naming the file, exit status 2, no traceback."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from PIL import Image

from medseg.cli.main import main
from tests.helpers2d import write_disc_dataset

FAST = ["--epochs", "1", "--iterations", "1", "--batch-size", "2", "--features", "4", "--depth", "2"]


def fails(capsys, *args) -> str:
    with pytest.raises(SystemExit) as e:
        main([str(a) for a in args])
    err = capsys.readouterr().err
    assert e.value.code == 2, err
    assert "Traceback" not in err
    return " ".join(err.split())


def succeeds(*args) -> None:
    with pytest.raises(SystemExit) as e:
        main([str(a) for a in args])
    assert e.value.code in (0, None)


def test_empty_folder(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    err = fails(capsys, "train", tmp_path / "empty", "--out", tmp_path / "run")
    assert "empty" in err and "error" in err


def test_image_without_mask(tmp_path, capsys):
    data = write_disc_dataset(tmp_path / "d", n=4)
    (data / "masks" / "case2.png").unlink()
    err = fails(capsys, "train", data, "--out", tmp_path / "run", *FAST)
    assert "case2.png" in err


def test_mask_without_image(tmp_path, capsys):
    data = write_disc_dataset(tmp_path / "d", n=4)
    shutil.copy(data / "masks" / "case1.png", data / "masks" / "case9.png")
    err = fails(capsys, "train", data, "--out", tmp_path / "run", *FAST)
    assert "case9.png" in err


def test_truncated_image(tmp_path, capsys):
    data = write_disc_dataset(tmp_path / "d", n=4)
    raw = (data / "images" / "case3.png").read_bytes()
    (data / "images" / "case3.png").write_bytes(raw[: len(raw) // 2])
    err = fails(capsys, "train", data, "--out", tmp_path / "run", "--split", "50/25/25", *FAST)
    assert "case3.png" in err and ("truncated" in err or "corrupt" in err)


def test_size_mismatch(tmp_path, capsys):
    data = write_disc_dataset(tmp_path / "d", n=4)
    Image.fromarray(np.zeros((30, 20), np.uint8)).save(data / "masks" / "case0.png")
    err = fails(capsys, "train", data, "--out", tmp_path / "run", "--split", "50/25/25", *FAST)
    assert "case0.png" in err and "size" in err


def test_unexpected_label_values(tmp_path, capsys):
    data = write_disc_dataset(tmp_path / "d", n=4)
    m = np.asarray(Image.open(data / "masks" / "case1.png")).copy()
    m[:3, :3] = 255
    m[5, 5] = 128
    Image.fromarray(m).save(data / "masks" / "case1.png")
    err = fails(capsys, "train", data, "--out", tmp_path / "run", "--label-colors", "background=0;disc=255", *FAST)
    assert "case1.png" in err and "128" in err


def test_non_image_file_is_skipped_with_a_warning(tmp_path, capsys):
    data = write_disc_dataset(tmp_path / "d", n=4)
    (data / "images" / "notes.txt").write_text("not an image")
    succeeds("train", data, "--out", tmp_path / "run", "--split", "50/25/25", *FAST)
    err = capsys.readouterr().err
    assert "notes.txt" in err
    assert (tmp_path / "run" / "model.safetensors").is_file()


def test_run_folder_from_another_version(tmp_path, capsys):
    data = write_disc_dataset(tmp_path / "d", n=4)
    run = tmp_path / "run"
    succeeds("train", data, "--out", run, "--split", "50/25/25", *FAST)
    info = json.loads((run / "medseg_run.json").read_text())
    info["format_version"] = 99
    (run / "medseg_run.json").write_text(json.dumps(info))
    err = fails(capsys, "predict", run, data / "images" / "case0.png", "--out", tmp_path / "p")
    assert "format 99" in err and "retrain" in err


def test_not_a_run_folder(tmp_path, capsys):
    err = fails(capsys, "evaluate", tmp_path)
    assert "not a medseg run folder" in err


def test_unknown_model_lists_valid_names(tmp_path, capsys):
    data = write_disc_dataset(tmp_path / "d", n=4)
    err = fails(capsys, "train", data, "--out", tmp_path / "run", "--model", "unet9", "--split", "50/25/25", *FAST)
    assert "unet9" in err and "unet" in err.split("valid models:")[1]


def test_bad_duration(tmp_path, capsys):
    data = write_disc_dataset(tmp_path / "d", n=4)
    err = fails(capsys, "train", data, "--out", tmp_path / "run", "--time-budget", "ten minutes")
    assert "duration" in err


def test_patch_too_small_for_the_network(tmp_path, capsys):
    data = write_disc_dataset(tmp_path / "d", n=4, size=32)
    err = fails(capsys, "train", data, "--out", tmp_path / "run", "--split", "50/25/25", "--size", "16",
                "--epochs", "1", "--iterations", "1", "--batch-size", "2", "--features", "4", "--depth", "4")
    assert "too small" in err and "--patch-size" in err
