"""Corpus cases: DICOM series given to a 3D run."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from medseg.io import Geometry
from medseg.io.dicom import write_dicom_series
from tests.hostile.corpus import Runs, case


UID = "1.2.826.0.1.3680043.8.498.1"


def _series(tmp: Path, n: int = 8) -> tuple[Path, list[Path]]:
    rng = np.random.default_rng(5)
    array = rng.integers(-100, 300, (1, 24, 28, n)).astype(np.int16)
    files = write_dicom_series(tmp / "series", array, Geometry((1.2, 1.0, 2.5), (0.0, 0.0, 0.0), tuple(np.eye(3).ravel())),
                               modality="CT", series_uid=UID)
    return tmp / "series", files


@case(names="0004.dcm", says="not readable DICOM", code=1)
def predict_a_series_with_a_corrupt_slice(tmp: Path, runs: Runs) -> list:
    """Defect 2: one garbage slice gave a 7-slice volume on the wrong grid, silently."""
    folder, files = _series(tmp)
    files[3].write_bytes(np.random.default_rng(0).integers(0, 256, 200, dtype=np.uint8).tobytes())
    return ["predict", runs.run3d, folder, "--out", tmp / "o"]


@case(names="series", says="gap", code=1)
def predict_a_series_missing_a_slice(tmp: Path, runs: Runs) -> list:
    folder, files = _series(tmp)
    files[4].unlink()
    return ["predict", runs.run3d, folder, "--out", tmp / "o"]


@case(names="series", says="orientation", code=1)
def predict_a_series_of_mixed_orientations(tmp: Path, runs: Runs) -> list:
    folder, files = _series(tmp)
    turned = Geometry((1.2, 1.0, 2.5), (0.0, 0.0, 5.0), (0.0, 1.0, 0.0, 1.0, 0.0, 0.0, 0.0, 0.0, -1.0))
    (one,) = write_dicom_series(tmp / "turned", np.zeros((1, 24, 28, 1), np.int16), turned, modality="CT", series_uid=UID)
    files[2].unlink()
    one.rename(files[2])  # one slice of the series in another orientation
    return ["predict", runs.run3d, folder, "--out", tmp / "o"]


@case(names="empty_series")
def predict_an_empty_series_folder(tmp: Path, runs: Runs) -> list:
    (tmp / "empty_series").mkdir()
    return ["predict", runs.run3d, tmp / "empty_series", "--out", tmp / "o"]
