"""Cross-validation (issue 17, first part): folds grouped by patient and stratified, every case predicted out of
fold exactly once, one budget shared over the folds, resume in the middle of a fold, and the ensemble's
probabilities equal to the mean of the folds'."""

from __future__ import annotations

import csv
import json
from collections import Counter

import numpy as np
import pytest

from medseg.data.folds import make_folds
from medseg.errors import ConfigError
from medseg.inference.predictor import Predictor
from medseg.io import read_image
from tests.conftest import run_cli
from tests.helpers3d import write_msd_dataset

FAST = ["--epochs", "1", "--iterations", "1", "--batch-size", "2", "--features", "4", "--depth", "2", "--threads", "1",
        "--no-plan", "--patch-size", "16x16x8"]


def test_folds_keep_patients_together_and_balance_classes():
    keys = [f"c{i}" for i in range(40)]
    groups = [f"p{i // 4}" for i in range(40)]  # 10 patients of 4 slices
    strata = [("tumour",) if (i // 4) % 2 else () for i in range(40)]  # half the patients have the class
    folds = make_folds(keys, groups, strata, k=5, seed=3)
    assert sorted(k for f in folds for k in f) == sorted(keys)  # every case exactly once
    for patient in set(groups):
        assert sum(any(groups[keys.index(k)] == patient for k in f) for f in folds) == 1, patient
    assert [len(f) for f in folds] == [8] * 5
    for f in folds:  # each fold: one patient with the class, one without
        assert Counter(strata[keys.index(k)] for k in f) == Counter({("tumour",): 4, (): 4})
    assert make_folds(keys, groups, strata, k=5, seed=3) == folds  # deterministic
    assert make_folds(list(reversed(keys)), list(reversed(groups)), list(reversed(strata)), k=5, seed=3) == \
        [sorted(f, key=lambda k: -keys.index(k)) for f in folds]  # not the input order
    with pytest.raises(ConfigError, match="fewer than the folds"):
        make_folds(keys[:8], groups[:8], strata[:8], k=5)


@pytest.fixture(scope="module")
def cv_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("cv")
    data = write_msd_dataset(tmp / "data", n=6)
    run = tmp / "run"
    run_cli("train", data, "--out", run, "--folds", "3", *FAST)
    return data, run


def test_every_case_is_predicted_out_of_fold_once(cv_run):
    data, run = cv_run
    record = json.loads((run / "folds.json").read_text())
    assert record["source"] == "made"
    assert record["k"] == 3 and record["done"] == [0, 1, 2] and sorted(sum(record["folds"], [])) == sorted(
        p.name.removesuffix(".nii.gz") for p in (data / "imagesTr").glob("*.nii.gz"))
    for i, fold in enumerate(record["folds"]):
        split = json.loads((run / f"fold_{i}" / "split.json").read_text())  # what the fold's run recorded
        assert sorted(e["key"] for e in split["val"]) == sorted(fold) and not split["test"]
        assert not {e["key"] for e in split["train"]} & set(fold)
    rows = list(csv.DictReader((run / "cv" / "per_case.csv").open()))
    assert sorted(r["case"] for r in rows) == sorted(sum(record["folds"], []))  # each case once
    summary = json.loads((run / "cv" / "summary.json").read_text())
    assert summary["source"] == "out of fold, 3 folds" and summary["images"] == 6
    before = {str(p.relative_to(run)): p.stat().st_mtime_ns for p in run.glob("fold_*/model.safetensors")}
    run_cli("train", "--resume", run)  # nothing left to train: the folds stay as they are
    assert {str(p.relative_to(run)): p.stat().st_mtime_ns for p in run.glob("fold_*/model.safetensors")} == before and len(before) == 3
    run_cli("train", "--resume", run, "--folds", "4", code=2)
    run_cli("train", data, "--out", run.parent / "clash", "--folds", "3", "--split", "50/50/0", *FAST, code=2)
    assert not (run.parent / "clash").exists()
    run_cli("train", data, "--out", run, *FAST, code=2)  # a single run is not written into a cross-validation
    run_cli("train", data, "--out", run, "--folds", "3", *FAST, code=2)  # nor a second one
    assert json.loads((run / "folds.json").read_text()) == record


def test_a_folds_file_is_checked_before_anything_trains(tmp_path):
    data = write_msd_dataset(tmp_path / "data", n=6)
    names = sorted(p.name.removesuffix(".nii.gz") for p in (data / "imagesTr").glob("*.nii.gz"))
    bad = {"empty": {"folds": [names, []]}, "not lists": {"folds": 5}, "unknown": {"folds": [names[:3], names[3:] + ["x"]]},
           "twice": {"folds": [names[:4], names[3:]]}, "missing": {"folds": [names[:2], names[2:5]]}}
    for i, (why, content) in enumerate(bad.items()):
        f = tmp_path / f"{i}.json"
        f.write_text(json.dumps(content))
        run_cli("train", data, "--out", tmp_path / f"run{i}", "--folds-file", f, *FAST, code=2)
        assert not (tmp_path / f"run{i}" / "fold_0").exists(), why
    good = tmp_path / "good.json"
    good.write_text(json.dumps({"folds": [names[:3], names[3:]]}))
    run_cli("train", data, "--out", tmp_path / "k", "--folds-file", good, "--folds", "3", *FAST, code=2)  # 3 is not 2
    run_cli("train", data, "--out", tmp_path / "ok", "--folds-file", good, *FAST)
    assert json.loads((tmp_path / "ok" / "folds.json").read_text())["folds"] == [names[:3], names[3:]]


def test_the_ensemble_is_the_mean_of_the_folds(cv_run, tmp_path):
    data, run = cv_run
    image = read_image(sorted((data / "imagesTr").glob("*.nii.gz"))[0])
    ensemble = Predictor.from_run(run).predict(image, probabilities=True).probabilities
    folds = [Predictor.from_run(run / f"fold_{i}").predict(image, probabilities=True).probabilities for i in range(3)]
    assert np.allclose(ensemble, np.mean(folds, axis=0), atol=1e-5)
    two = Predictor.from_run(run, folds=[0, 2]).predict(image, probabilities=True).probabilities
    assert np.allclose(two, (folds[0] + folds[2]) / 2, atol=1e-5)
    run_cli("predict", run, sorted((data / "imagesTr").glob("*.nii.gz"))[0], "--out", tmp_path / "pred", "--no-qc")
    assert len(list((tmp_path / "pred").glob("*.nii.gz"))) == 1
    run_cli("predict", run, data / "imagesTr", "--out", tmp_path / "p2", "--folds", "0,7", code=2)


def test_post_processing_is_decided_out_of_fold_and_applied_by_predict(cv_run, tmp_path):
    data, run = cv_run
    decision = json.loads((run / "postprocessing.json").read_text())
    assert set(decision["classes"]) == {"bright", "dark"}
    for entry in decision["classes"].values():
        assert {"min_size", "largest_component", "fill_holes"} <= set(entry) and "apply" in entry["largest_component"]
    assert Predictor.from_run(run).postprocess is not None
    assert Predictor.from_run(run, postprocessing=False).postprocess is None
    # every step switched on by hand: predict applies the file as written, --no-postprocessing ignores it
    for entry in decision["classes"].values():
        entry["largest_component"]["apply"] = True
    (tmp_path / "run").mkdir()
    import shutil

    edited = tmp_path / "run" / "cv_copy"
    shutil.copytree(run, edited, ignore=shutil.ignore_patterns("preprocessed"))
    (edited / "postprocessing.json").write_text(json.dumps(decision))
    image = sorted((data / "imagesTr").glob("*.nii.gz"))[0]
    run_cli("predict", edited, image, "--out", tmp_path / "with", "--no-qc")
    run_cli("predict", edited, image, "--out", tmp_path / "without", "--no-qc", "--no-postprocessing")
    from scipy import ndimage

    from medseg.inference.postprocess import PostProcessing

    with_pp = read_image(tmp_path / "with" / image.name).array[0]
    without = read_image(tmp_path / "without" / image.name).array[0]
    assert np.array_equal(with_pp, PostProcessing.from_json(decision)(without))  # the file's steps, as edited
    for value in (1, 2):
        assert ndimage.label(with_pp == value)[1] <= 1  # one component per class at most
    assert ((with_pp != 0) <= (without != 0)).all()  # only removals
    # the ensemble on a labelled folder; a cross-validated run has no test split of its own
    run_cli("evaluate", run, "--data", data, "--out", tmp_path / "eval")
    assert json.loads((tmp_path / "eval" / "summary.json").read_text())["images"] == 6
    run_cli("evaluate", run, code=2)


def test_one_budget_is_shared_and_an_interrupted_fold_resumes(tmp_path, monkeypatch):
    import medseg.training.run as run_module
    from medseg.training.config import TrainConfig
    from medseg.training.cross_validation import cross_validate
    from medseg.training.setup import TrainSetup

    data = write_msd_dataset(tmp_path / "data", n=6)
    run = tmp_path / "run"
    setup = TrainSetup(str(data), str(run), model_kwargs={"features": 4, "depth": 1}, auto_patch=False, auto_batch=False,
                       train=TrainConfig(max_epochs=2, iterations_per_epoch=1, batch_size=2, threads=1, patch_size=(16, 16, 8),
                                         time_budget=900.0))
    seen: list[tuple[str, float, bool]] = []
    real_train = run_module.train

    def spy(fold_setup, callbacks=None, resume=False):
        seen.append((fold_setup.out.rsplit("_", 1)[-1], fold_setup.train.time_budget, resume))
        return real_train(fold_setup, callbacks, resume)

    class StopFold2AfterAnEpoch:
        def on_step(self, *args):
            pass

        def on_epoch_end(self, row):
            raise KeyboardInterrupt  # in the middle of the third fold, after its first checkpoint

    monkeypatch.setattr(run_module, "train", spy)
    with pytest.raises(KeyboardInterrupt):
        cross_validate(setup, run, k=3, callbacks_for=lambda i, k: StopFold2AfterAnEpoch() if i == 2 else None)
    assert [f for f, _, _ in seen] == ["0", "1", "2"]
    assert seen[0][1] == pytest.approx(300)  # a third of the whole budget for the first fold
    assert seen[1][1] > seen[0][1] and seen[2][1] > seen[1][1]  # what a fold leaves goes to the folds after it
    assert sum(seen[i][1] for i in range(2)) < 900 + 1e-6
    assert json.loads((run / "folds.json").read_text())["done"] == [0, 1]
    assert (run / "fold_2" / "checkpoints").is_dir()
    result = cross_validate(None, run, resume=True)
    assert seen[3][0] == "2" and seen[3][2] is True  # fold 2 resumed, folds 0 and 1 not trained again
    assert len(seen) == 4 and json.loads((run / "folds.json").read_text())["done"] == [0, 1, 2]
    assert len(list(csv.DictReader((run / "cv" / "per_case.csv").open()))) == 6 and result.folds == 3
