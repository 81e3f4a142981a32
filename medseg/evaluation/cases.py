"""Labelled cases to score a run on, 2D or 3D: from its split, or from another labelled folder.

:func:`run_cases` takes a subset of the run's ``split.json``; :func:`folder_cases` finds every
labelled case of a dataset folder the way training would (2D folders with the run's pairing
options, 3D datasets by their layout); :func:`read_case` reads one: the image, its truth as class
ids on the image's grid, and its field of view (2D).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from medseg.data.dataset2d import DataOptions2D, read_fov
from medseg.data.dataset3d import class_ids
from medseg.data.discovery import discover_cases
from medseg.data.labels import LabelScheme
from medseg.data.mask_reading import read_mask
from medseg.data.layouts import discover_volume_cases
from medseg.data.volume_case import VolumeCase, load_case
from medseg.errors import ConfigError, DataError, RunFolderError
from medseg.io import ImageData, read_image
from medseg.runfolder.split import SPLIT_FILE, SplitEntry, check_files, read_split


@dataclass
class LabelledCase:
    key: str
    image: ImageData
    truth: np.ndarray               # (*S) class ids on the image's grid
    region: np.ndarray | None = None  # (*S) bool field of view, or None (everywhere)


def run_cases(run_dir: str | Path, subsets: tuple[str, ...]) -> tuple[list[SplitEntry], str]:
    """The cases of the first non-empty subset of the run's split among ``subsets``, files checked, and
    which subset it was (``"test split"``)."""
    split = read_split(run_dir)
    for subset in subsets:
        if split[subset]:
            check_files(split[subset], run_dir)
            return split[subset], f"{subset} split"
    raise RunFolderError(f"the run's split has no {' or '.join(subsets)} cases", path=Path(run_dir) / SPLIT_FILE,
                         hint="evaluate on a labelled folder with --data DIR" if "test" in subsets else
                         "train with a validation split (e.g. --split 60/20/20 or a --split-file with 'val')")


def folder_cases(data: str | Path, dims: int, data_options: dict | None = None, fov: str | None = None) -> list[SplitEntry]:
    """Every labelled case of the dataset folder ``data`` (``dims`` spatial axes, as the run's);
    2D folders are read with the run's pairing pattern and ``fov``."""
    if dims == 2:
        opts = DataOptions2D(**(data_options or {}))
        return [SplitEntry(c.key, (c.image,), c.masks, c.fov, c.group)
                for c in discover_cases(Path(data), fov=fov, pair_pattern=opts.pair_pattern, require_masks=True)]
    if fov:
        raise ConfigError("--fov applies to 2D image folders; a 3D run is evaluated on whole volumes", path=data)
    cases, _ = discover_volume_cases(data, require_labels=True)
    return [SplitEntry(c.key, c.images, (c.label,) if c.label else ()) for c in cases]


def read_case(entry: SplitEntry, scheme: LabelScheme, dims: int, num_channels: int | None = None) -> LabelledCase:
    """The image, truth (class ids) and field of view of one case; a mask whose size differs from its
    image's is an error naming it."""
    if dims == 2:
        image = read_image(entry.images[0])
        truth = read_mask(list(entry.labels), scheme)
        if truth.shape != image.spatial_shape:
            raise DataError(f"mask size {truth.shape[::-1]} differs from image size {image.spatial_shape[::-1]}",
                            path=entry.labels[0])
        region = read_fov(entry.fov, image.spatial_shape) if entry.fov is not None else None
        return LabelledCase(entry.key, image, truth, region)
    values = tuple(scheme.codes)
    image, label = load_case(VolumeCase(entry.key, entry.images, entry.labels[0], values, num_channels), labels=values)
    return LabelledCase(entry.key, image, class_ids(label.array[0], scheme))
