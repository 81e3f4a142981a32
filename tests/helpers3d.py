"""Small synthetic 3D datasets written in tests: oblique, anisotropic, off-origin volumes."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from medseg.io import Geometry, write_image

SPACING = (1.2, 1.0, 2.5)
ORIGIN = (-12.5, 40.25, 7.75)
SHAPE = (24, 28, 20)


def oblique_direction(deg_z: float = 25.0, deg_x: float = 10.0) -> tuple[float, ...]:
    """A rotation (about z, then x) as ITK's row-major direction, columns = axis directions."""
    a, b = np.radians(deg_z), np.radians(deg_x)
    rz = np.array([[np.cos(a), -np.sin(a), 0], [np.sin(a), np.cos(a), 0], [0, 0, 1]])
    rx = np.array([[1, 0, 0], [0, np.cos(b), -np.sin(b)], [0, np.sin(b), np.cos(b)]])
    return tuple(float(v) for v in (rz @ rx).ravel())


GEOMETRY = Geometry(SPACING, ORIGIN, oblique_direction())


def blob_case(rng: np.random.Generator, shape=SHAPE, spacing=SPACING) -> tuple[np.ndarray, np.ndarray]:
    """An image ``(x, y, z)`` float32 with a bright (class 1) and a dark (class 2) ellipsoid, and its label.

    A 2-voxel zero border on the low side of each axis exercises cropping to the non-zero box.
    """
    grids = np.meshgrid(*[(np.arange(s) + 0.5) * sp for s, sp in zip(shape, spacing)], indexing="ij")
    extent = [s * sp for s, sp in zip(shape, spacing)]
    label = np.zeros(shape, np.uint8)
    for cls, lo, hi in ((1, 0.25, 0.4), (2, 0.6, 0.75)):
        centre = [e * rng.uniform(lo, hi) if i == 0 else e * rng.uniform(0.4, 0.6) for i, e in enumerate(extent)]
        radius = rng.uniform(4.0, 6.0)
        d = sum(((g - c) / radius) ** 2 for g, c in zip(grids, centre))
        label[d < 1] = cls
    image = rng.normal(60, 8, shape).astype(np.float32)
    image[label == 1] += 120
    image[label == 2] += 50
    image[:2], image[:, :2], image[:, :, :2] = 0, 0, 0
    label[:2], label[:, :2], label[:, :, :2] = 0, 0, 0
    return image, label


def write_msd_dataset(root: Path, n: int = 6, seed: int = 0, geometry: Geometry = GEOMETRY) -> Path:
    """A Decathlon-style dataset: ``dataset.json``, ``imagesTr/case_XXX.nii.gz``, ``labelsTr/...``."""
    rng = np.random.default_rng(seed)
    training = []
    for i in range(n):
        image, label = blob_case(rng)
        name = f"case_{i:03d}.nii.gz"
        write_image(root / "imagesTr" / name, image[None], geometry)
        write_image(root / "labelsTr" / name, label[None], geometry)
        training.append({"image": f"./imagesTr/{name}", "label": f"./labelsTr/{name}"})
    meta = {"name": "Blobs", "modality": {"0": "MRI"}, "labels": {"0": "background", "1": "bright", "2": "dark"},
            "numTraining": n, "training": training}
    (root / "dataset.json").write_text(json.dumps(meta, indent=1))
    return root


def regrid(src: Path, dst: Path, spacing=(1.0, 1.1, 2.0), pad: int = 3) -> Path:
    """Resample a volume onto another grid: new spacing, the same direction, and a ``pad``-voxel
    zero border around the same physical extent (so a new size and origin)."""
    img = sitk.ReadImage(str(src))
    d = np.asarray(img.GetDirection()).reshape(3, 3)
    extent = np.asarray(img.GetSize()) * np.asarray(img.GetSpacing())
    size = [int(np.ceil(e / s)) + 2 * pad for e, s in zip(extent, spacing)]
    origin = np.asarray(img.GetOrigin()) - d @ (np.asarray(spacing) * pad)
    out = sitk.Resample(img, size, sitk.Transform(), sitk.sitkLinear, origin.tolist(), list(spacing),
                        img.GetDirection(), 0.0, img.GetPixelID())
    dst.parent.mkdir(parents=True, exist_ok=True)
    sitk.WriteImage(out, str(dst))
    return dst
