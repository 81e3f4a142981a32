"""A disk cache of preprocessed 3D cases.

Each case is stored in the cache folder as

- ``CASE_image.npy``: float32 ``(C, *spatial)``,
- ``CASE_label.npy``: uint8 ``(1, *spatial)`` (absent for unlabelled cases),
- ``CASE.json``: the fingerprint plus caller metadata (original geometry, bbox,
  shapes, spacing, ...), written last so that it marks a complete entry.

The fingerprint is a SHA-256 over the input files (resolved path, size,
modification time in ns; a DICOM folder counts as its files) and the
preprocessing configuration (canonical JSON). An entry is reused only when the
fingerprint matches, so it is re-made when an input file or the configuration
changes. Arrays are loaded with ``mmap_mode="r"``. Every file is written to a
temporary name beside its target and then renamed (``np.save`` is given an open
file, so it cannot append a second ``.npy``).
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from medseg.errors import DataError
from medseg.io.atomic import atomic_path, write_json

logger = logging.getLogger(__name__)

CACHE_VERSION = 1


@dataclass
class CachedCase:
    key: str
    image: np.ndarray
    label: np.ndarray | None
    meta: dict = field(default_factory=dict)


def _file_records(p: Path) -> list[list]:
    p = Path(p)
    if p.is_dir():
        files = sorted(f for f in p.iterdir() if f.is_file())
    else:
        files = [p]
    records = []
    for f in files:
        try:
            st = f.stat()
        except OSError:
            raise DataError("input file not found", path=f) from None
        records.append([str(f.resolve()), st.st_size, st.st_mtime_ns])
    return records


def fingerprint(inputs: Sequence[str | Path], config: dict) -> str:
    """Hash of the input files (path, size, mtime) and the preprocessing ``config``."""
    records = [r for p in inputs for r in _file_records(Path(p))]
    try:
        cfg = json.dumps(config, sort_keys=True, default=str, separators=(",", ":"))
    except (TypeError, ValueError) as e:
        raise TypeError(f"preprocessing config is not JSON-serialisable: {e}") from None
    payload = json.dumps({"version": CACHE_VERSION, "inputs": records, "config": cfg}, separators=(",", ":"))
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()


def _save_npy(path: Path, array: np.ndarray) -> None:
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:  # a file object: np.save appends no second ".npy"
            np.save(f, np.ascontiguousarray(array), allow_pickle=False)


class PreprocessedCache:
    """Preprocessed cases in ``folder``, re-made only when inputs or configuration change."""

    def __init__(self, folder: str | Path):
        self.folder = Path(folder)

    def _paths(self, key: str) -> tuple[Path, Path, Path]:
        if not key or key.startswith(".") or any(ch in key for ch in "/\\\0"):
            raise DataError(
                f"case name '{key}' cannot be used as a cache file name",
                hint="case names must not be empty, start with '.', or contain path separators",
            )
        return (
            self.folder / f"{key}_image.npy",
            self.folder / f"{key}_label.npy",
            self.folder / f"{key}.json",
        )

    def get(self, key: str, inputs: Sequence[str | Path], config: dict) -> CachedCase | None:
        """The cached case when present and up to date, else ``None``."""
        image_p, label_p, meta_p = self._paths(key)
        if not meta_p.is_file() or not image_p.is_file():
            return None
        try:
            record = json.loads(meta_p.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            logger.warning("%s: unreadable cache entry, re-making it", meta_p)
            return None
        if record.get("fingerprint") != fingerprint(inputs, config):
            logger.debug("%s: cache entry out of date", key)
            return None
        try:
            image = np.load(image_p, mmap_mode="r")
            label = np.load(label_p, mmap_mode="r") if record.get("has_label") else None
        except (OSError, ValueError) as e:
            logger.warning("%s: broken cache entry (%s), re-making it", meta_p, e)
            return None
        if list(image.shape) != record.get("image_shape") or (
            label is not None and list(label.shape) != record.get("label_shape")
        ):
            logger.warning("%s: cache arrays do not match their record, re-making it", meta_p)
            return None
        return CachedCase(key, image, label, record.get("meta", {}))

    def put(
        self,
        key: str,
        inputs: Sequence[str | Path],
        config: dict,
        image: np.ndarray,
        label: np.ndarray | None = None,
        meta: dict | None = None,
    ) -> CachedCase:
        """Store a preprocessed case (image as float32, label as uint8) and return it memory-mapped."""
        image_p, label_p, meta_p = self._paths(key)
        self.folder.mkdir(parents=True, exist_ok=True)
        fp = fingerprint(inputs, config)  # before writing: inputs changing meanwhile make the entry stale
        image = np.asarray(image, dtype=np.float32)
        if label is not None:
            label = np.asarray(label)
            if label.size and (label.min() < 0 or label.max() > 255):
                raise DataError(f"case '{key}': label values outside 0..255 cannot be cached as uint8")
            label = label.astype(np.uint8, copy=False)
        if meta_p.exists():
            meta_p.unlink()  # the entry is incomplete until the new record is written
        _save_npy(image_p, image)
        if label is not None:
            _save_npy(label_p, label)
        elif label_p.exists():
            label_p.unlink()
        record = {
            "version": CACHE_VERSION,
            "key": key,
            "fingerprint": fp,
            "inputs": [str(p) for p in inputs],
            "config": json.loads(json.dumps(config, default=str)),
            "has_label": label is not None,
            "image_shape": list(image.shape),
            "label_shape": list(label.shape) if label is not None else None,
            "meta": json.loads(json.dumps(meta or {}, default=_json_default)),
        }
        write_json(meta_p, record)
        return CachedCase(
            key,
            np.load(image_p, mmap_mode="r"),
            np.load(label_p, mmap_mode="r") if label is not None else None,
            record["meta"],
        )

    def get_or_make(
        self,
        key: str,
        inputs: Sequence[str | Path],
        config: dict,
        make: Callable[[], tuple[np.ndarray, np.ndarray | None, dict]],
    ) -> CachedCase:
        """The cached case, or ``make()`` -> ``(image, label, meta)`` stored and returned."""
        hit = self.get(key, inputs, config)
        if hit is not None:
            logger.debug("%s: cache hit", key)
            return hit
        logger.debug("%s: cache miss, preprocessing", key)
        image, label, meta = make()
        return self.put(key, inputs, config, image, label, meta)

    def remove(self, key: str) -> None:
        for p in self._paths(key):
            if p.exists():
                p.unlink()


def _json_default(obj):
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    if hasattr(obj, "to_json"):
        return obj.to_json()
    return str(obj)
