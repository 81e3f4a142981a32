"""The run's ``split.json``: which cases trained, validated and tested, with their files.

One entry format for 2D and 3D::

    {"key": "case_1", "images": ["images/case_1.png"], "labels": ["masks/case_1.png"], "fov": null, "group": "p1"}

Paths are relative to the data folder that ``medseg_run.json`` records (``"data"``, absolute), so a run
folder works from any working directory and after it is moved. When the data folder itself moves,
``medseg relocate RUN NEW_FOLDER`` points the run at its new place (:func:`relocate`). Entries of runs
written before this format (2D ``image``/``masks``, 3D ``label``; paths as given on the command line,
relative to the directory training ran in, or absolute) are read too.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from medseg.errors import RunFolderError
from medseg.io.atomic import write_json

SPLIT_FILE = "split.json"
SPLIT_FORMAT = 2
SUBSETS = ("train", "val", "test")


@dataclass(frozen=True)
class SplitEntry:
    """One case of a split: its key, image file(s) (one per channel, or one DICOM folder), label file(s)
    (several 2D masks of one image are merged), field of view and patient group."""

    key: str
    images: tuple[Path, ...]
    labels: tuple[Path, ...] = ()
    fov: Path | None = None
    group: str | None = None


def _relative(path: Path, root: Path) -> str:
    path = Path(path).resolve()
    return path.relative_to(root).as_posix() if path.is_relative_to(root) else str(path)


def write_split(run_dir: str | Path, data_root: str | Path, subsets: Mapping[str, Iterable[SplitEntry]],
                **meta: Any) -> Path:
    """Write ``RUN/split.json``: ``meta`` (how the split was made: ``fractions``, ``seed``, ``file``) and each
    subset's entries, paths relative to ``data_root``."""
    root = Path(data_root).resolve()

    def entry(e: SplitEntry) -> dict:
        return {"key": e.key, "images": [_relative(p, root) for p in e.images],
                "labels": [_relative(p, root) for p in e.labels], "fov": _relative(e.fov, root) if e.fov else None,
                "group": e.group}

    path = Path(run_dir) / SPLIT_FILE
    write_json(path, {"split_format": SPLIT_FORMAT, **meta, **{s: [entry(e) for e in subsets.get(s, [])] for s in SUBSETS}})
    return path


def _resolver(root: Path, legacy: bool):
    """A function resolving one stored path: relative to ``root``; for a legacy split, as stored (relative to
    the working directory then) when that exists, else its longest tail that exists under ``root``."""
    def resolve(stored: str) -> Path:
        p = Path(stored)
        if not legacy:
            return p if p.is_absolute() else root / p
        if p.exists():
            return p.resolve()
        for i in range(1, len(p.parts)):
            tail = root.joinpath(*p.parts[i:])
            if tail.exists():
                return tail
        return p if p.is_absolute() else root / p
    return resolve


def read_split(run_dir: str | Path, data_root: str | Path | None = None) -> dict[str, list[SplitEntry]]:
    """The run's split, paths resolved; ``data_root`` defaults to ``medseg_run.json``'s ``data``.

    A missing ``split.json`` is a :class:`RunFolderError`; missing data files are reported by
    :func:`check_files`."""
    run_dir = Path(run_dir)
    path = run_dir / SPLIT_FILE
    if not path.is_file():
        raise RunFolderError(f"the run folder has no {SPLIT_FILE}", path=run_dir,
                             hint="pass the --out folder of a finished `medseg train` run")
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise RunFolderError(f"cannot read {SPLIT_FILE}: {e}", path=path) from None
    if data_root is None:
        from medseg.runfolder import read_run_info

        data_root = read_run_info(run_dir, require_model=False).get("data") or "."
    resolve = _resolver(Path(data_root).resolve(), raw.get("split_format") != SPLIT_FORMAT)

    def entry(e: dict) -> SplitEntry:
        images = e.get("images") or ([e["image"]] if e.get("image") else [])
        labels = e.get("labels") if "labels" in e else (e.get("masks") or ([e["label"]] if e.get("label") else []))
        return SplitEntry(str(e["key"]), tuple(resolve(p) for p in images), tuple(resolve(p) for p in labels or []),
                          resolve(e["fov"]) if e.get("fov") else None, e.get("group"))

    try:
        return {s: [entry(e) for e in raw.get(s) or []] for s in SUBSETS}
    except (KeyError, TypeError, AttributeError) as e:
        raise RunFolderError(f"{SPLIT_FILE} holds an entry without a key or files ({e})", path=path) from None


def split_meta(run_dir: str | Path) -> dict[str, Any]:
    """How the run's split was made (``fractions``, ``seed``, ``file``) and its subset sizes."""
    raw = json.loads((Path(run_dir) / SPLIT_FILE).read_text(encoding="utf-8"))
    return {**{k: raw.get(k) for k in ("fractions", "seed", "file")}, "counts": {s: len(raw.get(s) or []) for s in SUBSETS}}


def check_files(entries: Sequence[SplitEntry], run_dir: str | Path) -> None:
    """A :class:`RunFolderError` naming the first missing file of ``entries``, with the fix for a moved data folder."""
    for e in entries:
        for p in (*e.images, *e.labels, *([e.fov] if e.fov else [])):
            if not p.exists():
                raise RunFolderError(
                    f"case '{e.key}': {p} is missing (the run's data folder has moved or changed)", path=run_dir,
                    hint=f"point the run at the data's new place: medseg relocate {run_dir} NEW_DATA_FOLDER")


def relocate(run_dir: str | Path, new_data: str | Path) -> int:
    """Point the run at its data's new folder: check that every file of its split is there, then record the
    folder in ``medseg_run.json``. Returns the number of cases checked."""
    from medseg.runfolder import read_run_info, write_run_info

    run_dir, new_data = Path(run_dir), Path(new_data).resolve()
    if not new_data.is_dir():
        raise RunFolderError("the new data folder does not exist", path=new_data)
    info = read_run_info(run_dir, require_model=False)
    split = read_split(run_dir, new_data)
    entries = [e for s in SUBSETS for e in split[s]]
    check_files(entries, run_dir)
    meta = {k: v for k, v in split_meta(run_dir).items() if k != "counts"}
    write_split(run_dir, new_data, split, **meta)  # in the current format, relative to the new folder
    info = {k: v for k, v in info.items() if k not in ("format_version", "medseg_version", "written")}
    write_run_info(run_dir, {**info, "data": str(new_data)})
    return len(entries)
