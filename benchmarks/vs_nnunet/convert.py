"""A :class:`~benchmarks.vs_nnunet.datasets.BenchDataset` -> nnU-Net v2's raw format, plus the split files.

Written under ``WORK`` (never into the dataset or the repository)::

    WORK/nnUNet_raw/DatasetXXX_Name/
        dataset.json                 channel_names, labels (name -> value 0..K-1), numTraining, file_ending
        imagesTr/CASE_0000.nii.gz    train + val cases (3D: one file per channel; 2D: CASE_0000.png, RGB in one file)
        labelsTr/CASE.nii.gz         3D: the label files as they are; 2D: PNG of class ids 0..K-1
        imagesTs/CASE_0000.*         the evaluated cases: what both tools predict
        labelsTs/CASE.*              their ground truth, in the same encoding (what `medseg evaluate` reads)
        fovTs/CASE.png               2D: field-of-view masks (0/1), used only at evaluation
    WORK/splits_final.json           nnU-Net's fold 0 = [{"train": [...], "val": [...]}]
    WORK/medseg_split.json           3D: the same lists for `medseg train --split-file`
    WORK/manifest.json               what was converted (cases per subset, labels, the medseg command parts)

3D single-channel NIfTI files are copied byte for byte; other formats and 4D multi-channel files are
read with medseg's readers and written as NIfTI with their geometry. 2D images must be 8-bit (nnU-Net's
``NaturalImage2DIO`` reads PNG); labels are decoded with medseg's label scheme (0/255 -> 0/1).
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from benchmarks.vs_nnunet.datasets import BenchCase, BenchDataset


@dataclass(frozen=True)
class Converted:
    """Paths of one conversion (see the module docstring)."""

    work: Path
    dataset: BenchDataset

    @property
    def raw_root(self) -> Path:
        return self.work / "nnUNet_raw"

    @property
    def raw(self) -> Path:
        return self.raw_root / self.dataset.nnunet_name

    @property
    def images_test(self) -> Path:
        return self.raw / "imagesTs"

    @property
    def labels_test(self) -> Path:
        return self.raw / "labelsTs"

    @property
    def fov_test(self) -> Path | None:
        fov = self.raw / "fovTs"
        return fov if fov.is_dir() else None

    @property
    def splits_final(self) -> Path:
        return self.work / "splits_final.json"

    @property
    def medseg_split(self) -> Path:
        return self.work / "medseg_split.json"

    @property
    def test_inputs(self) -> list[Path]:
        """The evaluated images, one (first-channel) file per case: the inputs of both tools' predictions."""
        return sorted(self.images_test.glob(f"*_0000{self.dataset.file_ending}"))


def _json(path: Path, obj) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(obj, indent=1) + "\n")
    tmp.replace(path)


# --------------------------------------------------------------------------- 3D


def _is_plain_nifti(path: Path) -> bool:
    return path.is_file() and path.name.endswith(".nii.gz")


def _write_volume_case(case: BenchCase, ds: BenchDataset, images: Path, labels: Path) -> set[int]:
    """Write one 3D case; return the label values found in it."""
    from medseg.io import read_image, write_image

    single = ds.num_channels == len(case.images) and all(_is_plain_nifti(p) for p in case.images)
    if single:
        for c, p in enumerate(case.images):
            shutil.copyfile(p, images / f"{case.key}_{c:04d}.nii.gz")
    else:
        from medseg.data.volume_case import VolumeCase, load_case

        img, _ = load_case(VolumeCase(case.key, case.images, None, None, ds.num_channels))
        for c in range(img.array.shape[0]):
            write_image(images / f"{case.key}_{c:04d}.nii.gz", img.array[c:c + 1], img.geometry)
    label = case.labels[0]
    lab = read_image(label)
    if _is_plain_nifti(label):
        shutil.copyfile(label, labels / f"{case.key}.nii.gz")
    else:
        write_image(labels / f"{case.key}.nii.gz", lab.array.astype(np.uint8), lab.geometry)
    return {int(v) for v in np.unique(lab.array)}


# --------------------------------------------------------------------------- 2D


def _png(path: Path, array: np.ndarray) -> None:
    """``array`` (C, H, W) or (H, W) uint8 -> PNG (RGB for 3 channels, else gray)."""
    from PIL import Image

    a = array if array.ndim == 2 else (array[0] if array.shape[0] == 1 else np.moveaxis(array, 0, -1))
    Image.fromarray(np.ascontiguousarray(a)).save(path)


def _write_image_case(case: BenchCase, ds: BenchDataset, images: Path, labels: Path, fov: Path | None) -> set[int]:
    from medseg.data.dataset2d import read_fov
    from medseg.data.mask_reading import read_mask
    from medseg.io import read_image

    img = read_image(case.images[0])
    arr = np.asarray(img.array)[: ds.num_channels]
    if arr.dtype != np.uint8:
        if np.issubdtype(arr.dtype, np.integer) and arr.min() >= 0 and arr.max() <= 255:
            arr = arr.astype(np.uint8)
        else:
            raise ValueError(f"{case.images[0]}: {arr.dtype} image; the nnU-Net conversion handles 8-bit 2D images only")
    if arr.shape[0] != ds.num_channels:  # a gray image in a colour dataset
        arr = np.repeat(arr[:1], ds.num_channels, axis=0)
    _png(images / f"{case.key}_0000.png", arr)
    mask = read_mask(list(case.labels), ds.scheme)
    _png(labels / f"{case.key}.png", mask.astype(np.uint8))
    if fov is not None and case.fov is not None:
        _png(fov / f"{case.key}.png", read_fov(case.fov, mask.shape).astype(np.uint8))
    return {int(v) for v in np.unique(mask)}


# --------------------------------------------------------------------------- both


def convert(ds: BenchDataset, work: str | Path) -> Converted:
    """Write nnU-Net's raw dataset, the split files and the manifest under ``work`` (replacing old ones)."""
    out = Converted(Path(work), ds)
    if out.raw.exists():
        shutil.rmtree(out.raw)
    folders = {n: out.raw / n for n in ("imagesTr", "labelsTr", "imagesTs", "labelsTs")}
    for f in folders.values():
        f.mkdir(parents=True)
    fov = None
    if ds.dim == 2 and any(c.fov is not None for c in ds.test):
        fov = out.raw / "fovTs"
        fov.mkdir()

    def write(case: BenchCase, images: Path, labels: Path) -> set[int]:
        if ds.dim == 3:
            return _write_volume_case(case, ds, images, labels)
        return _write_image_case(case, ds, images, labels, fov if images == folders["imagesTs"] else None)

    found: set[int] = set()
    for case in ds.train + ds.val:
        found |= write(case, folders["imagesTr"], folders["labelsTr"])
    for case in ds.test:
        found |= write(case, folders["imagesTs"], folders["labelsTs"])

    labels = dict(ds.labels) or {("background" if v == 0 else f"label_{v}"): v for v in sorted(found | {0})}
    values = sorted(labels.values())
    if values != list(range(len(values))) or not found <= set(values):
        raise ValueError(f"{ds.source}: label values {sorted(found)} (declared {labels}); nnU-Net needs the "
                         "consecutive values 0..K-1 with background 0 - remap the labels first")
    _json(out.raw / "dataset.json", {
        "name": ds.nnunet_name, "description": f"converted from {ds.source} by benchmarks/vs_nnunet",
        "channel_names": ds.channel_names, "labels": labels,
        "numTraining": len(ds.train) + len(ds.val), "file_ending": ds.file_ending,
    })
    train, val, test = ([c.key for c in cases] for cases in (ds.train, ds.val, ds.test))
    _json(out.splits_final, [{"train": train, "val": val}])
    if ds.dim == 3:
        _json(out.medseg_split, {"train": train, "val": val})
    _json(out.work / "manifest.json", {
        "dataset": ds.nnunet_name, "dim": ds.dim, "source": str(ds.source), "labels": labels,
        "train": train, "val": val, "test": test, "medseg_train_args": medseg_train_args(out),
    })
    return out


def medseg_train_args(conv: Converted) -> list[str]:
    """``medseg train`` arguments that select the same cases: the data folder and the split."""
    ds = conv.dataset
    split = ["--split-file", str(conv.medseg_split)] if ds.dim == 3 else ["--split", str(ds.medseg_split)]
    return [str(ds.source), *split]
