"""The weight average: its maths (golden values), and in the engine: validated, saved and resumed exactly."""

from __future__ import annotations

import pytest
import torch

from medseg.io.weights import load_tensors
from medseg.training.checkpoint import read_state_meta
from medseg.training.ema import WeightEMA
from medseg.training.engine import STATE_STEM
from tests.test_engine import Kill, KillAt, make_trainer


def test_average_follows_the_formula():
    net = torch.nn.Linear(1, 1, bias=False)
    net.weight.data.fill_(0.0)
    ema = WeightEMA(net, decay=0.5)
    expected = 0.0
    for n, value in enumerate([10.0, 20.0, 30.0]):
        net.weight.data.fill_(value)
        ema.update(net)
        d = min(0.5, (1 + n) / (10 + n))  # 0.1, 0.1818..., 0.25
        expected = d * expected + (1 - d) * value
        assert ema.module.weight.item() == pytest.approx(expected, abs=1e-6)
    assert ema.module.weight.item() == pytest.approx(0.25 * (0.1818181818 * 9.0 + 0.8181818182 * 20.0) + 0.75 * 30.0, abs=1e-5)
    assert not ema.module.weight.requires_grad and net.weight.requires_grad


def test_bad_decay_is_refused():
    with pytest.raises(ValueError, match="decay"):
        WeightEMA(torch.nn.Linear(1, 1), 1.0)


def test_engine_validates_and_saves_the_average(tmp_path):
    trainer = make_trainer(tmp_path, ema_decay=0.9, max_epochs=1, augment=False)
    assert trainer.eval_model is trainer.ema.module and trainer.eval_model is not trainer.model
    result = trainer.fit()
    assert result.best_epoch == 0 and trainer.ema.updates == 3  # one epoch of 3 steps: its model is the best
    saved = load_tensors(tmp_path / "model.safetensors")
    state = load_tensors(tmp_path / f"{STATE_STEM}.safetensors")
    assert all(torch.equal(saved[k], state[f"ema.{k}"]) for k in saved)
    assert any(not torch.equal(state[f"ema.{k}"], state[f"model.{k}"]) for k in saved)
    assert read_state_meta(tmp_path / STATE_STEM)["info"]["ema_updates"] == 3


def test_resume_restores_the_average_exactly(tmp_path):
    common = dict(deterministic=True, checkpoint_every=0, amp=False, ema_decay=0.8)
    make_trainer(tmp_path / "whole", **common).fit()
    with pytest.raises(Kill):
        make_trainer(tmp_path / "cut", callbacks=KillAt(1, 1), **common).fit()
    make_trainer(tmp_path / "cut", **common).fit(resume=True)
    whole = load_tensors(tmp_path / "whole" / f"{STATE_STEM}.safetensors")
    cut = load_tensors(tmp_path / "cut" / f"{STATE_STEM}.safetensors")
    assert any(k.startswith("ema.") for k in whole) and whole.keys() == cut.keys()
    assert all(torch.equal(whole[k], cut[k]) for k in whole)
