"""Spacing-aware metrics: cross-checked against MONAI on random blobs, golden hand-computed cases,
the empty-mask conventions and the aggregates."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch
from scipy import ndimage

from medseg.evaluation.aggregate import bootstrap_ci, describe, summarize_classes
from medseg.evaluation.metrics import METRICS, SegmentationMetric, case_metrics, class_metrics
from medseg.evaluation.surface import bounding_box, hausdorff, mask_edges, surface_dice, surface_distances

TOLERANCES = (1.0, 2.5)  #: NSD tolerance (mm) of class 1 and class 2


def random_case(rng: np.random.Generator, shape: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
    """Truth: two smooth random blobs (labels 1 and 2); prediction: the truth perturbed (shift, grow/shrink, speckle)."""
    gt = np.zeros(shape, np.uint8)
    for label in (1, 2):
        while True:
            field = ndimage.gaussian_filter(rng.random(shape), sigma=rng.uniform(1.5, 3.0))
            blob = field > np.quantile(field, rng.uniform(0.8, 0.93))
            if blob.any():
                break
        gt[blob] = label
    pred = np.zeros_like(gt)
    for label in (1, 2):
        m = gt == label
        m = np.roll(m, int(rng.integers(-2, 3)), axis=int(rng.integers(len(shape))))
        op = rng.integers(3)
        m = ndimage.binary_dilation(m) if op == 0 else ndimage.binary_erosion(m) if op == 1 else m
        m ^= rng.random(shape) < 0.01
        pred[m] = label
    for label in (1, 2):  # the cross-check compares non-empty classes; the empty ones are tested below
        if not (pred == label).any():
            pred[tuple(int(s) // 2 for s in shape)] = label
    return pred, gt


def one_hot(labels: np.ndarray) -> torch.Tensor:
    """``(B, *spatial)`` label maps → MONAI's ``(B, 3, *spatial)`` one-hot float tensor."""
    return torch.from_numpy(np.stack([labels == c for c in range(3)], axis=1).astype(np.float32))


@pytest.mark.parametrize("shape", [(36, 30), (24, 28, 20)], ids=["2d", "3d"])
def test_matches_monai_on_random_blobs_with_anisotropic_spacing(shape):
    from monai.metrics import DiceMetric, compute_hausdorff_distance, compute_surface_dice

    rng = np.random.default_rng(len(shape))
    n = 50
    cases = [random_case(rng, shape) for _ in range(n)]
    spacings = [tuple(float(s) for s in rng.uniform(0.4, 3.0, len(shape))) for _ in range(n)]
    ours = np.array([[[r[m] for m in ("dice", "hd95", "nsd")] for r in
                      (class_metrics(p == c, g == c, sp, TOLERANCES[c - 1]) for c in (1, 2))]
                     for (p, g), sp in zip(cases, spacings)])  # (case, class, metric)

    pred, gt = one_hot(np.stack([p for p, _ in cases])), one_hot(np.stack([g for _, g in cases]))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        dice = DiceMetric(include_background=False, reduction="none")(pred, gt).numpy()
        hd95 = compute_hausdorff_distance(pred, gt, percentile=95, spacing=spacings).numpy()
        nsd = compute_surface_dice(pred, gt, class_thresholds=list(TOLERANCES), spacing=spacings).numpy()
    assert np.isfinite(ours).all() and np.isfinite(hd95).all() and np.isfinite(nsd).all()
    np.testing.assert_allclose(ours[..., 0], dice, rtol=0, atol=1e-6)
    np.testing.assert_allclose(ours[..., 1], hd95, rtol=0, atol=1e-3)
    np.testing.assert_allclose(ours[..., 2], nsd, rtol=0, atol=1e-3)
    # the cases are not trivial: imperfect overlap, boundaries a few mm apart, NSD below 1
    assert 0.3 < ours[..., 0].mean() < 0.98 and ours[..., 1].max() > 2.0 and ours[..., 2].min() < 0.9


def test_edges_are_monai_edges_including_the_array_border():
    rng = np.random.default_rng(3)
    for shape in ((9, 11), (7, 8, 6)):
        mask = rng.random(shape) < 0.6
        assert np.array_equal(mask_edges(mask), mask ^ ndimage.binary_erosion(mask))
    full = np.ones((4, 5), bool)
    edges = mask_edges(full)
    assert edges[0].all() and edges[:, 0].all() and not edges[1:-1, 1:-1].any()


def test_bounding_box():
    m = np.zeros((6, 7, 8), bool)
    m[1, 2, 3] = m[4, 5, 3] = True
    assert bounding_box(m) == (slice(1, 5), slice(2, 6), slice(3, 4))
    assert bounding_box(np.zeros((3, 3), bool)) is None


# --------------------------------------------------------------------------- golden, by hand


def test_golden_single_pixels_with_anisotropic_spacing():
    pred, gt = np.zeros((10, 12), bool), np.zeros((10, 12), bool)
    pred[5, 5], gt[5, 8] = True, True  # 3 columns apart, 0.5 mm each: 1.5 mm
    r = class_metrics(pred, gt, spacing=(2.0, 0.5), tolerance=1.0)
    assert r["dice"] == 0 and r["hd95"] == pytest.approx(1.5) and r["nsd"] == 0
    assert class_metrics(pred, gt, spacing=(2.0, 0.5), tolerance=1.5)["nsd"] == 1.0
    assert r["vol_diff"] == 0.0 and r["vol_diff_rel"] == 0.0


def test_golden_square_grown_by_two_pixels():
    """Truth: an 21x21 square; prediction: 25x25, same centre (grown by k=2 on every side).

    Prediction edge (a ring of 96 pixels) to the truth's edge (80 pixels): 84 side pixels at 2,
    8 corner pixels at sqrt(5), 4 at sqrt(8). The 95th percentile (linear, index 0.95 * 95 = 90.25)
    falls among the sqrt(5) ones. Truth edge to prediction edge: all 80 at 2. So HD95 = sqrt(5);
    NSD at 2 px = (84 + 80) / (96 + 80); Dice = 2 * 441 / (625 + 441).
    """
    gt, pred = np.zeros((40, 40), bool), np.zeros((40, 40), bool)
    gt[10:31, 10:31] = True
    pred[8:33, 8:33] = True
    d_pg, d_gp = surface_distances(pred, gt)
    assert d_pg.size == 96 and d_gp.size == 80
    assert sorted(np.round(d_pg ** 2).astype(int).tolist()) == [4] * 84 + [5] * 8 + [8] * 4
    r = class_metrics(pred, gt, tolerance=2.0)
    assert r["hd95"] == pytest.approx(math.sqrt(5), abs=1e-12)
    assert r["nsd"] == pytest.approx(164 / 176, abs=1e-12)
    assert r["dice"] == pytest.approx(882 / 1066, abs=1e-12)
    assert r["iou"] == pytest.approx(441 / 625) and r["precision"] == pytest.approx(441 / 625) and r["sensitivity"] == 1.0
    assert r["vol_diff"] == 625 - 441 and r["vol_diff_rel"] == pytest.approx(184 / 441)
    assert class_metrics(pred, gt, tolerance=1.9)["nsd"] == pytest.approx(0.0)


def test_golden_3d_box_shifted_along_the_thick_axis():
    """A box shifted by one 3 mm slice: the farthest edge voxels are 3 mm apart; volumes equal."""
    gt = np.zeros((12, 12, 10), bool)
    gt[3:8, 2:9, 2:6] = True
    pred = np.roll(gt, 1, axis=2)
    d_pg, d_gp = surface_distances(pred, gt, spacing=(0.5, 0.8, 3.0))
    assert hausdorff(d_pg, d_gp, 100) == pytest.approx(3.0)
    assert surface_dice(d_pg, d_gp, 2.9) < 1.0 and surface_dice(d_pg, d_gp, 3.0) == 1.0
    r = class_metrics(pred, gt, spacing=(0.5, 0.8, 3.0))
    assert r["dice"] == pytest.approx(2 * 5 * 7 * 3 / (2 * 5 * 7 * 4)) and r["vol_diff"] == 0.0


def test_spacing_scales_distances_and_volumes():
    gt, pred = np.zeros((30, 30), bool), np.zeros((30, 30), bool)
    gt[10:20, 10:20] = True
    pred[10:24, 10:20] = True
    px = class_metrics(pred, gt)
    mm = class_metrics(pred, gt, spacing=(2.0, 2.0), tolerance=2.0)
    assert mm["hd95"] == pytest.approx(2 * px["hd95"]) and mm["vol_diff"] == pytest.approx(4 * px["vol_diff"])
    assert mm["dice"] == px["dice"] and mm["nsd"] == pytest.approx(px["nsd"])


# --------------------------------------------------------------------------- empty masks


@pytest.mark.parametrize("ndim", [2, 3])
def test_empty_mask_conventions(ndim):
    shape = (8,) * ndim
    empty, some = np.zeros(shape, bool), np.zeros(shape, bool)
    some[(slice(2, 5),) * ndim] = True
    voxels = 27 if ndim == 3 else 9
    both = class_metrics(empty, empty, spacing=(2.0,) * ndim)
    assert {m: both[m] for m in METRICS} == {"dice": 1.0, "iou": 1.0, "precision": 1.0, "sensitivity": 1.0,
                                              "vol_diff": 0.0, "vol_diff_rel": 0.0, "vol_true": 0.0, "hd95": 0.0, "nsd": 1.0}
    only_truth_empty = class_metrics(some, empty, spacing=(2.0,) * ndim)
    only_pred_empty = class_metrics(empty, some, spacing=(2.0,) * ndim)
    for r in (only_truth_empty, only_pred_empty):
        assert r["dice"] == r["iou"] == r["precision"] == r["sensitivity"] == r["nsd"] == 0.0
        assert math.isnan(r["hd95"])
    assert math.isnan(only_truth_empty["vol_diff_rel"]) and only_pred_empty["vol_diff_rel"] == -1.0
    assert only_truth_empty["vol_diff"] == voxels * 2.0 ** ndim == -only_pred_empty["vol_diff"]
    assert only_truth_empty["vol_true"] == 0.0 and only_pred_empty["vol_true"] == voxels * 2.0 ** ndim


def test_case_metrics_rows_per_label_and_fov_mask():
    gt = np.zeros((20, 20), np.uint8)
    gt[2:8, 2:8], gt[12:18, 12:18] = 1, 3
    pred = gt.copy()
    pred[0:2, 15:20] = 3  # a false positive outside the field of view
    fov = np.ones_like(gt, bool)
    fov[0:2] = False
    rows = case_metrics(pred, gt, {1: "a", 3: "c", 5: "absent"}, spacing=(1.0, 1.0), mask=fov)
    assert [(r["label"], r["class"]) for r in rows] == [(1, "a"), (3, "c"), (5, "absent")]
    assert all(r["dice"] == 1.0 and r["hd95"] == 0.0 for r in rows)
    assert case_metrics(pred, gt, [3])[0]["dice"] < 1.0  # without the FOV it counts


# --------------------------------------------------------------------------- aggregates


def test_describe_leaves_nan_out_and_counts_it():
    s = describe([1.0, 2.0, float("nan"), 3.0, 4.0, 5.0])
    assert s["n"] == 5 and s["n_nan"] == 1 and s["mean"] == 3.0 and s["median"] == 3.0
    assert s["std"] == pytest.approx(np.std([1, 2, 3, 4, 5]))
    lo, hi = s["ci95"]
    assert 1.0 <= lo < 3.0 < hi <= 5.0 and s["ci_unit"] == "case" and "ci_note" not in s
    none = describe([float("nan")])
    assert none["n"] == 0 and math.isnan(none["mean"]) and all(math.isnan(v) for v in none["ci95"])


@pytest.mark.parametrize("n", [1, 2, 4])
def test_no_interval_below_the_minimum_n(n):
    s = describe([0.5 + 0.1 * i for i in range(n)])
    assert all(math.isnan(v) for v in s["ci95"]) and f"{n} case" in s["ci_note"] and "fewer than 5" in s["ci_note"]
    grouped = describe([0.5 + 0.01 * i for i in range(12)], groups=[i // 4 for i in range(12)])  # 3 patients
    assert all(math.isnan(v) for v in grouped["ci95"]) and "3 patients" in grouped["ci_note"]


def test_the_bootstrap_resamples_patients_when_cases_share_one():
    """Three slices of each of six patients, slices of one patient alike: the interval by patient is much wider
    than one pretending the 18 slices were independent, and matches the patients' means bootstrapped."""
    rng = np.random.default_rng(1)
    patient_means = rng.normal(0.8, 0.08, 6)
    values = np.repeat(patient_means, 3) + rng.normal(0, 0.005, 18)
    groups = np.repeat(np.arange(6), 3).tolist()
    by_case, by_patient = describe(values), describe(values, groups=groups)
    assert by_case["ci_unit"] == "case" and by_patient["ci_unit"] == "patient"
    width = lambda s: s["ci95"][1] - s["ci95"][0]  # noqa: E731
    assert width(by_patient) > 1.4 * width(by_case)
    means = describe(values.reshape(6, 3).mean(1))
    assert width(by_patient) == pytest.approx(width(means), rel=0.25)
    assert by_patient["ci95"][0] < by_patient["mean"] < by_patient["ci95"][1]


def test_bootstrap_ci_is_seeded_and_covers_the_mean():
    rng = np.random.default_rng(0)
    v = rng.normal(0.8, 0.05, 60)
    a, b = bootstrap_ci(v), bootstrap_ci(v)
    assert a == b and a != bootstrap_ci(v, seed=1)
    assert a[0] < v.mean() < a[1]
    half = 1.96 * v.std() / math.sqrt(v.size)  # the normal approximation, for scale
    assert (a[1] - a[0]) / 2 == pytest.approx(half, rel=0.2)


def test_stateful_metric_accumulates_cases_and_pools_counts():
    gt = np.zeros((2, 16, 16), np.uint8)
    gt[0, 2:8, 2:8] = 1
    gt[1, 4:12, 4:12] = 1
    pred = gt.copy()
    pred[1, 4:12, 4:8] = 0  # half of case 2 missed
    metric = SegmentationMetric({1: "fg"}, tolerance=1.0)
    for i in range(2):
        metric.update(pred[i], gt[i], case=f"c{i}")
    stats = metric.aggregate()["fg"]
    assert [r["case"] for r in metric.rows] == ["c0", "c1"]
    assert stats["dice"]["mean"] == pytest.approx((1.0 + 2 * 32 / 96) / 2)
    assert stats["dice_pooled"] == pytest.approx(2 * 68 / (36 + 32 + 36 + 64))
    assert stats["label"] == 1 and stats["hd95"]["n"] == 2
    assert summarize_classes(metric.rows)["fg"]["dice"] == stats["dice"]
    metric.reset()
    assert metric.rows == []
