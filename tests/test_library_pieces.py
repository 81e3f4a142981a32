"""Where a library has the exact piece, medseg uses it; where medseg keeps its own, a test shows why."""

from __future__ import annotations

import numpy as np
import pytest
import torch


def _reference_dice_ce(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """The loss medseg wrote by hand before it used MONAI's: CE + (1 - batch soft Dice of the foreground)."""
    k = logits.shape[1]
    probs = logits.float().softmax(1)
    onehot = torch.nn.functional.one_hot(target, k).movedim(-1, 1).float()
    dims = (0, *range(2, logits.ndim))
    dice = (2 * (probs * onehot).sum(dims) + 1e-5) / (probs.sum(dims) + onehot.sum(dims) + 1e-5)
    return torch.nn.functional.cross_entropy(logits, target) + 1 - dice[1:].mean()


@pytest.mark.parametrize("k,shape", [(2, (4, 33, 30)), (3, (2, 17, 20, 11))])
def test_the_loss_is_monais_dice_ce_with_nnunets_settings(k, shape):
    from medseg.training.losses import DiceCELoss

    torch.manual_seed(0)
    logits, target = torch.randn(shape[0], k, *shape[1:]), torch.randint(0, k, shape)
    assert float(DiceCELoss()(logits, target)) == pytest.approx(float(_reference_dice_ce(logits, target)), abs=1e-6)


def test_bootstrap_ci_is_scipys_percentile_bootstrap():
    from scipy import stats

    from medseg.evaluation.aggregate import bootstrap_ci

    v = np.random.default_rng(1).beta(5, 2, 40)
    lo, hi = bootstrap_ci(v, samples=4000, seed=3)
    ref = stats.bootstrap((v,), np.mean, n_resamples=4000, method="percentile", random_state=np.random.default_rng(3))
    assert (lo, hi) == pytest.approx((ref.confidence_interval.low, ref.confidence_interval.high))
    assert lo < v.mean() < hi


def test_ece_pools_voxels_of_all_cases_as_monais_metric_would_on_their_concatenation():
    """MONAI's CalibrationErrorMetric scores each image (or batch) on its own and averages; the dataset's
    ECE pools the voxels of every case. medseg's accumulator streams that pool case by case (no case's
    probabilities stay in memory) and equals MONAI's metric on the concatenation."""
    from monai.metrics import CalibrationErrorMetric

    from medseg.evaluation.calibration import ReliabilityAccumulator

    rng = np.random.default_rng(0)
    cases = []
    for conf, rows in ((0.95, 40), (0.6, 10)):  # an over- and an under-confident case, of different sizes
        p1 = np.clip(rng.normal(conf, 0.05, (rows, 30)), 0.01, 0.99)
        truth = (rng.random((rows, 30)) < 0.8).astype(np.int64)
        cases.append((np.stack([1 - p1, p1]).astype(np.float32), truth))
    acc = ReliabilityAccumulator(2, bins=15)
    for probs, truth in cases:
        acc.update(probs, truth)
    ours = acc.summary()["class_ece"]["class_1"]  # the foreground class's calibration error (one-vs-rest)

    def monai_ece(pairs) -> float:
        metric = CalibrationErrorMetric(num_bins=15, include_background=False, calibration_reduction="expected",
                                        metric_reduction="mean")
        for probs, truth in pairs:
            onehot = np.stack([truth == 0, truth == 1]).astype(np.float32)
            metric(y_pred=torch.from_numpy(probs)[None], y=torch.from_numpy(onehot)[None])
        return float(metric.aggregate())

    concatenated = [(np.concatenate([p for p, _ in cases], axis=1), np.concatenate([t for _, t in cases], axis=0))]
    assert len({t.shape for _, t in cases}) == 2
    assert ours == pytest.approx(monai_ece(concatenated), abs=0.02)
    assert abs(monai_ece(cases) - ours) > 0.01  # per image, then averaged: another number


def test_the_weight_average_is_torch_averaged_model():
    from medseg.training.ema import WeightEMA

    torch.manual_seed(0)
    net = torch.nn.Linear(3, 2)
    ema = WeightEMA(net, decay=0.9)
    reference = {k: v.clone() for k, v in net.state_dict().items()}
    for step in range(5):
        with torch.no_grad():
            for p in net.parameters():
                p.add_(0.1 * (step + 1))
        d = min(0.9, (1 + step) / (10 + step))
        reference = {k: d * reference[k] + (1 - d) * v for k, v in net.state_dict().items()}
        ema.update(net)
    for k, v in ema.module.state_dict().items():
        assert torch.allclose(v, reference[k], atol=1e-6)
    assert ema.updates == 5
    assert isinstance(ema.averaged, torch.optim.swa_utils.AveragedModel)
