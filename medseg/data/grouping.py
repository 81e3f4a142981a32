"""Which patient each 2D case belongs to, so that a split never puts one patient on both sides.

In order, the first rule that applies gives the groups (:func:`assign_groups`):

1. ``--group-pattern REGEX`` (group ``group``, or group 1) on each image name;
2. ``--groups-csv`` with the columns ``file,group``;
3. **folders**: cases found in per-patient folders (``DATA/<patient>/...``, or
   ``images/<patient>/...``) take the folder's name; folders named like a split subset
   (``train``, ``test``...) are skipped;
4. **patient ids** in every name (``patient003_slice12``, ``case_7``, ``sub-01``);
5. **name stems**: names that end in a number after a separator or a slice word
   (``<stem>_<n>``, ``<stem>-slice<n>``, ``<stem> (<n>)``) share the group ``<stem>``;
6. otherwise each case is its own group.

Rules 3 and 5 are guesses, so they must look like patients, not categories (:func:`plausible`):
at least :data:`MIN_GROUPS` groups, no group with more than half the cases, most cases
sharing a group with another, and ids that carry a digit (``TCGA_CS_4941``) unless
there are many groups. Folders ``benign/``, ``malignant/``, ``normal/`` are classes, not patients.
"""

from __future__ import annotations

from functools import partial

import csv
import logging
import re
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from medseg.data.naming import SPLIT_WORDS, pattern_key_fn, tokens
from medseg.logs import info_once
from medseg.errors import ConfigError, DataError

log = logging.getLogger(__name__)

#: a guessed grouping needs at least this many groups (one per split subset)
MIN_GROUPS = 3
#: ... and, when the group names carry no digit, at least this many
MIN_GROUPS_WITHOUT_DIGITS = 10

_PATIENT_ID = re.compile(r"(?i)(?<![a-z])(patient|case|subject|pat|sub|p)[-_]?\d+")
_SLICE_WORD = re.compile(r"(slice|slc|sl|frame|z|s)?(\d+)$")
_SLICE_WORDS = frozenset({"slice", "slc", "sl", "frame", "z", "s"})


@dataclass(frozen=True)
class Grouping:
    """The groups of the cases and how they were found."""

    groups: dict[str, str]   #: case key -> group
    method: str              #: pattern | csv | folders | patient ids | name stems | none

    def summary(self) -> dict:
        sizes = sorted(Counter(self.groups.values()).values())
        example = next(iter(self.groups.items()), None)
        return {"method": self.method, "groups": len(sizes), "cases": len(self.groups),
                "size_min": sizes[0] if sizes else 0, "size_median": sizes[len(sizes) // 2] if sizes else 0,
                "size_max": sizes[-1] if sizes else 0,
                "example": {"case": example[0], "group": example[1]} if example else None}


def plausible(groups: Mapping[str, str]) -> bool:
    """Whether guessed groups look like patients (see the module docs)."""
    sizes = Counter(groups.values())
    n = len(groups)
    if len(sizes) < MIN_GROUPS or max(sizes.values()) > n / 2:
        return False
    if sum(s for s in sizes.values() if s > 1) < n / 2:  # most cases share their group
        return False
    return len(sizes) >= MIN_GROUPS_WITHOUT_DIGITS or all(any(ch.isdigit() for ch in g) for g in sizes)


def folder_group(relative: Path) -> str | None:
    """The patient folder of a case found at ``relative`` (its folder under the dataset root, role
    folders such as ``images/`` already removed): the first part that is not a split subset's name."""
    for part in relative.parts:
        if part.lower() not in SPLIT_WORDS:
            return part
    return None


def name_stem(key: str) -> str | None:
    """``<stem>`` of a name ending in a number after a separator or slice word, else ``None``:
    ``tcga_cs_4941_19960909_1`` -> ``tcga_cs_4941_19960909``; ``hippocampus_001_slice12`` ->
    ``hippocampus_001``; ``benign_12`` -> ``benign``; ``cju0qkwl35`` -> ``None``."""
    words = tokens(key)
    if len(words) < 2:
        return None
    m = _SLICE_WORD.fullmatch(words[-1])
    if m is None:
        return None
    words = words[:-1]
    if m.group(1) is None and len(words) > 1 and words[-1] in _SLICE_WORDS:  # "<stem>_slice_07"
        words = words[:-1]
    return "_".join(words) or None


def _read_groups_csv(path: Path) -> dict[str, str]:
    if not path.is_file():
        raise DataError("groups CSV not found", path=path)
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            reader = csv.DictReader(f)
            fields = {(n or "").strip().lower(): n for n in (reader.fieldnames or [])}
            if "file" not in fields or "group" not in fields:
                raise DataError(
                    f"groups CSV needs the columns 'file' and 'group' (found: {', '.join(fields) or 'none'})",
                    path=path,
                    hint="first line: file,group  then one line per image: 21_training.tif,patient07",
                )
            mapping: dict[str, str] = {}
            for row in reader:
                name = (row.get(fields["file"]) or "").strip()
                group = (row.get(fields["group"]) or "").strip()
                if not name:
                    continue
                if not group:
                    raise DataError(f"line {reader.line_num}: empty group for '{name}'", path=path)
                mapping[Path(name).name] = group
    except UnicodeDecodeError as e:
        raise DataError(f"cannot read groups CSV: {e}", path=path, hint="save it as UTF-8 text") from None
    return mapping


def _from_csv(root: Path, images: Mapping[str, Path], groups_csv: str | Path) -> dict[str, str]:
    csv_path = Path(groups_csv)
    if not csv_path.is_absolute() and not csv_path.is_file() and (root / csv_path).is_file():
        csv_path = root / csv_path
    mapping = _read_groups_csv(csv_path)
    by_stem: dict[str, str] = {Path(n).stem: g for n, g in mapping.items()}
    out: dict[str, str] = {}
    for k, p in images.items():
        g = mapping.get(p.name, by_stem.get(p.stem))
        if g is None:
            raise DataError(
                f"image '{p.name}' is not listed in the groups CSV {csv_path}",
                path=p,
                hint=f"add a line '{p.name},<group>' to {csv_path.name}",
            )
        out[k] = g
    return out


def assign_groups(
    root: Path,
    images: Mapping[str, Path],
    folders: Mapping[str, Path],
    group_pattern: str | None = None,
    groups_csv: str | Path | None = None,
) -> Grouping:
    """The group of every case key (see the module docs for the rules, in order).

    ``images`` maps case keys to image files; ``folders`` maps them to the case's folder relative to
    ``root`` with role folders removed (``Path()`` for cases at the top).
    """
    if group_pattern is not None and groups_csv is not None:
        raise ConfigError("give either a group pattern or a groups CSV, not both")
    if group_pattern is not None:
        fn = pattern_key_fn(group_pattern, "group pattern", "group")
        return Grouping({k: fn(p) for k, p in images.items()}, "pattern")
    if groups_csv is not None:
        return Grouping(_from_csv(root, images, groups_csv), "csv")
    if not images:
        return Grouping({}, "none")

    by_folder = {k: folder_group(folders.get(k, Path())) for k in images}
    if all(by_folder.values()) and plausible(by_folder):  # type: ignore[arg-type]
        return _found(Grouping({k: str(g) for k, g in by_folder.items()}, "folders"))

    ids = {k: _PATIENT_ID.search(p.stem) for k, p in images.items()}
    if all(m is not None for m in ids.values()):
        return _found(Grouping({k: m.group(0).lower() for k, m in ids.items()}, "patient ids"))  # type: ignore[union-attr]

    stems = {k: name_stem(k) for k in images}
    if all(stems.values()) and plausible(stems):  # type: ignore[arg-type]
        return _found(Grouping({k: str(s) for k, s in stems.items()}, "name stems"))
    return Grouping({k: k for k in images}, "none")


def _found(grouping: Grouping) -> Grouping:
    s = grouping.summary()
    (partial(info_once, log) if s["groups"] < s["cases"] else log.debug)(
        "grouping slices by %s: %d images in %d groups (e.g. %s -> %s)",
        grouping.method, s["cases"], s["groups"], s["example"]["case"], s["example"]["group"])
    return grouping
