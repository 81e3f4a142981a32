"""Which cases each tool trains on, validates on and is evaluated on: one description per dataset.

A :class:`BenchDataset` fixes the split once, so medseg and nnU-Net see exactly the same cases:

- ``hippocampus``: the shared MSD Task04 folder with ``split_160_40.json`` (160 train / 40 val); the
  40 validation cases are also the evaluated ones (the split has no test set).
- ``drive``: the shared DRIVE folder: the 20 official ``training`` images, split 17/3 into train/val
  exactly as ``medseg train --split 85/15/0`` does (medseg's own seeded, group-aware split), and the 20
  official ``test`` images, evaluated inside their field-of-view masks.
- any other folder in a layout medseg reads (``--dataset PATH``): 3D (Decathlon, nnU-Net raw, images/ +
  labels/ volumes) split by ``--split-file`` or 80/20 train/val (val evaluated); 2D with ``training/``
  and ``test``/``testing/`` subfolders like DRIVE, or one folder split 70/15/15 (test evaluated).

Case keys are medseg's (``hippocampus_015``, ``21``); they become nnU-Net's case identifiers.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, replace
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SHARED = ROOT.parent / "shared" / "datasets"
#: name -> (folder, split file inside it or None, nnU-Net dataset id, nnU-Net dataset name)
KNOWN = {
    "hippocampus": (SHARED / "hippocampus", "split_160_40.json", 4, "Hippocampus"),
    "drive": (SHARED / "drive", None, 901, "DRIVE"),
}
GENERIC_ID = 999
TRAIN_DIRS = ("training", "train")
TEST_DIRS = ("testing", "test")


@dataclass(frozen=True)
class BenchCase:
    """One case. ``images``: 3D one file (or DICOM folder) per channel, or one 4D file; 2D the image file.
    ``labels``: the label file(s) (2D: several masks of one image are merged). ``fov``: 2D field of view."""

    key: str
    images: tuple[Path, ...]
    labels: tuple[Path, ...]
    fov: Path | None = None


@dataclass(frozen=True)
class BenchDataset:
    """The benchmark's view of a dataset.

    ``source`` is the folder ``medseg train`` gets, with ``medseg_split`` (``--split`` fractions, 2D) or
    the split file written from ``train``/``val`` (3D). ``test`` holds the cases both tools predict and
    are evaluated on. ``labels`` maps class name -> label value (background 0, values 0..K-1);
    ``channel_names`` nnU-Net's ``{"0": "MRI"}``. ``scheme`` is medseg's 2D LabelScheme (None in 3D).
    """

    name: str
    dataset_id: int
    dim: int
    source: Path
    train: tuple[BenchCase, ...]
    val: tuple[BenchCase, ...]
    test: tuple[BenchCase, ...]
    labels: dict[str, int]
    channel_names: dict[str, str]
    medseg_split: str | None = None
    scheme: object | None = None
    num_channels: int = 1

    @property
    def nnunet_name(self) -> str:
        return f"Dataset{self.dataset_id:03d}_{self.name}"

    @property
    def file_ending(self) -> str:
        return ".nii.gz" if self.dim == 3 else ".png"

    def smoke(self, n_train: int = 8, n_val: int = 2) -> BenchDataset:
        """A few cases for a quick end-to-end check. 2D keeps medseg's split (it is made from fractions)
        and trims only the evaluated cases; 3D trims all three lists (the written split file follows)."""
        if self.dim == 2:
            return replace(self, test=self.test[:n_val])
        val = self.val[:n_val]
        test = val if self.test == self.val else self.test[:n_val]
        return replace(self, train=self.train[:n_train], val=val, test=test)


def _sanitise(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "", name) or "Data"


def resolve(dataset: str, split_file: str | Path | None = None) -> BenchDataset:
    """``hippocampus``, ``drive`` or a folder path -> its :class:`BenchDataset`."""
    if dataset.lower() in KNOWN:
        folder, split_name, ds_id, name = KNOWN[dataset.lower()]
        if not folder.is_dir():
            raise FileNotFoundError(f"{dataset}: shared dataset folder not found at {folder}")
        if split_name and split_file is None:
            split_file = folder / split_name
    else:
        folder, ds_id, name = Path(dataset), GENERIC_ID, _sanitise(Path(dataset).resolve().name)
        if not folder.is_dir():
            raise FileNotFoundError(f"dataset folder not found: {folder}")
    from medseg.data.dataset_kind import is_volume_dataset

    if is_volume_dataset(folder):
        return _volume_dataset(folder, name, ds_id, split_file)
    if split_file is not None:
        raise ValueError("--split-file is for 3D datasets; 2D splits use medseg's seeded fractions")
    return _image_dataset(folder, name, ds_id)


# --------------------------------------------------------------------------- 3D


def _volume_dataset(folder: Path, name: str, ds_id: int, split_file: str | Path | None) -> BenchDataset:
    from medseg.data.split import read_split_file
    from medseg.data.layouts import discover_volume_cases
    from medseg.data.split import split_cases

    cases, info = discover_volume_cases(folder)
    keys = [c.key for c in cases]
    if split_file is not None:
        split = read_split_file(split_file, keys)
    else:
        split = split_cases(keys, [None] * len(keys), fractions=(0.8, 0.2, 0.0), seed=0)
    if not split["val"]:
        raise ValueError(f"{split_file}: nnU-Net's fold 0 needs validation cases (a \"val\" list)")
    by_key = {c.key: c for c in cases}

    def bench(keys_: list[str]) -> tuple[BenchCase, ...]:
        return tuple(BenchCase(k, tuple(by_key[k].images), (by_key[k].label,)) for k in keys_)

    train, val = bench(split["train"]), bench(split["val"])
    test = bench(split["test"]) if split["test"] else val
    declared = info.get("labels")
    values = sorted(declared) if declared else None
    labels = ({("background" if v == 0 else str(declared[v])): int(v) for v in values} if values is not None else {})
    channels = info.get("channel_names") or [f"channel{i}" for i in range(info["num_channels"])]
    return BenchDataset(name, ds_id, 3, folder, train, val, test, labels,
                        {str(i): str(n) for i, n in enumerate(channels)}, num_channels=int(info["num_channels"]))


# --------------------------------------------------------------------------- 2D


def _subfolder(folder: Path, names: tuple[str, ...]) -> Path | None:
    return next((folder / n for n in names if (folder / n).is_dir()), None)


def _image_dataset(folder: Path, name: str, ds_id: int) -> BenchDataset:
    from medseg.data.dataset2d import DataOptions2D, prepare_dataset
    from medseg.data.split import split_cases

    train_dir, test_dir = _subfolder(folder, TRAIN_DIRS), _subfolder(folder, TEST_DIRS)
    official = train_dir is not None and test_dir is not None
    source = train_dir if official else folder
    fractions = "85/15/0" if official else "70/15/15"
    ds = prepare_dataset(source, DataOptions2D())
    fr = tuple(float(f) / 100 for f in fractions.split("/"))
    split = split_cases([c.key for c in ds.cases], [c.group for c in ds.cases], fractions=fr, seed=0)
    by_key = {c.key: c for c in ds.cases}

    def bench(cases) -> tuple[BenchCase, ...]:
        return tuple(BenchCase(c.key, (c.image,), tuple(c.masks), c.fov) for c in cases)

    if official:
        test_cases = prepare_dataset(test_dir, DataOptions2D()).cases
    else:
        test_cases = [by_key[k] for k in split["test"]]
    names = ["background", *ds.scheme.names[1:]]
    channel_names = {"0": "R", "1": "G", "2": "B"} if ds.channels == 3 else {"0": "gray"}
    return BenchDataset(name, ds_id, 2, source, bench(by_key[k] for k in split["train"]),
                        bench(by_key[k] for k in split["val"]), bench(test_cases),
                        {n: i for i, n in enumerate(names)}, channel_names, medseg_split=fractions,
                        scheme=ds.scheme, num_channels=ds.channels)


def check_medseg_split(run: Path, ds: BenchDataset) -> None:
    """Raise when medseg's run trained on other cases than nnU-Net's fold 0 (read from ``RUN/split.json``)."""
    saved = json.loads((Path(run) / "split.json").read_text())

    def keys(entries) -> list[str]:
        return sorted(e["key"] if isinstance(e, dict) else Path(str(e)).name.split(".")[0] for e in entries or [])

    for subset, cases in (("train", ds.train), ("val", ds.val)):
        if keys(saved.get(subset)) != sorted(c.key for c in cases):
            raise RuntimeError(f"{run}/split.json: medseg's {subset} cases differ from nnU-Net's fold 0; "
                               "the comparison would not be on the same cases")
