"""Cross-validation folds: every labelled case in exactly one fold, the cases of one patient together, and the
folds balanced in size and in which classes their cases contain.

The rule: patients (groups; a case without one is its own) are shuffled with the seed, then taken largest first;
each goes to the fold where its stratum (the set of classes its cases contain) is rarest so far, then the fold
with the fewest cases, then the lowest index. The result depends only on the keys, groups, strata, k and seed.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Sequence

from medseg.errors import ConfigError

#: folds when ``--folds`` is not given a number (nnU-Net's and most papers' choice)
DEFAULT_FOLDS = 5


def make_folds(keys: Sequence[str], groups: Sequence[str | None], strata: Sequence[object], k: int = DEFAULT_FOLDS,
               seed: int = 0) -> list[list[str]]:
    """``k`` folds of ``keys`` (see the module doc); within a fold, keys keep their input order."""
    keys = [str(x) for x in keys]
    if not (len(keys) == len(groups) == len(strata)):
        raise ConfigError(f"folds: {len(keys)} keys, {len(groups)} groups and {len(strata)} strata")
    if k < 2:
        raise ConfigError(f"--folds {k}: cross-validation needs at least 2 folds")
    members: dict[str, list[int]] = {}
    for i, g in enumerate(groups):
        members.setdefault(f"\0{keys[i]}" if g is None else f"g:{g}", []).append(i)
    if len(members) < k:
        raise ConfigError(f"--folds {k}: the data holds {len(members)} patient(s) (or cases), fewer than the folds; every fold "
                          "needs at least one", hint=f"use --folds {max(2, len(members))} or fewer")
    order = sorted(members)
    random.Random(seed).shuffle(order)
    order.sort(key=lambda g: -len(members[g]))  # stable: shuffled among equal sizes
    size = [0] * k
    per_stratum: list[Counter] = [Counter() for _ in range(k)]
    fold_of: dict[str, int] = {}
    for n, gid in enumerate(order):
        stratum = Counter(strata[i] for i in members[gid]).most_common(1)[0][0]
        empty = [f for f in range(k) if size[f] == 0]
        pool = empty if len(order) - n <= len(empty) else range(k)  # the last groups fill any empty fold
        f = min(pool, key=lambda f: (per_stratum[f][stratum], size[f], f))
        fold_of[gid] = f
        size[f] += len(members[gid])
        per_stratum[f][stratum] += len(members[gid])
    folds: list[list[str]] = [[] for _ in range(k)]
    for gid, idx in members.items():
        for i in idx:
            folds[fold_of[gid]].append(i)
    return [[keys[i] for i in sorted(f)] for f in folds]
