"""The training and validation data of a :class:`~medseg.training.setup.TrainSetup`: cases, split,
label scheme and preprocessed arrays, the same :class:`Prepared` for 2D and 3D.

How cases are read differs by kind, and only here: 2D images (folders of PNG/TIF/...) are decoded,
resampled to the working resolution and held in memory (:func:`medseg.data.dataset2d.load_samples`);
3D volumes are cropped, normalised and resampled once into a memory-mapped cache
(:func:`medseg.data.dataset3d.preprocess_cases`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from medseg.data.cache import PreprocessedCache
from medseg.data.dataset2d import Dataset2D, load_samples, prepare_dataset
from medseg.data.dataset3d import class_ids, foreground_stats, label_scheme, median_spacing, preprocess_cases
from medseg.data.labels import LabelScheme
from medseg.data.layouts import discover_volume_cases
from medseg.data.preprocess import Preprocessing
from medseg.data.preprocess2d import Preprocess2D
from medseg.data.preprocess3d import Preprocess3D
from medseg.data.split import case_aliases, complete_split, read_split_file, split_cases
from medseg.data.volume_case import check_label_grid, load_case
from medseg.errors import ConfigError, DataError
from medseg.runfolder.split import SplitEntry
from medseg.runtime import distributed
from medseg.training.setup import TrainSetup

log = logging.getLogger(__name__)


@dataclass
class Prepared:
    """What training reads: arrays ``(C, *S)`` float32 with class-id labels ``(*S)``, and what the run folder records."""

    channels: int
    scheme: LabelScheme
    colors: list
    preprocess: Preprocessing
    split: dict[str, list[str]]
    entries: dict[str, SplitEntry]            #: by case key, for split.json
    train_images: list[np.ndarray]
    train_labels: list[np.ndarray]
    val: list[tuple[np.ndarray, np.ndarray]]
    shapes: list[tuple[int, ...]]             #: the training arrays' spatial shapes (for a hand-set patch)
    spacing: tuple[float, ...]                #: the network grid's spacing (1 per axis for 2D pixels)
    info: dict[str, Any] = field(default_factory=dict)  #: kind-specific medseg_run.json entries


def _check_split(split: dict[str, list[str]]) -> None:
    if not split["train"]:
        raise ConfigError("the split leaves no training cases", hint="use a larger train fraction in --split")


# --------------------------------------------------------------------------- 2D


def split_2d(ds: Dataset2D, fractions, seed: int, split_file: str | None = None) -> dict[str, list[str]]:
    """The split: a split file; else the official one that folders named ``train``/``test`` give (validation
    drawn from training when there is no ``val`` folder); else seeded, group-aware fractions."""
    keys = [c.key for c in ds.cases]
    groups = dict(zip(keys, (c.group for c in ds.cases)))
    if split_file:
        return complete_split(read_split_file(split_file, keys, case_aliases(ds.cases, ds.root)), groups, fractions, seed)
    if any(c.subset for c in ds.cases):
        by_folder = {s: [c.key for c in ds.cases if (c.subset or "train") == s] for s in ("train", "val", "test")}
        log.info("the folders give the split: %d training, %d validation, %d test cases%s", len(by_folder["train"]),
                 len(by_folder["val"]), len(by_folder["test"]),
                 "" if by_folder["val"] else " (validation is drawn from the training cases)")
        return complete_split({**by_folder, "val": by_folder["val"] or None}, groups, fractions, seed)
    return split_cases(keys, list(groups.values()), fractions=fractions, seed=seed)


def prepare_2d(setup: TrainSetup, out: Path) -> Prepared:
    ds = prepare_dataset(setup.data, setup.data_options)
    if ds.scheme.num_classes < 2:
        raise DataError("the masks hold a single class; segmentation needs at least background and one class", path=setup.data)
    pre = setup.preprocess if isinstance(setup.preprocess, Preprocess2D) else Preprocess2D()
    pre.channels = ds.channels
    split = split_2d(ds, setup.split, setup.split_seed, setup.split_file)
    _check_split(split)
    by_key = {c.key: c for c in ds.cases}
    train = load_samples([by_key[k] for k in split["train"]], pre, ds.scheme)
    val = load_samples([by_key[k] for k in split["val"]], pre, ds.scheme)
    load_samples([by_key[k] for k in split["test"]], pre, ds.scheme)  # read once now: a bad test file fails before training
    return Prepared(
        channels=ds.channels, scheme=ds.scheme, colors=ds.display_colors, preprocess=pre, split=split,
        entries={c.key: SplitEntry(c.key, (c.image,), c.masks, c.fov, c.group) for c in ds.cases},
        train_images=[s.image for s in train], train_labels=[s.label for s in train],
        val=[(s.image, s.label) for s in val], shapes=[tuple(s.image.shape[1:]) for s in train], spacing=(1.0, 1.0),
        info={"data_options": setup.data_options.to_json(), "display_colors": [list(c) for c in ds.display_colors]})


# --------------------------------------------------------------------------- 3D


def prepare_3d(setup: TrainSetup, out: Path) -> Prepared:
    cases, ds = discover_volume_cases(setup.data)
    keys = [c.key for c in cases]
    if setup.split_file:
        split = complete_split(read_split_file(setup.split_file, keys), {}, setup.split, setup.split_seed)
    else:
        split = split_cases(keys, [None] * len(keys), fractions=setup.split, seed=setup.split_seed)
    _check_split(split)
    for case in cases:  # every split, the test cases included: a bad one fails now, not after training
        check_label_grid(case)
    by_key = {c.key: c for c in cases}
    declared = ds["labels"]
    values = tuple(sorted(declared)) if declared else None
    if distributed.is_main():  # read once now (as in 2D): a corrupt test case fails before training, not after
        for key in split["test"]:
            load_case(by_key[key], labels=values)
    train_cases, val_cases = [by_key[k] for k in split["train"]], [by_key[k] for k in split["val"]]
    cache = PreprocessedCache(Path(setup.cache_dir) if setup.cache_dir else out / "preprocessed")
    pre = setup.preprocess
    if not isinstance(pre, Preprocess3D):
        spacing = setup.target_spacing or median_spacing(train_cases)
        stats = foreground_stats(train_cases, cache.folder, setup.train.seed) if setup.normalization == "ct" else None
        pre = Preprocess3D(spacing, setup.normalization, stats, setup.crop_to_nonzero)
    log.info("preprocessing %d case(s) to spacing %s (%s normalization) into %s",
             len(train_cases) + len(val_cases), pre.target_spacing, pre.normalization, cache.folder)
    with distributed.main_first():  # DDP: rank 0 fills the cache, the others then read it
        train_pp = preprocess_cases(train_cases, pre, cache, values)
        val_pp = preprocess_cases(val_cases, pre, cache, values)
    scheme = label_scheme(declared, train_pp + val_pp)
    return Prepared(
        channels=int(ds["num_channels"]), scheme=scheme, colors=scheme.colors(), preprocess=pre, split=split,
        entries={c.key: SplitEntry(c.key, c.images, (c.label,) if c.label else ()) for c in cases},
        train_images=[c.image for c in train_pp], train_labels=[class_ids(c.label[0], scheme) for c in train_pp],
        val=[(c.image, class_ids(c.label[0], scheme)) for c in val_pp], shapes=[tuple(c.meta["shape"]) for c in train_pp],
        spacing=tuple(pre.target_spacing),
        info={"dataset": {k: ds[k] for k in ("name", "layout", "channel_names", "num_channels", "file_ending")},
              "cache_dir": _relative_to_run(cache.folder, out)})


def _relative_to_run(folder: Path, run_dir: Path) -> str:
    """``folder`` relative to the run folder when it lies inside it (so it moves with the run), else absolute."""
    folder, run_dir = folder.resolve(), run_dir.resolve()
    return folder.relative_to(run_dir).as_posix() if folder.is_relative_to(run_dir) else str(folder)


def prepare(setup: TrainSetup, out: Path) -> Prepared:
    """The data of ``setup``, read as its kind is read (see the module docs); training masks that are all
    background are refused (there would be nothing to learn)."""
    prepared = (prepare_2d if setup.dims == 2 else prepare_3d)(setup, out)
    if not any(np.any(label > 0) for label in prepared.train_labels):
        raise DataError(f"none of the {len(prepared.train_labels)} training masks holds a single foreground "
                        "pixel: there is nothing to learn", path=setup.data,
                        hint="check that the masks are the right files (and not empty exports)")
    return prepared
