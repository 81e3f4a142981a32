"""`medseg inspect`, `medseg plan` and `medseg train` driven by a plan (made, or edited and
given with --plan), flags overriding single entries, and the preprocessing cache keyed by the plan."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import run_cli
from tests.helpers2d import write_disc_dataset
from tests.test_planning import write_anisotropic_ct


pytestmark = pytest.mark.usefixtures("one_thread")



def edit_json(path: Path, **sections) -> Path:
    raw = json.loads(path.read_text())
    for name, values in sections.items():
        raw[name].update(values)
    path.write_text(json.dumps(raw, indent=1))
    return path


@pytest.fixture(scope="module")
def discs(tmp_path_factory) -> Path:
    return write_disc_dataset(tmp_path_factory.mktemp("discs") / "d", n=6, size=48)


def test_inspect_prints_and_saves_the_fingerprint(discs, tmp_path, capsys):
    run_cli("inspect", discs, "--out", tmp_path / "fp.json")
    fp = json.loads((tmp_path / "fp.json").read_text())
    assert fp["num_cases"] == 6 and fp["dims"] == 2 and fp["modality"] == ["gray"]
    assert fp["classes"][0]["components"]["count_median"] == 1.0
    err = " ".join(capsys.readouterr().err.split())
    assert "classes" in err and "no problems found" in err and "fp.json" in err


def test_plan_writes_a_valid_plan(discs, tmp_path, capsys):
    run_cli("plan", discs, "--out", tmp_path / "plan.json", "--device", "cpu", "--memory-budget", "2GiB",
            "--time-budget", "30m", "--fingerprint-out", tmp_path / "fp.json")
    from medseg.planning.plan import load_plan

    plan = load_plan(tmp_path / "plan.json")
    assert plan["training"]["time_budget"] == 1800 and plan["device"]["memory_budget"] == "2.0 GiB"
    assert plan["patch"]["size"] == [48, 48] and plan["normalization"]["scheme"] == ["zscore"]
    assert (tmp_path / "fp.json").is_file()
    assert "why" in capsys.readouterr().err
    run_cli("plan", discs, "--out", tmp_path / "again.json", "--device", "cpu", "--fingerprint", tmp_path / "fp.json")
    assert load_plan(tmp_path / "again.json")["patch"]["size"] == [48, 48]


def test_train_with_an_edited_plan_and_no_other_flags(discs, tmp_path):
    plan = tmp_path / "plan.json"
    run_cli("plan", discs, "--out", plan, "--device", "cpu")
    edit_json(plan, training={"time_budget": "2s", "iterations_per_epoch": 2, "augment_warmup": 0.3},
              network={"features": 4, "depth": 2, "strides": [[2, 2], [2, 2]], "kernel_sizes": [[3, 3]] * 3},
              batch={"size": 3}, normalization={"scheme": ["minmax"]})
    run = tmp_path / "run"
    run_cli("train", discs, "--out", run, "--plan", plan, "--patience", "0")  # patience is not a plan entry
    info = json.loads((run / "medseg_run.json").read_text())
    assert info["train"]["time_budget"] == 2 and info["train"]["batch_size"] == 3 and info["train"]["patch_size"] == [48, 48]
    assert info["preprocess"]["normalize"] == "minmax" and info["train"]["augment_warmup"] == 0.3
    assert info["model"]["features"] == 4 and info["model"]["depth"] == 2 and info["model"]["strides"] == [[2, 2], [2, 2]]
    assert info["train"]["extra"]["plan"]["overrides"] == {} and info["train"]["extra"]["plan"]["source"] == str(plan.resolve())
    state = json.loads((run / "checkpoints" / "last.json").read_text())
    assert state["info"]["stopped_by"] == "time_budget"
    saved = json.loads((run / "plan.json").read_text())
    assert saved["batch"]["size"] == 3 and not (run / "fingerprint.json").exists()


def test_train_makes_a_plan_and_flags_override_single_entries(discs, tmp_path):
    run = tmp_path / "run"
    run_cli("train", discs, "--out", run, "--time-budget", "2s", "--batch-size", "2", "--features", "4",
            "--iterations", "2", "--normalize", "zscore")
    plan = json.loads((run / "plan.json").read_text())
    assert json.loads((run / "fingerprint.json").read_text())["num_cases"] == 6
    over = plan["overrides"]
    assert over["batch.size"] == {"plan": 8, "used": 2, "flag": "--batch-size"}
    assert over["network.features"]["used"] == 4 and over["training.iterations_per_epoch"]["used"] == 2
    assert "training.time_budget" not in over and "normalization.scheme" not in over  # the plan agrees with them
    info = json.loads((run / "medseg_run.json").read_text())
    assert info["train"]["batch_size"] == 2 and info["train"]["extra"]["plan"]["overrides"] == over
    assert info["model"]["depth"] == plan["network"]["depth"] and info["model"]["strides"] == plan["network"]["strides"]


def test_plan_mistakes_are_clear(discs, tmp_path, capsys):
    plan = tmp_path / "plan.json"
    run_cli("plan", discs, "--out", plan, "--device", "cpu")
    edit_json(plan, patch={"size": [48, 48, 8]})
    run_cli("train", discs, "--out", tmp_path / "run", "--plan", plan, code=2)
    err = " ".join(capsys.readouterr().err.split())
    assert "plan.json" in err and "'patch.size'" in err and "allowed: 2 values" in err
    run_cli("train", discs, "--out", tmp_path / "run", "--plan", plan, "--no-plan", code=2)
    assert "--no-plan" in capsys.readouterr().err


def test_3d_training_from_a_plan_uses_its_spacing_patch_network_and_ct_normalisation(tmp_path):
    data = write_anisotropic_ct(tmp_path / "ct", z_spacings=(4.0, 5.0, 5.0, 6.0), n_xy=48, n_z=10)
    plan = tmp_path / "plan.json"
    run_cli("plan", data, "--out", plan, "--device", "cpu")
    planned = json.loads(plan.read_text())
    edit_json(plan, training={"time_budget": 3, "iterations_per_epoch": 1}, network={"features": 4}, batch={"size": 1})
    run = tmp_path / "run"
    run_cli("train", data, "--out", run, "--plan", plan, "--split", "50/25/25")
    info = json.loads((run / "medseg_run.json").read_text())
    pre = info["preprocess"]
    assert pre["target_spacing"] == planned["spacing"]["target"] and pre["target_spacing"][2] == pytest.approx(4.3)
    assert pre["normalization"] == "ct" and pre["stats"][0]["p005"] < pre["stats"][0]["p995"] < 200  # training foreground
    assert info["patch_size"] == planned["patch"]["size"] and info["train"]["batch_size"] == 1
    assert info["model"]["strides"] == planned["network"]["strides"] and info["model"]["strides"][0] == [2, 2, 1]
    assert info["model"]["kernel_sizes"][0] == [3, 3, 1] and info["model"]["features"] == 4


def test_preprocessing_is_remade_only_when_data_or_plan_change(tmp_path, caplog):
    """The cache key is the input files (name, size, mtime) plus the plan's preprocessing entries."""
    from medseg.data.cache import PreprocessedCache
    from medseg.data.dataset3d import preprocess_cases
    from medseg.data.layouts import discover_volume_cases
    from medseg.data.preprocess3d import Preprocess3D
    from medseg.planning.fingerprint import compute_fingerprint
    from medseg.planning.planner import make_plan

    data = write_anisotropic_ct(tmp_path / "ct", z_spacings=(5.0, 5.0), n_xy=32, n_z=8)
    plan = make_plan(compute_fingerprint(data, workers=1), device="cpu", memory_budget="1GiB")
    cases, _ = discover_volume_cases(data)
    cache = PreprocessedCache(tmp_path / "cache")

    def run(spacing) -> list[float]:
        pre = Preprocess3D(spacing, "zscore", None, plan["crop_to_nonzero"]["value"])
        preprocess_cases(cases, pre, cache, [0, 1])
        return [(tmp_path / "cache" / f"{c.key}_image.npy").stat().st_mtime_ns for c in cases]

    first = run(plan["spacing"]["target"])
    assert run(plan["spacing"]["target"]) == first                       # same data, same plan: reused
    os.utime(cases[1].images[0], ns=(0, 0))                               # one input changed
    touched = run(plan["spacing"]["target"])
    assert touched[0] == first[0] and touched[1] != first[1]
    edited = run([0.8, 0.8, 2.5])                                         # an edited plan: every case re-made
    assert all(e != t for e, t in zip(edited, touched))
    assert np.load(tmp_path / "cache" / f"{cases[0].key}_image.npy", mmap_mode="r").shape[-1] == 16
