"""Calibration and uncertainty maths: ECE golden values, temperature scaling, entropy, the per-case score."""

from __future__ import annotations

import json

import numpy as np
import pytest
from scipy.special import softmax

from medseg.errors import RunFolderError
from medseg.evaluation.calibration import (
    ReliabilityAccumulator,
    calibration_summary,
    expected_calibration_error,
    fit_temperature,
    nll,
    plot_reliability,
    sample_voxels,
)
from medseg.inference.temperature import apply_temperature
from medseg.runfolder import read_temperature
from medseg.inference.uncertainty import case_uncertainty, entropy_png, normalized_entropy, uncertainty_region


def two_class(p1: np.ndarray) -> np.ndarray:
    """Probabilities ``(2, N)`` from the class-1 probability."""
    return np.stack([1 - p1, p1]).astype(np.float32)


def test_ece_of_perfectly_calibrated_probabilities_is_zero():
    # 10 voxels at confidence 0.8 (8 right), 10 at 0.6 (6 right): accuracy equals confidence in both bins
    probs = two_class(np.array([0.8] * 10 + [0.4] * 10))
    labels = np.array([1] * 8 + [0] * 2 + [0] * 6 + [1] * 4)
    assert expected_calibration_error(probs, labels, bins=10) == pytest.approx(0.0, abs=1e-7)


def test_ece_of_confident_wrong_predictions_is_one():
    probs = np.zeros((3, 4, 5), np.float32)
    probs[2] = 1.0
    assert expected_calibration_error(probs, np.zeros((4, 5), np.int64)) == pytest.approx(1.0)


def test_ece_golden_hand_computed():
    # bin [0.9, 1.0): 4 voxels at 0.95, 2 right -> |0.5 - 0.95| ; bin [0.5, 0.6): 2 voxels at 0.55, both right -> |1 - 0.55|
    probs = two_class(np.array([0.95, 0.95, 0.95, 0.95, 0.55, 0.55]))
    labels = np.array([1, 1, 0, 0, 1, 1])
    want = 4 / 6 * 0.45 + 2 / 6 * 0.45
    assert expected_calibration_error(probs, labels, bins=10) == pytest.approx(want, abs=1e-6)
    acc = ReliabilityAccumulator(2, bins=10)
    acc.update(probs, labels)
    table = acc.bin_table()
    assert table[9]["count"] == 4 and table[9]["accuracy"] == pytest.approx(0.5) and table[9]["confidence"] == pytest.approx(0.95)
    assert table[5]["count"] == 2 and table[0]["count"] == 0 and table[0]["accuracy"] is None
    # classwise for class 1: p1 = 0.95 (4 voxels, 2 are class 1) and 0.55 (2, both class 1): |0.5-0.95|*4/6 + |1-0.55|*2/6
    assert acc.class_ece()[1] == pytest.approx(want, abs=1e-6)


def test_accumulator_streams_cases_like_one_array_and_respects_the_region():
    rng = np.random.default_rng(0)
    probs = softmax(rng.normal(size=(3, 2, 30, 20)) * 3, axis=0)
    labels = rng.integers(0, 3, size=(2, 30, 20))
    region = rng.random((2, 30, 20)) > 0.3
    whole = expected_calibration_error(probs.reshape(3, 60, 20), labels.reshape(60, 20), region=region.reshape(60, 20))
    summary, acc = calibration_summary([(probs[:, i], labels[i], region[i]) for i in range(2)], 3, names=["bg", "a", "b"])
    assert summary["ece"] == pytest.approx(whole, rel=1e-9) and summary["voxels"] == int(region.sum())
    assert set(summary["class_ece"]) == {"a", "b"} and len(summary["bins"]) == 15
    json.dumps(summary)  # JSON-ready
    assert acc.voxels == int(region.sum())


def test_temperature_scaling_recovers_a_known_temperature():
    rng = np.random.default_rng(1)
    n, k, true_t = 20_000, 4, 2.5
    true_logits = rng.normal(size=(n, k)) * 2.0
    cdf = softmax(true_logits, axis=1).cumsum(1)
    labels = (rng.random((n, 1)) > cdf).sum(1).clip(0, k - 1)  # labels drawn from the true model
    over_confident = true_logits * true_t  # the "network" is over-confident by a factor 2.5
    t = fit_temperature(over_confident, labels)
    assert t == pytest.approx(true_t, rel=0.08)
    assert nll(over_confident, labels, t) < nll(over_confident, labels, 1.0)
    before = expected_calibration_error(softmax(over_confident, axis=1).T, labels)
    after = expected_calibration_error(softmax(over_confident / t, axis=1).T, labels)
    assert after < 0.5 * before


def test_apply_temperature_is_softmax_of_scaled_logits_and_keeps_the_argmax():
    rng = np.random.default_rng(2)
    logits = rng.normal(size=(3, 8, 9)) * 4
    probs = softmax(logits, axis=0).astype(np.float32)
    scaled = apply_temperature(probs, 1.7)
    np.testing.assert_allclose(scaled, softmax(logits / 1.7, axis=0), atol=1e-5)
    assert (scaled.argmax(0) == probs.argmax(0)).all()
    assert apply_temperature(probs, 1.0) is probs


def test_sample_voxels_caps_the_count_and_keeps_pairs():
    probs = two_class(np.linspace(0, 1, 1000)).reshape(2, 10, 100)
    labels = (probs[1] > 0.5).astype(np.int64)
    lg, y = sample_voxels(probs, labels, max_voxels=100, rng=np.random.default_rng(0))
    assert lg.shape == (100, 2) and y.shape == (100,)
    assert ((np.exp(lg[:, 1]) > 0.5) == (y == 1)).all()


def test_read_temperature(tmp_path):
    assert read_temperature(tmp_path) is None
    (tmp_path / "calibration.json").write_text(json.dumps({"temperature": 1.5}))
    assert read_temperature(tmp_path) == 1.5
    (tmp_path / "calibration.json").write_text("{not json")
    with pytest.raises(RunFolderError, match="corrupt"):
        read_temperature(tmp_path)
    (tmp_path / "calibration.json").write_text(json.dumps({"temperature": -1}))
    with pytest.raises(RunFolderError, match="invalid"):
        read_temperature(tmp_path)


def test_reliability_plot_is_written(tmp_path):
    acc = ReliabilityAccumulator(2, bins=10)
    acc.update(two_class(np.array([0.95, 0.55, 0.3])), np.array([1, 0, 0]))
    path = plot_reliability(tmp_path / "r.png", {"before": acc, "after": acc}, title="t")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_entropy_of_uniform_is_one_and_of_one_hot_is_zero():
    k = 5
    uniform = np.full((k, 3, 4), 1 / k, np.float32)
    one_hot = np.zeros((k, 3, 4), np.float32)
    one_hot[2] = 1
    np.testing.assert_allclose(normalized_entropy(uniform), 1.0, atol=1e-6)
    np.testing.assert_allclose(normalized_entropy(one_hot), 0.0, atol=1e-6)
    half = two_class(np.array([0.5, 0.9]))
    np.testing.assert_allclose(normalized_entropy(half), [1.0, -(0.9 * np.log(0.9) + 0.1 * np.log(0.1)) / np.log(2)], atol=1e-6)
    assert entropy_png(normalized_entropy(uniform)).max() == 255 and entropy_png(normalized_entropy(one_hot)).max() == 0


def test_case_score_averages_over_the_predicted_foreground_and_its_ring():
    entropy = np.zeros((7, 7, 7), np.float32)
    fg = np.zeros((7, 7, 7), bool)
    fg[3, 3, 3] = True
    entropy[3, 3, 3] = 1.0      # inside
    entropy[3, 3, 4] = 0.5      # the ring (face neighbour)
    entropy[4, 4, 4] = 0.9      # a corner neighbour: outside the face-connected ring
    region = uncertainty_region(fg)
    assert region.sum() == 7
    u = case_uncertainty(entropy, fg)
    assert u.score == pytest.approx(1.5 / 7) and u.region_voxels == 7
    assert u.mean_entropy == pytest.approx(2.4 / 343)
    empty = case_uncertainty(entropy, np.zeros_like(fg))  # nothing predicted: the whole-image mean
    assert empty.region_voxels == 0 and empty.score == pytest.approx(u.mean_entropy)
