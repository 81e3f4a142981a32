"""The zoo's datasets: where each one's files are, how it is split, and what it is compared against.

Real sets are read in place from ``../shared/datasets``; what a protocol needs beside them (a split
file, 2D slices of the 3D Hippocampus volumes, the synthetic sets) is written under the zoo's cache
folder, never into the shared data.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from benchmarks.zoo import synthetic

ROOT = Path(__file__).resolve().parents[2]
SHARED = ROOT.parent / "shared" / "datasets"


@dataclass
class Prepared:
    data: Path                      #: the folder `medseg train` is given
    flags: list[str]                #: protocol flags (a split), never tuning flags
    test: Path | None = None        #: a labelled folder to evaluate on, else the run's test split
    protocol: str = ""


@dataclass
class ZooDataset:
    name: str
    budget: str
    reference: str
    target: float | None
    prepare: Callable[[Path], Prepared]
    kind: str = "real"
    notes: list[str] = field(default_factory=list)


def _split_file(cache: Path, name: str, train: list[str], test: list[str]) -> Path:
    path = cache / f"{name}_split.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"train": train, "test": test}, indent=1))
    return path


def _drive(cache: Path) -> Prepared:
    d = SHARED / "drive"
    return Prepared(d / "training", ["--split", "85/15/0"], d / "testing",
                    "17/3 of the 20 training images (as every DRIVE figure here), the 20 official test images inside their FOV")


def _kvasir(cache: Path) -> Prepared:
    d = SHARED / "kvasir_seg"
    train = (d / "train.txt").read_text().split()
    test = (d / "test.txt").read_text().split()
    return Prepared(d, ["--split-file", str(_split_file(cache, "kvasir", train, test))], None,
                    f"its authors' split: {len(train)} training ids (validation drawn from them), {len(test)} test ids")


#: MoNuSeg tiles held out, whole tissue-source sites from four organs (breast A7, kidney HE, liver 21, prostate CH)
MONUSEG_TEST_SITES = ("TCGA-A7", "TCGA-HE", "TCGA-21", "TCGA-CH")


def _monuseg(cache: Path) -> Prepared:
    d = SHARED / "monuseg"
    ids = sorted(p.stem for p in (d / "Tissue_Images").glob("*.tif"))
    test = [i for i in ids if i.startswith(MONUSEG_TEST_SITES)]
    train = [i for i in ids if i not in test]
    return Prepared(d, ["--split-file", str(_split_file(cache, "monuseg", train, test))], None,
                    f"{len(train)} tiles for training (validation drawn from them), {len(test)} held out: whole tissue-source "
                    f"sites {', '.join(MONUSEG_TEST_SITES)} (breast, kidney, liver, prostate)")


def _hippocampus(cache: Path) -> Prepared:
    d = SHARED / "hippocampus"
    return Prepared(d, ["--split-file", str(d / "split_160_40.json")], None,
                    "the shared 160/40 split; evaluated on the 40, which also chose the checkpoint (the split has no test list, "
                    "as in every Hippocampus figure here), so it reads higher than a held-out test would")


def _hippocampus_slices(cache: Path) -> Prepared:
    """Axial slices holding foreground, as 8-bit PNGs (each volume scaled by its 0.5-99.5 percentiles), flat."""
    import SimpleITK as sitk
    from PIL import Image

    d = SHARED / "hippocampus"
    split = json.loads((d / "split_160_40.json").read_text())
    out = cache / "hippocampus_slices"
    done = out / ".complete"
    names: dict[str, list[str]] = {"train": [], "test": []}
    for subset, cases in (("train", split["train"]), ("test", split["val"])):
        for case in cases:
            case = Path(case).name.replace(".nii.gz", "")
            img = sitk.GetArrayFromImage(sitk.ReadImage(str(d / "imagesTr" / f"{case}.nii.gz"))).astype(np.float32)
            lab = sitk.GetArrayFromImage(sitk.ReadImage(str(d / "labelsTr" / f"{case}.nii.gz"))).astype(np.uint8)
            lo, hi = np.percentile(img, [0.5, 99.5])
            img8 = (np.clip((img - lo) / max(hi - lo, 1e-6), 0, 1) * 255).astype(np.uint8)
            for z in range(img.shape[0]):
                if not lab[z].any():
                    continue
                name = f"{case}_slice{z:02d}"
                names[subset].append(name)
                if not done.exists():
                    out.mkdir(parents=True, exist_ok=True)
                    Image.fromarray(img8[z]).save(out / f"{name}.png")
                    Image.fromarray(lab[z]).save(out / f"{name}_mask.png")
    done.touch()
    return Prepared(out, ["--split-file", str(_split_file(cache, "hippocampus_slices", names["train"], names["test"]))], None,
                    f"the slices holding hippocampus of the 160/40 split's volumes: {len(names['train'])} for training "
                    f"(validation drawn by patient), {len(names['test'])} of the 40 held-out patients")


def _synthetic(make: Callable[[Path], Path], name: str) -> Callable[[Path], Prepared]:
    def prepare(cache: Path) -> Prepared:
        root = cache / name
        if not (root / ".complete").exists():
            make(root)
            (root / ".complete").touch()
        return Prepared(root, [], None, "medseg's default split (60/20/20, by patient where it finds patients); its test part")
    return prepare


DATASETS = {
    "drive": ZooDataset("drive", "15m", "U-Net F1 0.81-0.82; best methods about 0.83", 0.82, _drive),
    "hippocampus": ZooDataset("hippocampus", "30m", "nnU-Net about 0.90/0.89 (MSD test set)", 0.88, _hippocampus),
    "hippocampus_slices": ZooDataset("hippocampus_slices", "15m", "(no published 2D reference)", None, _hippocampus_slices),
    "kvasir_seg": ZooDataset("kvasir_seg", "15m", "U-Net about 0.82 (PraNet, MICCAI 2020)", 0.82, _kvasir),
    "monuseg": ZooDataset("monuseg", "15m", "U-Net F1 about 0.76 (Medical Transformer, MICCAI 2021)", 0.76, _monuseg),
    "synthetic_patient_folders": ZooDataset("synthetic_patient_folders", "5m", "(synthetic)", None,
                                            _synthetic(synthetic.patient_folders, "patient_folders"), "synthetic"),
    "synthetic_rater_tagged": ZooDataset("synthetic_rater_tagged", "5m", "(synthetic)", None,
                                         _synthetic(synthetic.rater_tagged, "rater_tagged"), "synthetic"),
    "synthetic_speckle_blobs": ZooDataset("synthetic_speckle_blobs", "5m", "(synthetic)", None,
                                          _synthetic(synthetic.speckle_blobs, "speckle_blobs"), "synthetic"),
}
