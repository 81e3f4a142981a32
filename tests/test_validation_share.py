"""Validation within a share of the budget: a fixed subset each epoch, every few epochs, the final
choice on the whole split, and the plan that decides it."""

from __future__ import annotations

import json

import numpy as np

import pytest
import torch

from medseg.data.sampling import PatchSampler
from medseg.models import create_model
from medseg.planning.planner import MAX_VAL_EVERY, MIN_VALIDATION_CASES, VALIDATION_SHARE, plan_validation
from medseg.training.config import TrainConfig
from medseg.training.engine import Trainer
from medseg.runfolder.history import read_history
from medseg.data.split import evenly_spaced
from medseg.training.validation import Validator
from test_engine import discs


def _trainer(run_dir, n_val: int, **cfg) -> Trainer:
    images, labels = discs(4, seed=0)
    val_images, val_labels = discs(n_val, seed=1)
    torch.manual_seed(0)
    model = create_model("unet", 2, 1, 2, features=4, depth=2)
    config = TrainConfig(**{"patch_size": (16, 16), "batch_size": 2, "iterations_per_epoch": 3, "max_epochs": 4,
                            "patience": 0, "device": "cpu", "threads": 1, "seed": 3, "monitor": "val_dice", **cfg})
    sampler = PatchSampler(images, labels, config.patch_size, 2, seed=config.seed)
    return Trainer(model, sampler, list(zip(val_images, val_labels)), config, run_dir, 2)


def test_evenly_spaced_subset():
    assert evenly_spaced(10, 4) == [0, 3, 6, 9]
    assert evenly_spaced(3, 5) == [0, 1, 2] and evenly_spaced(3, None) == [0, 1, 2]


def test_epochs_validate_a_fixed_subset_and_the_whole_split_chooses(tmp_path):
    trainer = _trainer(tmp_path, n_val=9, val_max_cases=3)
    seen = []
    real_run = Validator.run

    def spy(self, model, whole=False):
        seen.append(len(self.cases if whole else self.epoch_cases))
        return real_run(self, model, whole)

    Validator.run = spy
    try:
        trainer.fit()
    finally:
        Validator.run = real_run
    assert seen[:4] == [3, 3, 3, 3]          # each epoch: the subset
    choice = json.loads((tmp_path / "validation.json").read_text())
    assert choice["cases"] == 9 and choice["subset"] == 3 and choice["kept"] in ("best", "final")
    # the end: the last weights and the best checkpoint on all 9 (one pass when the best is the last epoch)
    assert seen[4:] == ([9] if choice["best_epoch"] == 3 and choice["kept"] == "best" else [9, 9])
    assert choice["monitor"] == "val_dice" and choice["final"] is not None and choice["best"] is not None
    # the kept model is the one that scores best on the whole split
    kept = choice["final"] if choice["kept"] == "final" else choice["best"]
    assert kept == max(choice["final"], choice["best"])
    from medseg.models.weights import load_model

    again = Validator(trainer.validator.cases, (16, 16), 0.25, 2, trainer.validator.autocast).run(load_model(tmp_path), whole=True)
    assert again["val_dice"] == pytest.approx(kept, abs=1e-6)
    (tmp_path / "medseg_run.json").write_text(json.dumps({"format_version": 1, "train": {"monitor": "val_dice"}}))
    from medseg.evaluation.report import write_report

    html = write_report(tmp_path).read_text()
    assert "a fixed 3 of the 9 validation cases" in html and "chosen on all 9 validation cases" in html


def test_early_stopping_waits_for_three_validations_when_they_are_sparse(tmp_path):
    trainer = _trainer(tmp_path, n_val=2, val_every=4, patience=1, max_epochs=40, lr=0.0)  # lr 0: no epoch improves
    result = trainer.fit()
    assert result.stopped_by == "early_stopping" and result.epochs == 16  # best at epoch 3, then 3 validations (12 epochs)


def test_the_final_choice_reserve_is_capped(tmp_path):
    trainer = _trainer(tmp_path, n_val=40, val_max_cases=1, time_budget=100.0)
    assert trainer._final_reserve(5.0) == pytest.approx(10.0)  # 2 x 40 x 5 s would be 400 s; 10 % of the budget
    assert trainer._epoch_share(5.0) == pytest.approx(0.075)  # the epochs keep at least half of the 15 %
    assert trainer._epoch_share(0.01) == pytest.approx(0.15 - 0.008)  # the final pass takes 0.8 s of 100


def test_without_a_subset_there_is_no_final_pass(tmp_path):
    _trainer(tmp_path, n_val=2).fit()
    assert not (tmp_path / "validation.json").exists()


def test_validating_every_few_epochs_and_at_the_end(tmp_path):
    _trainer(tmp_path, n_val=2, val_every=3, max_epochs=5).fit()
    rows = read_history(tmp_path / "history.csv")
    validated = [r["epoch"] for r in rows if r.get("val_dice") is not None]
    assert validated == [2, 4]  # the third epoch, then the last one


def test_the_plan_keeps_validation_within_its_share():
    # small images, few cases: everything every epoch
    n, every, why = plan_validation([64, 64], [64, 64], 8, 50, 20)
    assert (n, every) == (None, 1) and "all validation cases" in why
    # many cheap cases: a fixed subset
    n, every, why = plan_validation([160, 160], [128, 128], 8, 50, 1000)
    assert every == 1 and MIN_VALIDATION_CASES <= n < 1000 and "fixed subset" in why
    windows = 4
    assert n * windows <= VALIDATION_SHARE / (1 - VALIDATION_SHARE) * 3 * 50 * 8 + windows
    # expensive cases: fewer validations
    n, every, why = plan_validation([2000, 2000], [128, 128], 8, 50, 80)
    assert 1 < every <= MAX_VAL_EVERY and f"every {every} epochs" in why
    # huge cases: never more than MAX_VAL_EVERY epochs apart, on fewer cases then
    n, every, why = plan_validation([20000, 20000], [128, 128], 8, 50, 80)
    assert every == MAX_VAL_EVERY and 1 <= n < MIN_VALIDATION_CASES


def test_config_rejects_an_empty_subset():
    with pytest.raises(ValueError):
        TrainConfig(val_max_cases=0)
    with pytest.raises(ValueError):
        TrainConfig(val_every=0)


def test_a_validation_over_its_share_shrinks_the_subset_by_measurement():
    v = Validator([(np.zeros((1, 4, 4), np.float32), np.zeros((4, 4), np.int64))] * 100, (4, 4), 0.25, 2, None)
    assert not v.fit_to_share(val_seconds=1.0, train_seconds=10.0, share=0.15)  # within its share
    assert v.fit_to_share(val_seconds=10.0, train_seconds=10.0, share=0.15)
    # 0.1 s a case, 1.76 s allowed an epoch, aimed at 90% of it: 15 cases an epoch are too few, so 63 of them
    # every 4 epochs
    assert v.every == 4 and len(v.epoch_cases) == 63 and v.subset
    assert not v.fit_to_share(val_seconds=6.3, train_seconds=10.0, share=0.15)


def test_the_engine_checks_the_first_validation_against_its_share(tmp_path, monkeypatch):
    import time

    from medseg.training.checkpoint import read_state_meta
    from medseg.training.engine import STATE_STEM

    real_run = Validator.run

    def slow(self, model, whole=False):
        time.sleep(0.3)  # a validation far above 15 % of an epoch of three tiny steps
        return real_run(self, model, whole)

    monkeypatch.setattr(Validator, "run", slow)
    trainer = _trainer(tmp_path, n_val=8, time_budget=20.0, max_epochs=3)
    trainer.fit()
    info = read_state_meta(tmp_path / STATE_STEM)["info"]
    assert info["val_checked"] and (info["val_cases"] < 8 or info["val_every"] > 1)
    assert (tmp_path / "validation.json").exists() == trainer.validator.subset
