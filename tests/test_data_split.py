"""Group-aware, reproducible train/val/test split."""

from __future__ import annotations

import itertools

import pytest

from medseg.data.split import parse_fractions, split_cases
from medseg.errors import ConfigError


def _patients(n_patients=12, slices=(1, 2, 3, 4, 5)):
    keys, groups = [], []
    for p in range(n_patients):
        for s in range(slices[p % len(slices)]):
            keys.append(f"p{p:02d}_s{s}")
            groups.append(f"p{p:02d}")
    return keys, groups


def _group_of(keys, groups):
    return dict(zip(keys, groups))


def test_no_group_leaks_between_subsets():
    keys, groups = _patients()
    g = _group_of(keys, groups)
    for seed in range(20):
        out = split_cases(keys, groups, (0.6, 0.2, 0.2), seed=seed)
        sets = {name: {g[k] for k in ks} for name, ks in out.items()}
        for a, b in itertools.combinations(sets, 2):
            assert not sets[a] & sets[b], f"seed {seed}: groups in both {a} and {b}"
        assert sorted(out["train"] + out["val"] + out["test"]) == sorted(keys)
        assert all(out[s] for s in ("train", "val", "test"))


def test_reproducible_and_seed_dependent():
    keys, groups = _patients()
    a = split_cases(keys, groups, seed=3)
    assert a == split_cases(keys, groups, seed=3)
    # independent of input order (same content, same split)
    rev = split_cases(keys[::-1], groups[::-1], seed=3)
    assert {s: sorted(v) for s, v in rev.items()} == {s: sorted(v) for s, v in a.items()}
    assert any(split_cases(keys, groups, seed=s) != a for s in range(4, 10))


def test_fractions_met_by_case_count():
    keys = [f"k{i}" for i in range(20)]
    out = split_cases(keys, [None] * 20, (0.6, 0.2, 0.2), seed=1)
    assert [len(out[s]) for s in ("train", "val", "test")] == [12, 4, 4]
    out = split_cases(keys, [None] * 20, (0.7, 0.3, 0.0), seed=1)
    assert [len(out[s]) for s in ("train", "val", "test")] == [14, 6, 0]
    out = split_cases(keys, [None] * 20, (1, 0, 0))
    assert out["train"] == keys and out["val"] == [] and out["test"] == []


def test_keys_keep_input_order_within_subsets():
    keys = [f"k{i:02d}" for i in range(30)]
    out = split_cases(keys, [None] * 30, seed=5)
    for v in out.values():
        assert v == sorted(v)


def test_none_group_is_own_group_and_never_merges_with_named():
    keys = ["a", "b", "c", "d"]
    groups = [None, None, "x", "x"]
    out = split_cases(keys, groups, (0.5, 0.25, 0.25), seed=0)
    where = {k: s for s, ks in out.items() for k in ks}
    assert where["c"] == where["d"]
    assert all(out[s] for s in out)  # three groups, three subsets


def test_every_nonzero_subset_gets_a_group_even_with_big_groups():
    keys, groups = ["a1", "a2", "a3", "a4", "a5", "a6", "a7", "a8", "b", "c"], ["A"] * 8 + ["B", "C"]
    out = split_cases(keys, groups, (0.6, 0.2, 0.2))
    assert sorted(len(v) for v in out.values()) == [1, 1, 8]
    assert out["train"] == keys[:8]


def test_too_few_groups():
    with pytest.raises(ConfigError) as e:
        split_cases(["a", "b", "c"], ["g", "g", "h"], (0.6, 0.2, 0.2))
    msg = str(e.value)
    assert "2 group" in msg and "0.8,0.2,0" in msg
    # fine when the test fraction is 0
    out = split_cases(["a", "b", "c"], ["g", "g", "h"], (0.8, 0.2, 0.0))
    assert out["test"] == [] and out["train"] and out["val"]


@pytest.mark.parametrize("fr", [(0.5, 0.2, 0.2), (0.6, 0.6, -0.2), (0.5, 0.5)])
def test_fractions_must_sum_to_one(fr):
    with pytest.raises(ConfigError):
        split_cases(["a", "b", "c"], [None] * 3, fr)


def test_mismatched_or_duplicate_input():
    with pytest.raises(ConfigError):
        split_cases(["a", "b"], [None], (1, 0, 0))
    with pytest.raises(ConfigError):
        split_cases(["a", "a"], [None, None], (1, 0, 0))


@pytest.mark.parametrize(
    "spec,expected",
    [
        ("60/20/20", (0.6, 0.2, 0.2)),
        ("0.6,0.2,0.2", (0.6, 0.2, 0.2)),
        ("70%/15%/15%", (0.7, 0.15, 0.15)),
        ("80/20", (0.8, 0.2, 0.0)),
        ("1,0,0", (1.0, 0.0, 0.0)),
    ],
)
def test_parse_fractions(spec, expected):
    assert parse_fractions(spec) == pytest.approx(expected)


@pytest.mark.parametrize("spec", ["60/20/10", "a/b/c", "0.5,0.5,0.5", "-10/60/50", "", "20/20/20/40"])
def test_parse_fractions_errors(spec):
    with pytest.raises(ConfigError):
        parse_fractions(spec)
