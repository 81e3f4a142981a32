"""``medseg compare``: several models, one split, one budget; CSV/JSON/PNG and clear errors."""

from __future__ import annotations

import csv
import json
import math

import pytest
from PIL import Image

from medseg.cli.main import main
from medseg.data.phantom import make_phantom_dataset
from medseg.training.compare import compare_models
from medseg.models import list_models
from medseg.training.config import TrainConfig
from medseg.training.setup import TrainSetup

FAST = ["--epochs", "1", "--iterations", "2", "--batch-size", "2", "--features", "4"]


@pytest.fixture(scope="module")
def phantom(tmp_path_factory):
    return make_phantom_dataset(tmp_path_factory.mktemp("compare") / "data", n_patients=5, slices_per_patient=2, size=64)


def run_cli(*args) -> int:
    with pytest.raises(SystemExit) as e:
        main([str(a) for a in args])
    return 0 if e.value.code is None else e.value.code


def read_csv(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_compare_three_models(phantom, tmp_path, capsys):
    out = tmp_path / "cmp"
    assert run_cli("compare", phantom, "--out", out, "--models", "unet,fcn,segnet", *FAST) == 0
    table = capsys.readouterr().err
    assert all(m in table for m in ("unet", "fcn", "segnet", "Dice", "comparison.csv"))

    rows = read_csv(out / "comparison.csv")
    assert [r["model"] for r in rows] == ["unet", "fcn", "segnet"]
    for r in rows:
        assert r["error"] == ""
        assert math.isfinite(float(r["mean_dice"])) and 0.0 <= float(r["mean_dice"]) <= 1.0
        assert math.isfinite(float(r["iou_mean"]))
        hd95 = float(r["hd95_mean"] or "nan")  # NaN only when no test image has both masks of any class
        assert math.isnan(hd95) or hd95 >= 0
        assert int(r["params"]) > 0 and int(r["epochs"]) == 1
        assert float(r["inference_ms"]) > 0 and float(r["train_seconds"]) > 0
        assert {"dice_body", "dice_lung", "dice_tumour"} <= set(r)
        assert (out / r["model"] / "model.safetensors").is_file()
    assert len({int(r["params"]) for r in rows}) == 3

    summary = json.loads((out / "comparison.json").read_text())
    assert [r["model"] for r in summary["rows"]] == ["unet", "fcn", "segnet"]
    assert summary["max_epochs"] == 1 and summary["budget_seconds"] is None
    # the same split for every model
    tests = {m: [e["key"] for e in json.loads((out / m / "split.json").read_text())["test"]] for m in ("unet", "fcn", "segnet")}
    assert tests["unet"] == tests["fcn"] == tests["segnet"] == summary["test_images"] and tests["unet"]
    with Image.open(out / "comparison.png") as im:
        assert im.format == "PNG" and im.size[0] > 100

    # a second comparison into the same folder is refused before any training
    assert run_cli("compare", phantom, "--out", out, "--models", "fcn", *FAST) == 2
    assert "already" in capsys.readouterr().err


def test_unknown_model_lists_valid_names(phantom, tmp_path, capsys):
    out = tmp_path / "cmp"
    assert run_cli("compare", phantom, "--out", out, "--models", "unet,bogusnet", *FAST) == 2
    err = " ".join(capsys.readouterr().err.split())
    assert "bogusnet" in err and "Traceback" not in err
    for name in list_models():
        assert name in err
    assert not out.exists()


def test_time_budget(phantom, tmp_path):
    out = tmp_path / "cmp"
    assert run_cli("compare", phantom, "--out", out, "--models", "fcn", "--budget", "2s",
                   "--iterations", "2", "--batch-size", "2", "--features", "4", "--patience", "0") == 0
    summary = json.loads((out / "comparison.json").read_text())
    assert summary["budget_seconds"] == 2.0
    (row,) = summary["rows"]
    assert row["stopped_by"] == "time_budget" and row["epochs"] >= 1


def test_failed_model_is_reported_and_others_continue(phantom, tmp_path):
    base = TrainSetup(data="", out="", train=TrainConfig(batch_size=2, iterations_per_epoch=2))
    rows = compare_models(phantom, tmp_path / "cmp", ["fcn", "unet"], None, 1, base,
                          model_kwargs={"fcn": {"convs_per_stage": [1, 2]}}, common_kwargs={"features": 4})
    assert [r["model"] for r in rows] == ["fcn", "unet"]
    assert "convs_per_stage" in rows[0]["error"]
    assert rows[1]["error"] == "" and math.isfinite(rows[1]["mean_dice"])
    csv_rows = read_csv(tmp_path / "cmp" / "comparison.csv")
    assert [r["model"] for r in csv_rows] == ["fcn", "unet"]
    assert "convs_per_stage" in csv_rows[0]["error"] and csv_rows[0]["mean_dice"] == ""
    assert (tmp_path / "cmp" / "comparison.png").is_file()


def test_compare_on_a_separate_test_folder(phantom, tmp_path, capsys):
    """--test-data: no test part in the split; every model is evaluated on the given folder's images."""
    test_dir = make_phantom_dataset(tmp_path / "test", n_patients=2, slices_per_patient=2, size=64, seed=7)
    out = tmp_path / "cmp"
    assert run_cli("compare", phantom, "--out", out, "--models", "fcn", "--split", "80/20/0",
                   "--test-data", test_dir, *FAST) == 0
    rows = read_csv(out / "comparison.csv")
    assert rows[0]["error"] == "" and int(rows[0]["test_images"]) == 4
    settings = json.loads((out / "comparison.json").read_text())
    assert settings["test_data"] == str(test_dir) and len(settings["test_images"]) == 4
    assert "split.json" in {p.name for p in (out / "fcn").iterdir()}


def test_compare_without_any_test_cases_is_refused(phantom, tmp_path, capsys):
    assert run_cli("compare", phantom, "--out", tmp_path / "cmp", "--models", "fcn", "--split", "80/20/0", *FAST) == 2
    assert "--test-data" in capsys.readouterr().err


def test_compare_on_a_3d_dataset_writes_the_same_table_csv_and_plot(tmp_path, capsys):
    from helpers3d import write_msd_dataset

    data = write_msd_dataset(tmp_path / "data", n=6)
    out = tmp_path / "cmp3d"
    assert run_cli("compare", data, "--out", out, "--models", "unet,resunet", "--epochs", "1", "--iterations", "1",
                   "--features", "4", "--depth", "2", "--threads", "1", "--split", "50/17/33") == 0
    table = "".join(capsys.readouterr().err.split())  # rich wraps long paths anywhere
    assert all(m in table for m in ("unet", "resunet", "Dice", "comparison.csv")) and "failed" not in table
    rows = read_csv(out / "comparison.csv")
    assert [r["model"] for r in rows] == ["unet", "resunet"]
    for r in rows:
        assert r["error"] == "" and 0.0 <= float(r["mean_dice"]) <= 1.0 and float(r["inference_ms"]) > 0
        assert {"dice_bright", "dice_dark"} <= set(r)
        info = json.loads((out / r["model"] / "medseg_run.json").read_text())
        assert info["task"].endswith("3d") and len(info["patch_size"]) == 3
    summary = json.loads((out / "comparison.json").read_text())
    assert len(summary["test_images"]) == int(rows[0]["test_images"]) >= 1
    with Image.open(out / "comparison.png") as im:
        assert im.format == "PNG"
