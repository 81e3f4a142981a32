"""Group-aware, reproducible train/val/test split of case keys.

All keys of one group (patient) land in the same subset, so slices of one
patient never leak between training and evaluation. Groups are ordered by
size, largest first (ties in an order shuffled by the seed), and each goes to
the subset furthest below its target case count; each subset with a nonzero
fraction is guaranteed at least one group.
"""

from __future__ import annotations

import math
import random
import re
from collections.abc import Sequence

from medseg.errors import ConfigError

SUBSETS = ("train", "val", "test")


def parse_fractions(spec: str) -> tuple[float, float, float]:
    """``"60/20/20"``, ``"60%/20%/20%"`` or ``"0.6,0.2,0.2"`` -> ``(0.6, 0.2, 0.2)``.

    Two values mean train/val with no test subset (``"80/20"``). Values that sum
    to 100 are percentages; otherwise they must sum to 1.
    """
    hint = 'write train/val/test as "60/20/20" (percent) or "0.6,0.2,0.2"'
    if isinstance(spec, (tuple, list)):
        parts = [str(x) for x in spec]
    else:
        parts = [p for p in re.split(r"[/,;:\s]+", str(spec).strip()) if p]
    try:
        values = [float(p.rstrip("%")) for p in parts]
    except ValueError:
        raise ConfigError(f"cannot read split fractions {spec!r}", hint=hint) from None
    if len(values) == 2:
        values.append(0.0)
    if len(values) != 3:
        raise ConfigError(f"split fractions {spec!r}: expected 2 or 3 values, got {len(values)}", hint=hint)
    if any(not math.isfinite(v) or v < 0 for v in values):
        raise ConfigError(f"split fractions {spec!r} must not be negative", hint=hint)
    total = sum(values)
    if abs(total - 100) < 1e-6:
        values = [v / 100 for v in values]
    elif abs(total - 1) > 1e-6:
        raise ConfigError(f"split fractions {spec!r} sum to {total:g}, not 1 (or 100%)", hint=hint)
    return (values[0], values[1], values[2])


def _check_fractions(fractions) -> tuple[float, float, float]:
    fr = tuple(float(f) for f in fractions)
    if len(fr) != 3:
        raise ConfigError(f"split fractions must be three values (train, val, test), got {fractions!r}")
    if any(not math.isfinite(f) or f < 0 for f in fr):
        raise ConfigError(f"split fractions must not be negative: {fractions!r}")
    if abs(sum(fr) - 1.0) > 1e-6:
        raise ConfigError(
            f"split fractions must sum to 1, got {sum(fr):g} from {fractions!r}",
            hint='e.g. 0.6,0.2,0.2 or "60/20/20"',
        )
    return fr  # type: ignore[return-value]


def split_cases(
    keys: Sequence[str],
    groups: Sequence[str | None],
    fractions: Sequence[float] = (0.6, 0.2, 0.2),
    seed: int = 0,
) -> dict[str, list[str]]:
    """Split ``keys`` into ``{"train": [...], "val": [...], "test": [...]}``.

    ``groups[i]`` is the group of ``keys[i]``; ``None`` makes the key its own
    group. The result depends only on the keys, groups, fractions and seed
    (not on input order); within a subset keys keep their input order.
    """
    keys = [str(k) for k in keys]
    groups = list(groups)
    if len(keys) != len(groups):
        raise ConfigError(f"split: {len(keys)} keys but {len(groups)} groups")
    if len(set(keys)) != len(keys):
        dup = sorted({k for k in keys if keys.count(k) > 1})
        raise ConfigError(f"split: duplicate case keys {dup[:5]}")
    fr = _check_fractions(fractions)
    if not keys:
        raise ConfigError("split: no cases to split")

    members: dict[str, list[str]] = {}
    for k, g in zip(keys, groups):
        gid = f"\0{k}" if g is None else f"g:{g}"  # a None group never collides with a named one
        members.setdefault(gid, []).append(k)

    wanted = [s for s, f in zip(SUBSETS, fr) if f > 0]
    n_groups = len(members)
    if n_groups < len(wanted):
        raise ConfigError(
            f"cannot split {len(keys)} case(s) in {n_groups} group(s) into {len(wanted)} subsets "
            f"({', '.join(wanted)}): each subset with a nonzero fraction needs at least one group",
            hint="add data, or set the fraction of a subset to 0 (e.g. 0.8,0.2,0)",
        )

    rng = random.Random(seed)
    order = sorted(members)
    rng.shuffle(order)
    order.sort(key=lambda g: -len(members[g]))  # stable: shuffled order among equal sizes

    total = len(keys)
    target = {s: f * total for s, f in zip(SUBSETS, fr)}
    count = {s: 0 for s in SUBSETS}
    n_groups_in = {s: 0 for s in SUBSETS}
    assign: dict[str, str] = {}
    for i, gid in enumerate(order):
        remaining = n_groups - i
        empty = [s for s in wanted if n_groups_in[s] == 0]
        pool = empty if remaining <= len(empty) else wanted
        subset = max(pool, key=lambda s: (target[s] - count[s], -SUBSETS.index(s)))
        assign[gid] = subset
        count[subset] += len(members[gid])
        n_groups_in[subset] += 1

    out: dict[str, list[str]] = {s: [] for s in SUBSETS}
    for k, g in zip(keys, groups):
        gid = f"\0{k}" if g is None else f"g:{g}"
        out[assign[gid]].append(k)
    return out
