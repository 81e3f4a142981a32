"""Post-processing decided on out-of-fold predictions (issue 17): removing a stray component is kept where it helps
and refused where it hurts, by a paired bootstrap; the steps change only their own class; the decision file is
applied by prediction and skipped with --no-postprocessing."""

from __future__ import annotations

import json

import numpy as np
import pytest

from medseg.evaluation.postprocess_fit import decide
from medseg.inference.postprocess import PostProcessing, apply_step


def _blob(shape, centre, r):
    grid = np.indices(shape)
    return ((grid - np.array(centre).reshape(-1, 1, 1, 1)) ** 2).sum(0) <= r * r


def _cases(stray_is_true: bool, n: int = 12, seed: int = 0):
    """Truth: one blob of class 1 (and, when ``stray_is_true``, a second small one that the prediction also finds);
    prediction: the blob slightly shifted, plus a small far component."""
    rng = np.random.default_rng(seed)
    shape = (24, 24, 16)
    cases = []
    for _ in range(n):
        centre = rng.integers(8, 14, size=3)
        truth = np.zeros(shape, np.int64)
        truth[_blob(shape, centre, 5)] = 1
        pred = np.zeros(shape, np.int64)
        pred[_blob(shape, centre + rng.integers(-1, 2, size=3), 5)] = 1
        far = (20, 20, 12)
        pred[_blob(shape, far, 2)] = 1
        if stray_is_true:
            truth[_blob(shape, far, 2)] = 1
        truth[0:2, 0:2, 0:2] = 2  # a second class, untouched by class 1's steps
        pred[0:2, 0:2, 0:2] = 2
        cases.append((pred, truth))
    return cases


def test_a_stray_component_is_removed_where_that_helps_and_kept_where_it_hurts():
    helps = decide(_cases(stray_is_true=False), ["background", "organ", "other"])["classes"]["organ"]
    assert helps["largest_component"]["apply"] and helps["largest_component"]["ci95"][0] > 0
    assert helps["largest_component"]["dice_after"] > helps["largest_component"]["dice_before"]
    hurts = decide(_cases(stray_is_true=True), ["background", "organ", "other"])["classes"]["organ"]
    assert not hurts["largest_component"]["apply"] and hurts["largest_component"]["difference"] < 0
    assert not hurts["min_size"]["apply"]  # the true small component sets the size: it is kept
    assert hurts["min_size"]["voxels"] >= 1


def test_steps_touch_only_their_class_and_the_file_is_applied_as_written():
    pred, _ = _cases(False, n=1)[0]
    pred[10, 10, 8] = 0  # a hole inside the organ
    out = apply_step(pred, 1, "largest_component")
    assert (out[pred == 2] == 2).all() and (out == 1).sum() < (pred == 1).sum()
    filled = apply_step(pred, 1, "fill_holes")
    assert filled[10, 10, 8] == 1 and (filled[pred == 2] == 2).all()
    decision = decide(_cases(False), ["background", "organ", "other"])
    post = PostProcessing.from_json(json.loads(json.dumps(decision)))  # as read back from the file
    assert (1, "largest_component", 0) in [(c, s, v if s == "min_size" else 0) for c, s, v in post.steps]
    assert (post(pred) == 1).sum() < (pred == 1).sum()
    decision["classes"]["organ"]["largest_component"]["apply"] = False  # the user edits the file
    decision["classes"]["organ"]["min_size"]["apply"] = False
    decision["classes"]["organ"]["fill_holes"]["apply"] = False
    assert np.array_equal(PostProcessing.from_json(decision)(pred), pred)
    with pytest.raises(ValueError):
        apply_step(pred, 1, "dilate")
