"""The one reader/writer interface (after nnU-Net's ``BaseReaderWriter``).

A reader returns the pixel/voxel data channel-first, ``(C, *spatial)``, and the
geometry needed to write a result back onto the same grid. Implementations are
registered explicitly, keyed by file ending; nothing is found by walking folders.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from medseg.errors import DataError


@dataclass(frozen=True)
class Geometry:
    """Where an array sits in physical space.

    ``spacing``, ``origin`` and ``direction`` follow the array's spatial axis
    order (the order of ``array.shape[1:]``). ``direction`` is the row-major
    flattened ``ndim x ndim`` matrix whose columns are the axis directions.
    2D images get unit spacing unless their file says otherwise.
    """

    spacing: tuple[float, ...]
    origin: tuple[float, ...] = ()
    direction: tuple[float, ...] = ()

    def __post_init__(self) -> None:
        n = len(self.spacing)
        if not self.origin:
            object.__setattr__(self, "origin", (0.0,) * n)
        if not self.direction:
            object.__setattr__(self, "direction", tuple(np.eye(n).ravel().tolist()))

    @property
    def ndim(self) -> int:
        return len(self.spacing)

    @classmethod
    def identity(cls, ndim: int) -> "Geometry":
        return cls(spacing=(1.0,) * ndim)

    def to_json(self) -> dict:
        return {"spacing": list(self.spacing), "origin": list(self.origin), "direction": list(self.direction)}

    @classmethod
    def from_json(cls, d: dict) -> "Geometry":
        return cls(tuple(d["spacing"]), tuple(d["origin"]), tuple(d["direction"]))


@dataclass
class ImageData:
    """A channel-first array ``(C, *spatial)`` with its geometry and source."""

    array: np.ndarray
    geometry: Geometry
    path: Path | None = None
    meta: dict = field(default_factory=dict)

    @property
    def spatial_shape(self) -> tuple[int, ...]:
        return tuple(self.array.shape[1:])


class ReaderWriter(abc.ABC):
    """Reads and writes one family of file formats."""

    #: lower-case file endings this class handles, e.g. ``(".png", ".tif")``
    suffixes: tuple[str, ...] = ()

    @abc.abstractmethod
    def read(self, path: Path) -> ImageData:
        """Read ``path``; raise :class:`DataError` naming the file when it cannot be read."""

    @abc.abstractmethod
    def write(self, path: Path, array: np.ndarray, geometry: Geometry | None = None) -> None:
        """Write a channel-first ``array`` to ``path`` (atomically) with ``geometry``."""


_REGISTRY: dict[str, ReaderWriter] = {}


def register(rw: ReaderWriter) -> ReaderWriter:
    for s in rw.suffixes:
        if s in _REGISTRY:
            raise ValueError(f"A reader is already registered for '{s}': {type(_REGISTRY[s]).__name__}")
        _REGISTRY[s] = rw
    return rw


def _ensure_builtins() -> None:
    # Imports are cached, so this is cheap; each module registers itself once.
    from medseg.io import image2d, volume  # noqa: F401


def file_suffix(path: str | Path) -> str:
    """The format-defining ending of ``path``: ``.nii.gz`` counts as one."""
    name = Path(path).name.lower()
    for double in (".nii.gz", ".tar.gz"):
        if name.endswith(double):
            return double
    return Path(name).suffix


def supported_suffixes() -> list[str]:
    _ensure_builtins()
    return sorted(_REGISTRY)


def reader_for(path: str | Path) -> ReaderWriter:
    _ensure_builtins()
    suffix = file_suffix(path)
    try:
        return _REGISTRY[suffix]
    except KeyError:
        raise DataError(
            f"unsupported file type '{suffix or '(no ending)'}'",
            path=path,
            hint=f"medseg reads: {', '.join(supported_suffixes())}",
        ) from None


def read_image(path: str | Path) -> ImageData:
    path = Path(path)
    if path.is_dir():  # a folder is read as one DICOM series
        from medseg.io.dicom import read_dicom_series

        return read_dicom_series(path)
    if not path.is_file():
        raise DataError("file not found", path=path)
    return reader_for(path).read(path)


def write_image(path: str | Path, array: np.ndarray, geometry: Geometry | None = None) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    reader_for(path).write(path, array, geometry)
