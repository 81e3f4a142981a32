"""The image files of a folder: which files count, which are skipped (with a warning) or ignored silently."""

from __future__ import annotations

import logging
from pathlib import Path

from medseg.errors import DataError

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".png", ".tif", ".tiff", ".gif", ".jpg", ".jpeg", ".bmp")
#: operating-system clutter and medseg's own dataset metadata, skipped without a warning
JUNK_FILES = frozenset({"thumbs.db", "desktop.ini", "labels.json"})
#: folders never searched: archive clutter
JUNK_DIRS = frozenset({"__macosx", "__pycache__"})


def brief_listing(folder: Path, limit: int = 8) -> str:
    try:
        entries = sorted(folder.iterdir(), key=lambda p: p.name.lower())
    except OSError:
        return "(cannot list)"
    if not entries:
        return "(empty)"
    names = [p.name + ("/" if p.is_dir() else "") for p in entries[:limit]]
    more = f" ... and {len(entries) - limit} more" if len(entries) > limit else ""
    return ", ".join(names) + more


def visible(p: Path) -> bool:
    return not p.name.startswith(".") and p.name.lower() not in JUNK_FILES | JUNK_DIRS


def _scan(folder: Path, recursive: bool) -> tuple[list[Path], list[str]]:
    """(image files, names of other files) in ``folder``, sorted by path; hidden files and clutter left out."""
    images: list[Path] = []
    skipped: list[str] = []
    for p in sorted(folder.iterdir(), key=lambda p: p.name):
        if not visible(p):
            continue
        if p.is_dir():
            if recursive:
                sub_images, sub_skipped = _scan(p, True)
                images += sub_images
                skipped += [f"{p.name}/{s}" for s in sub_skipped]
        elif p.suffix.lower() in IMAGE_SUFFIXES:
            images.append(p)
        elif p.is_file():
            skipped.append(p.name)
    return images, skipped


def list_image_files(folder: Path, recursive: bool = False, warn: bool = True) -> list[Path]:
    """The image files in ``folder`` (and its subfolders when ``recursive``), sorted by path.

    Hidden files (``.DS_Store``, ``._x.png``), OS clutter (``Thumbs.db``, ``desktop.ini``) and
    ``labels.json`` are ignored silently; any other file whose ending is not one of
    :data:`IMAGE_SUFFIXES` is skipped with one logged WARNING naming them (unless ``warn`` is
    false), so a stray ``notes.txt`` does not stop a run.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError("folder not found", path=folder)
    images, skipped = _scan(folder, recursive)
    if skipped and warn:
        shown = ", ".join(skipped[:10]) + (f" ... and {len(skipped) - 10} more" if len(skipped) > 10 else "")
        log.warning("%s: skipping %d file(s) that are not 2D images: %s", folder, len(skipped), shown)
    return images


def has_images(folder: Path) -> bool:
    return any(p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES and visible(p) for p in folder.iterdir())


def names_of(paths, limit: int = 5) -> str:
    paths = list(paths)
    shown = ", ".join(p.name for p in paths[:limit])
    return shown + (f" ... and {len(paths) - limit} more" if len(paths) > limit else "")


# --------------------------------------------------------------------------- layouts
