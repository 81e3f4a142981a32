"""The training engine on a tiny synthetic 2D task: bf16 autocast on CPU, exact resume in
deterministic mode, atomic checkpoints, the torch.compile fallback, deep supervision."""

from __future__ import annotations

import json
import logging

import numpy as np
import pytest
import torch

from medseg.data.sampling import PatchSampler
from medseg.io.weights import load_tensors
from medseg.models import create_model
from medseg.runtime import device
from medseg.training.checkpoint import read_state_meta
from medseg.training.config import TrainConfig
from medseg.training.engine import STATE_STEM, Trainer
from medseg.runfolder.history import read_history

SIZE = 24


@pytest.fixture(autouse=True)
def _restore_global_torch_state():
    """Deterministic mode and thread counts are process-wide: put them back for the other tests."""
    deterministic, warn_only = torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled()
    threads = torch.get_num_threads()
    yield
    torch.use_deterministic_algorithms(deterministic, warn_only=warn_only)
    torch.set_num_threads(threads)


def discs(n: int, seed: int) -> tuple[list[np.ndarray], list[np.ndarray]]:
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:SIZE, :SIZE]
    images, labels = [], []
    for _ in range(n):
        cy, cx, r = rng.integers(7, SIZE - 7, 2).tolist() + [int(rng.integers(3, 6))]
        lab = ((yy - cy) ** 2 + (xx - cx) ** 2 <= r * r).astype(np.int64)
        images.append((lab * 2.0 + rng.normal(0, 0.3, lab.shape)).astype(np.float32)[None])
        labels.append(lab)
    return images, labels


def make_trainer(run_dir, callbacks=None, model_kwargs=None, **cfg) -> Trainer:
    images, labels = discs(4, seed=0)
    val_images, val_labels = discs(2, seed=1)
    torch.manual_seed(0)
    model = create_model("unet", 2, 1, 2, **{"features": 4, "depth": 2, "dropout": 0.2, **(model_kwargs or {})})
    config = TrainConfig(**{"patch_size": (16, 16), "batch_size": 2, "iterations_per_epoch": 3, "max_epochs": 3,
                            "patience": 0, "device": "cpu", "threads": 1, "seed": 3, **cfg})
    sampler = PatchSampler(images, labels, config.patch_size, 2, seed=config.seed)
    return Trainer(model, sampler, list(zip(val_images, val_labels)), config, run_dir, 2, callbacks)


class Kill(Exception):
    pass


class KillAt:
    """Raises at a given step, as a ``kill -9`` would stop the process there."""

    def __init__(self, epoch: int, iteration: int):
        self.at = (epoch, iteration)

    def on_step(self, epoch, iteration, loss, progress):
        if (epoch, iteration) == self.at:
            raise Kill

    def on_epoch_end(self, row):
        pass


def final_weights(run_dir) -> dict[str, torch.Tensor]:
    return {k: v for k, v in load_tensors(run_dir / f"{STATE_STEM}.safetensors").items() if k.startswith("model.")}


def test_cpu_bf16_autocast_trains(tmp_path, monkeypatch, caplog):
    monkeypatch.setattr(device, "cpu_bf16_supported", lambda: True)  # also on CPUs without native bf16
    device._logged_once.clear()
    with caplog.at_level(logging.INFO, logger="medseg"):
        trainer = make_trainer(tmp_path, lr=3e-2, optimizer="adam", schedule="constant", augment=False)
    assert trainer.amp_dtype == torch.bfloat16
    assert any("mixed precision on cpu: bfloat16" in r.message for r in caplog.records)
    losses = [trainer.train_step(3e-2) for _ in range(40)]
    assert all(np.isfinite(losses))
    assert np.mean(losses[-5:]) < 0.7 * np.mean(losses[:5])
    val = trainer.validate()
    assert 0.0 <= val["val_dice"] <= 1.0


def test_amp_off_and_unsupported_cpu_stay_float32(tmp_path, monkeypatch):
    assert make_trainer(tmp_path / "a", amp=False).amp_dtype is None
    monkeypatch.setattr(device, "cpu_bf16_supported", lambda: False)
    assert make_trainer(tmp_path / "b").amp_dtype is None


@pytest.mark.parametrize("kill_at", [(1, 1), (2, 0)], ids=["mid-epoch", "epoch-start"])
def test_deterministic_resume_gives_identical_weights(tmp_path, kill_at):
    """Stopped at a step and resumed from the last checkpoint == trained without a stop."""
    common = dict(deterministic=True, checkpoint_every=0, amp=False)
    make_trainer(tmp_path / "whole", **common).fit()
    with pytest.raises(Kill):
        make_trainer(tmp_path / "cut", callbacks=KillAt(*kill_at), **common).fit()
    meta = read_state_meta(tmp_path / "cut" / STATE_STEM)
    assert not meta["info"]["finished"]
    result = make_trainer(tmp_path / "cut", **common).fit(resume=True)
    assert result.stopped_by == "max_epochs" and result.epochs == 3
    whole, cut = final_weights(tmp_path / "whole"), final_weights(tmp_path / "cut")
    assert whole.keys() == cut.keys()
    assert all(torch.equal(whole[k], cut[k]) for k in whole)
    rows = [(r["epoch"], r["train_loss"]) for r in read_history(tmp_path / "cut" / "history.csv")]
    assert rows == [(r["epoch"], r["train_loss"]) for r in read_history(tmp_path / "whole" / "history.csv")]


def test_checkpoint_is_one_atomic_file(tmp_path):
    """The tensor file carries its own metadata, so a stale JSON copy (kill between the writes) is harmless."""
    trainer = make_trainer(tmp_path, max_epochs=1, checkpoint_every=1e9)
    trainer.fit()
    stem = tmp_path / STATE_STEM
    meta = read_state_meta(stem)
    assert meta["info"]["finished"] and meta["info"]["epoch"] == 0
    assert json.loads(stem.with_suffix(".json").read_text())["info"] == meta["info"]
    stem.with_suffix(".json").write_text(json.dumps({"info": {"epoch": -1}}))
    assert read_state_meta(stem)["info"]["finished"]
    history = read_history(tmp_path / "history.csv")
    assert [r["epoch"] for r in history] == [0] and history[0]["time"] > 0


def test_checkpoint_at_start_makes_any_run_resumable(tmp_path):
    with pytest.raises(Kill):
        make_trainer(tmp_path, callbacks=KillAt(0, 0), checkpoint_every=1e9).fit()
    info = read_state_meta(tmp_path / STATE_STEM)["info"]
    assert info["epoch"] == -1 and info["next_iteration"] == 0
    assert make_trainer(tmp_path, checkpoint_every=1e9).fit(resume=True).epochs == 3


def test_compile_failure_falls_back_to_eager(tmp_path, monkeypatch, caplog):
    def unavailable(model, *a, **k):
        raise RuntimeError("no C++ compiler")

    monkeypatch.setattr(torch, "compile", unavailable)
    with caplog.at_level(logging.WARNING, logger="medseg"):
        trainer = make_trainer(tmp_path / "a", compile=True, max_epochs=1)
        assert trainer.fit().epochs == 1
    assert any("torch.compile is unavailable" in r.message for r in caplog.records)

    class FailsWhenCalled(torch.nn.Module):  # compiling happens lazily, at the first call
        def __init__(self, model):
            super().__init__()
            self.inner = model

        def forward(self, x):
            raise RuntimeError("backend compiler failed")

    monkeypatch.setattr(torch, "compile", lambda model, *a, **k: FailsWhenCalled(model))
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="medseg.training.engine"):
        trainer = make_trainer(tmp_path / "b", compile=True, max_epochs=1)
        assert isinstance(trainer.train_model, FailsWhenCalled)
        assert np.isfinite(trainer.train_step(1e-3))
    assert trainer.train_model is trainer.model and any("torch.compile failed" in r.message for r in caplog.records)


def test_deep_supervision_trains_and_validates(tmp_path):
    trainer = make_trainer(tmp_path, model_kwargs={"deep_supervision": True}, max_epochs=1)
    result = trainer.fit()
    assert result.epochs == 1 and np.isfinite(result.history[0]["train_loss"])
    assert 0.0 <= result.history[0]["val_dice"] <= 1.0


def test_loader_threads_train_the_same_weights(tmp_path):
    """Batches are numbered, not streamed: cropping them ahead in threads changes nothing."""
    common = dict(deterministic=True, amp=False, max_epochs=2)
    make_trainer(tmp_path / "inline", loader_workers=0, **common).fit()
    trainer = make_trainer(tmp_path / "threads", loader_workers=2, **common)
    assert trainer.loader.workers == 2
    trainer.fit()
    inline, threads = final_weights(tmp_path / "inline"), final_weights(tmp_path / "threads")
    assert all(torch.equal(inline[k], threads[k]) for k in inline)


def test_augmentation_warm_up_rises_with_progress(tmp_path, monkeypatch):
    """``augment_warmup=0.5``: the strength each step augments with rises linearly from 0 and is full
    from half-way through training; without a warm-up it is full from the first step."""
    from medseg.data.augment import BatchAugment

    seen: list[float] = []
    real = BatchAugment.__call__

    def record(self, image, label, generator, strength=1.0):
        seen.append(strength)
        return real(self, image, label, generator, strength)

    monkeypatch.setattr(BatchAugment, "__call__", record)
    make_trainer(tmp_path / "warm", augment_warmup=0.5, amp=False).fit()
    assert seen[0] == 0.0 and seen == sorted(seen) and seen[-1] == 1.0
    assert len(seen) == 9 and seen[4] < 1.0 == seen[5]  # progress k/9: strength 2k/9, full from k = 5
    seen.clear()
    make_trainer(tmp_path / "full", amp=False).fit()
    assert seen == [1.0] * 9
    with pytest.raises(Exception, match="warm-up"):
        TrainConfig(augment_warmup=1.0)
