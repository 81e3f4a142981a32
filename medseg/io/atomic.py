"""Atomic file writes: write to a temporary file beside the target, then rename.

A crash mid-write leaves the previous file intact, never a truncated one. The file gets the mode a plain
``open(path, "w")`` would give (``0o666`` less the user's umask), not ``mkstemp``'s private ``0o600``, so
colleagues, a web server or an export job can read predictions, reports and weights where the umask allows.
"""

from __future__ import annotations

import json
import os
import tempfile
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path


_UMASK_LOCK = threading.Lock()


def file_mode() -> int:
    """``0o666`` less the process's current umask (read by setting and restoring it, under a lock)."""
    with _UMASK_LOCK:
        mask = os.umask(0o022)
        os.umask(mask)
    return 0o666 & ~mask


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path in the target's folder; on success rename it onto ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp" + "".join(path.suffixes[-2:]), dir=path.parent)
    except OSError as e:  # report the file the user asked for, not the temporary name
        raise type(e)(e.errno, e.strerror, str(path)) from None
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        if tmp_path.exists():
            os.chmod(tmp_path, file_mode())
        os.replace(tmp_path, path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def atomic_write(path: str | Path, writer: Callable[[Path], None]) -> None:
    with atomic_path(path) as tmp:
        writer(tmp)


def write_text(path: str | Path, text: str) -> None:
    atomic_write(path, lambda p: p.write_text(text, encoding="utf-8"))


def write_json(path: str | Path, obj) -> None:
    write_text(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")


#: the file a command leaves in a folder it made for itself (``medseg synth``, ``medseg demo``); such a folder may be
#: written again by the same command
OWNER_MARK = ".medseg_owner"


def claim_folder(folder: str | Path, command: str) -> None:
    """Make ``folder`` for ``command``'s outputs, or refuse: an existing folder with anything in it is accepted
    only when ``command`` made it (its :data:`OWNER_MARK` says so), so a user's files are never mixed with, or
    replaced by, generated ones."""
    from medseg.errors import ConfigError

    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise ConfigError("a file stands where the output folder should be", path=folder, hint="choose another folder")
    mark = folder / OWNER_MARK
    if folder.is_dir() and any(folder.iterdir()):
        owner = mark.read_text().strip() if mark.is_file() else None
        if owner != command:
            raise ConfigError(f"the folder is not empty; `medseg {command}` writes only into a new or empty folder "
                              "(or one it made before)", path=folder, hint="choose a new folder")
    folder.mkdir(parents=True, exist_ok=True)
    write_text(mark, command + "\n")
