"""The 2D working resolution: measured label fidelity, the planner's rule and the preprocessing that applies it."""

from __future__ import annotations

import numpy as np
import pytest

from medseg.data.preprocess2d import Preprocess2D
from medseg.errors import ConfigError
from medseg.planning.resolution import CONTEXT, SCALES, fidelity_at, plan_resolution, roundtrip_fidelity


def _disk(size: int, radius: float, center=None) -> np.ndarray:
    yy, xx = np.mgrid[:size, :size]
    cy, cx = center or (size / 2, size / 2)
    return ((yy - cy) ** 2 + (xx - cx) ** 2 <= radius**2).astype(np.uint8)


def test_large_objects_survive_coarse_grids_and_thin_lines_do_not():
    big = roundtrip_fidelity(_disk(256, 70), [1])
    assert big[0] == 1.0 and big[SCALES.index(1 / 4)] > 0.97
    lines = np.zeros((256, 256), np.uint8)
    lines[:, 40::16] = 1  # one-pixel vessels
    thin = roundtrip_fidelity(lines, [1])
    assert thin[SCALES.index(1 / 2)] < 0.8
    assert roundtrip_fidelity(np.zeros((32, 32), np.uint8), [1]) == [None] * len(SCALES)


def test_fidelity_is_the_worst_class():
    label = _disk(128, 40)
    label[60:62, 10:120] = 2  # a thin second class
    both = roundtrip_fidelity(label, [1, 2])
    only_big = roundtrip_fidelity((label == 1).astype(np.uint8), [1])
    assert both[SCALES.index(1 / 4)] < only_big[SCALES.index(1 / 4)]


def test_fidelity_interpolates_between_measured_scales():
    curve = [1.0, 0.98, 0.96, 0.9, 0.8, 0.7, 0.6]
    assert fidelity_at(curve, 1 / 2) == pytest.approx(0.96)
    assert 0.9 < fidelity_at(curve, 0.4) < 0.96
    assert fidelity_at(curve, 2.0) == 1.0


def _fingerprint(extent: float, fidelity_p10, shapes=None, relative=False) -> dict:
    shapes = shapes or [[500, 560]] * 20
    cases = []
    for sh in shapes:
        e = extent * max(sh) / 560 if relative else extent
        cases.append({"key": f"c{len(cases)}", "shape": sh, "object_extent": [int(e), int(e)]})
    return {"cases": cases, "resolution": {"scales": list(SCALES), "cases_measured": 20, "fidelity_p10": fidelity_p10}}


SURVIVES = [1.0, 0.999, 0.998, 0.995, 0.99, 0.985, 0.98]
THIN = [1.0, 0.92, 0.85, 0.7, 0.6, 0.5, 0.4]


def test_large_objects_lower_the_resolution_so_they_fit_a_patch_with_context():
    plan = plan_resolution(_fingerprint(256, SURVIVES), 128)
    assert plan["long_side"] is None and plan["scale"] == pytest.approx(128 / (CONTEXT * 256))
    assert "median object (256 px)" in plan["reason"] and "fills a 128 px patch" in plan["reason"]


def test_thin_structures_keep_full_resolution():
    plan = plan_resolution(_fingerprint(500, THIN), 128)
    assert plan["scale"] is None and plan["long_side"] is None
    assert "thin or small structures keep full resolution" in plan["reason"]


def test_small_objects_keep_full_resolution():
    plan = plan_resolution(_fingerprint(20, SURVIVES), 128)
    assert plan["scale"] is None and "fits a 128 px patch" in plan["reason"]


def test_fidelity_limits_how_far_the_resolution_is_lowered():
    # objects would fit at 1/8, but the labels only survive down to 1/3
    fid = [1.0, 0.995, 0.99, 0.985, 0.95, 0.9, 0.8]
    plan = plan_resolution(_fingerprint(512, fid), 128)
    assert plan["scale"] == pytest.approx(1 / 3, abs=1e-3)
    assert "a coarser grid would lose" in plan["reason"]


def test_varying_image_sizes_with_objects_that_scale_with_the_frame_are_fitted_per_image():
    shapes = [[int(s * 0.85), s] for s in (400, 560, 560, 620, 800, 1100, 1900) * 3]
    plan = plan_resolution(_fingerprint(256, SURVIVES, shapes, relative=True), 128)
    assert plan["scale"] is None and plan["long_side"] is not None
    assert "objects scale with the frame" in plan["reason"]
    # the same sizes with objects of a fixed pixel size (one microscope): one factor
    plan = plan_resolution(_fingerprint(256, SURVIVES, shapes, relative=False), 128)
    assert plan["long_side"] is None and plan["scale"] is not None


def test_no_objects_keeps_the_pixels():
    fp = _fingerprint(100, SURVIVES)
    for c in fp["cases"]:
        c["object_extent"] = None
    assert plan_resolution(fp, 128)["scale"] is None


# --------------------------------------------------------------------------- preprocessing


def test_working_size_by_scale_and_long_side():
    assert Preprocess2D(scale=0.5).working_size((530, 622)) == (265, 311)
    assert Preprocess2D(long_side=160).working_size((530, 622)) == (136, 160)
    assert Preprocess2D(long_side=160).working_size((1072, 1920)) == (89, 160)
    assert Preprocess2D().working_size((7, 9)) == (7, 9)
    assert Preprocess2D(size=(32, 48)).working_size((7, 9)) == (32, 48)
    with pytest.raises(ConfigError):
        Preprocess2D(size=(32, 32), scale=0.5)
    with pytest.raises(ConfigError):
        Preprocess2D(scale=0)


def test_image_and_mask_go_to_the_working_size_and_back():
    pre = Preprocess2D(channels=1, long_side=50)
    image = np.random.default_rng(0).random((1, 80, 100)).astype(np.float32)
    x, ctx = pre.image(image)
    assert x.shape == (1, 40, 50) and ctx == (80, 100)
    mask = _disk(100, 30)[:80]
    small = pre.mask(mask)
    assert small.shape == (40, 50) and small.dtype == np.uint8
    probs = np.stack([1.0 - small, small]).astype(np.float32)
    ids, full = pre.restore(probs, ctx, probabilities=True)
    assert ids.shape == (80, 100) and full.shape == (2, 80, 100)
    assert abs(int(ids.sum()) - int(mask.sum())) < 0.05 * mask.sum()


def test_shrinking_a_mask_keeps_each_class_area():
    mask = _disk(150, 40).astype(np.uint8)
    mask[61:91, 20:130] = 2
    small = Preprocess2D(scale=1 / 3).mask(mask)
    assert small.shape == (50, 50) and set(np.unique(small)) == {0, 1, 2}
    for k in (1, 2):
        assert abs((small == k).sum() * 9 - (mask == k).sum()) < 0.15 * (mask == k).sum()
