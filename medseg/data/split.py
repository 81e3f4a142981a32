"""Group-aware, reproducible train/val/test split of case keys.

All keys of one group (patient) land in the same subset, so slices of one
patient never leak between training and evaluation. Groups are ordered by
size, largest first (ties in an order shuffled by the seed), and each goes to
the subset furthest below its target case count; each subset with a nonzero
fraction is guaranteed at least one group.
"""

from __future__ import annotations

import json
import logging
import math
import random
import re
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from medseg.errors import ConfigError, DataError
from medseg.io.base import file_suffix

log = logging.getLogger(__name__)

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
        raise ConfigError(f"--split: cannot read split fractions {spec!r}", hint=hint) from None
    if len(values) == 2:
        values.append(0.0)
    if len(values) != 3:
        raise ConfigError(f"--split: fractions {spec!r}: expected 2 or 3 values, got {len(values)}", hint=hint)
    if any(not math.isfinite(v) or v < 0 for v in values):
        raise ConfigError(f"--split: fractions {spec!r} must not be negative", hint=hint)
    total = sum(values)
    if abs(total - 100) < 1e-6:
        values = [v / 100 for v in values]
    elif abs(total - 1) > 1e-6:
        raise ConfigError(f"--split: fractions {spec!r} sum to {total:g}, not 1 (or 100%)", hint=hint)
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


def evenly_spaced(n: int, k: int | None) -> list[int]:
    """``k`` indices spread evenly over ``range(n)`` (all of them when ``k`` is ``None`` or ``>= n``)."""
    if k is None or k >= n:
        return list(range(n))
    return sorted({int(round(i)) for i in np.linspace(0, n - 1, max(1, k))})


# --------------------------------------------------------------------------- split files

_CHANNEL_SUFFIX = "_0000"


def _entry_names(entry, path: Path) -> list[str]:
    """The names a split-file entry may match, most specific first: ``"p1/a.png"`` -> ``p1/a.png``,
    ``p1/a``, ``a.png``, ``a``; ``{"key": "case"}`` -> ``case``; a volume's ``.nii.gz`` counts as one ending."""
    if isinstance(entry, dict):
        entry = entry.get("key", entry.get("image"))
    if not isinstance(entry, str) or not entry.strip():
        raise DataError(f"split entry {entry!r} is not a case name", path=path)
    rel = Path(entry.strip()).as_posix().lstrip("./") or entry.strip()
    names = []
    for name in (rel, Path(rel).name):
        suffix = file_suffix(name)
        names += [name, name[: len(name) - len(suffix)]] if suffix else [name]
    return list(dict.fromkeys(names))


def case_aliases(cases: Sequence, root: Path) -> dict[str, str]:
    """Other names a split file may use for each case (``.key``, ``.image``): its image's file name and stem,
    and its path relative to ``root``; a name that more than one case shares is left out."""
    counts: dict[str, set[str]] = {}
    for c in cases:
        rel = c.image.relative_to(root).as_posix() if c.image.is_relative_to(root) else c.image.name
        for name in (c.image.name, c.image.stem, rel, rel[: len(rel) - len(file_suffix(rel))]):
            counts.setdefault(name, set()).add(c.key)
    return {name: next(iter(keys)) for name, keys in counts.items() if len(keys) == 1}


def read_split_file(path: str | Path, keys: Sequence[str], aliases: Mapping[str, str] | None = None) -> dict[str, list[str]]:
    """``{"train": [...], "val": [...], "test": [...]}`` from a split file, matched to the case ``keys``.

    The file is JSON with a ``"train"`` list and optionally ``"val"``/``"test"`` lists of case
    names, file names or paths (``hippocampus_001``, ``imagesTr/hippocampus_001.nii.gz``,
    ``images/21_training.tif``; nnU-Net's ``_0000`` channel ending is dropped when that names a
    case), or the entries of a run's own ``split.json``. ``aliases`` maps other names of a case
    (see :func:`case_aliases`) to its key. Names match exactly, else ignoring case where that is
    unambiguous. A ``"val"`` list that is absent (not empty) is marked ``None``, to be drawn from
    ``"train"`` (:func:`complete_split`). Names that match no case, or a case in two subsets, are errors.
    """
    path = Path(path)
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as e:
        raise DataError(f"cannot read split file: {e}", path=path) from None
    except json.JSONDecodeError as e:
        raise DataError(f"split file is not valid JSON: {e}", path=path) from None
    if not isinstance(raw, dict) or not isinstance(raw.get("train"), list):
        raise DataError('a split file is a JSON object with a "train" list (and "val", "test")', path=path,
                        hint='e.g. {"train": ["case_001", ...], "test": ["case_002", ...]}')
    exact = {**(aliases or {}), **{k: k for k in keys}}
    folded: dict[str, set[str]] = {}
    for name, key in exact.items():
        folded.setdefault(name.lower(), set()).add(key)

    def lookup(name: str) -> str | None:
        if name in exact:
            return exact[name]
        hit = folded.get(name.lower(), set())
        return next(iter(hit)) if len(hit) == 1 else None

    out: dict[str, list[str]] = {s: [] for s in SUBSETS}
    unknown: list[str] = []
    where: dict[str, str] = {}
    for subset in SUBSETS:
        entries = raw.get(subset) or []
        if not isinstance(entries, list):
            raise DataError(f'"{subset}" must be a list of case names', path=path)
        for entry in entries:
            names = _entry_names(entry, path)
            names += [n[: -len(_CHANNEL_SUFFIX)] for n in names if n.endswith(_CHANNEL_SUFFIX)]
            key = next((k for k in map(lookup, names) if k is not None), None)
            if key is None:
                unknown.append(names[0])
                continue
            if key in where:
                raise DataError(f"case '{key}' is listed in both \"{where[key]}\" and \"{subset}\"", path=path)
            where[key] = subset
            out[subset].append(key)
    if unknown:
        shown = ", ".join(unknown[:5]) + (f" ... ({len(unknown)} in all)" if len(unknown) > 5 else "")
        raise DataError(f"split file names cases the dataset does not have: {shown}", path=path,
                        hint=f"use the dataset's case names, e.g. {', '.join(sorted(keys)[:3])}")
    if not out["train"]:
        raise DataError('the split file\'s "train" list is empty', path=path)
    unused = len(set(keys)) - len(where)
    if unused:
        log.info("%d case(s) of the dataset are in no subset of %s and are not used", unused, path.name)
    if "val" not in raw:
        out["val"] = None  # type: ignore[assignment]
    return out


def complete_split(split: dict[str, list[str] | None], groups: Mapping[str, str | None],
                   fractions: Sequence[float] = (0.6, 0.2, 0.2), seed: int = 0) -> dict[str, list[str]]:
    """A split whose ``"val"`` is ``None`` (a split file without one) gets validation cases drawn from
    ``"train"``, group-aware, in the proportion of ``fractions`` (train : val, so a quarter by default)."""
    if split.get("val") is not None:
        return split  # type: ignore[return-value]
    train = list(split["train"] or [])
    share = fractions[1] / (fractions[0] + fractions[1]) if fractions[0] + fractions[1] > 0 else 0.0
    if share <= 0 or len({groups.get(k) or k for k in train}) < 2:
        return {**split, "val": []}  # type: ignore[dict-item]
    inner = split_cases(train, [groups.get(k) for k in train], (1 - share, share, 0.0), seed)
    log.info("validation: %d of the %d training cases of the split file (%.0f%%, --split), drawn by group",
             len(inner["val"]), len(train), 100 * share)
    return {"train": inner["train"], "val": inner["val"], "test": list(split.get("test") or [])}
