"""Batches by step number: the same for any number of loader threads, in any order asked."""

from __future__ import annotations

import numpy as np
import pytest

from medseg.data.loader import BatchLoader, batch_rng
from medseg.data.sampling import PatchSampler


@pytest.fixture
def sampler() -> PatchSampler:
    rng = np.random.default_rng(0)
    images = [rng.normal(size=(2, 13, 17, 11)).astype(np.float32) for _ in range(3)]
    labels = [(rng.random((13, 17, 11)) > 0.8).astype(np.int64) * rng.integers(1, 3) for _ in range(3)]
    return PatchSampler(images, labels, (8, 8, 8), 3, foreground_fraction=0.5)


def test_workers_give_the_same_batches(sampler):
    plain = BatchLoader(sampler, 3, seed=7)
    threaded = BatchLoader(sampler, 3, seed=7, workers=2)
    try:
        for step in range(10):
            (x0, y0), (x1, y1) = plain.get(step), threaded.get(step)
            assert x0.shape == (3, 2, 8, 8, 8) and y0.shape == (3, 8, 8, 8)
            assert np.array_equal(x0, x1) and np.array_equal(y0, y1)
    finally:
        threaded.close()


def test_a_jump_is_served_and_steps_differ(sampler):
    loader = BatchLoader(sampler, 2, seed=1, workers=1)
    try:
        first = [loader.get(k)[0] for k in range(4)]
        again = loader.get(1)[0]  # a resume at an earlier step
        later = loader.get(40)[0]  # and a jump ahead
    finally:
        loader.close()
    assert np.array_equal(again, first[1]) and np.array_equal(later, BatchLoader(sampler, 2, seed=1).draw(40)[0])
    assert not np.array_equal(first[0], first[1])


def test_seeds_give_different_streams(sampler):
    a, b = BatchLoader(sampler, 4, seed=0), BatchLoader(sampler, 4, seed=1)
    assert not np.array_equal(a.get(0)[0], b.get(0)[0])
    assert batch_rng(0, 5).random() == batch_rng(0, 5).random() != batch_rng(0, 6).random()


def test_negative_workers_are_refused(sampler):
    with pytest.raises(ValueError, match="workers"):
        BatchLoader(sampler, 2, seed=0, workers=-1)
