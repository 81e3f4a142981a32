"""Synthetic 2D datasets that reproduce the layouts and objects on which unseen real data failed cold.

Each is written by a seeded generator, so the zoo and the tests see the same files:

- :func:`patient_folders`: MRI-like slices in per-patient folders, ``DATA/<patient>/<patient>_<n>.tif``
  beside ``<patient>_<n>_mask.tif``, 3-channel TIF, a lesion that grows and shrinks across a
  patient's slices (absent from some);
- :func:`rater_tagged`: retina-like images with thin vessels, ``images/<id>.jpg`` and
  ``masks/<id>_1stObs.png`` (a rater tag after the image's name);
- :func:`speckle_blobs`: ultrasound-like, a flat folder of ``name.png``, ``name_mask.png`` and
  sometimes ``name_mask_1.png``, about 500x560 px, RGB-encoded gray, one large low-contrast
  lesion (5-30 % of the image) in multiplicative speckle.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image
from scipy import ndimage


def _save(path: Path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)


def _blob(shape: tuple[int, int], center, radius: float, rng: np.random.Generator, wobble: float = 0.25) -> np.ndarray:
    """A filled, irregular blob: a disk whose radius varies smoothly with the angle."""
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    dy, dx = yy - center[0], xx - center[1]
    angle = np.arctan2(dy, dx)
    r = radius * (1 + sum(wobble / k * np.sin(k * angle + rng.uniform(0, 2 * np.pi)) for k in (2, 3, 5)))
    return np.hypot(dy, dx) <= r


def patient_folders(root: Path, patients: int = 24, slices: int = 12, size: int = 128, seed: int = 0) -> Path:
    """Per-patient folders of slices (see the module docs); returns ``root``."""
    rng = np.random.default_rng(seed)
    for p in range(patients):
        pid = f"TCGA_{'CS HT DU FG'.split()[p % 4]}_{5000 + 37 * p}_{19950101 + 113 * p}"
        center = rng.uniform(0.35, 0.65, 2) * size
        peak = rng.uniform(0.08, 0.18) * size
        brain = _blob((size, size), (size / 2, size / 2), 0.42 * size, rng, 0.08)
        for n in range(1, slices + 1):
            t = (n - 0.5) / slices
            radius = peak * max(0.0, 1 - ((t - 0.5) / 0.4) ** 2)
            lesion = _blob((size, size), center, radius, rng) if radius > 2 else np.zeros((size, size), bool)
            base = ndimage.gaussian_filter(rng.normal(0, 1, (size, size)), 3) * 12 + 90
            channels = []
            for c in range(3):
                img = np.where(brain, base + 20 * c, 8.0) + rng.normal(0, 6, (size, size))
                img = img + lesion * (35 - 10 * c)
                channels.append(np.clip(img, 0, 255))
            _save(root / pid / f"{pid}_{n}.tif", np.stack(channels, -1).astype(np.uint8))
            _save(root / pid / f"{pid}_{n}_mask.tif", (lesion * 255).astype(np.uint8))
    (root / "data.csv").write_text("patient,grade\n" + "".join(f"p{p},2\n" for p in range(patients)))
    return root


def rater_tagged(root: Path, images: int = 20, size: int = 256, seed: int = 1) -> Path:
    """Vessel-like images with masks named ``<id>_1stObs.png`` in a separate folder; returns ``root``."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    for i in range(images):
        vessels = np.zeros((size, size), bool)
        for _ in range(9):
            a, b, c = rng.uniform(-0.006, 0.006), rng.uniform(-1.5, 1.5), rng.uniform(0, size)
            width = rng.uniform(0.8, 2.5)
            x0 = (yy - size / 2)
            vessels |= np.abs(xx - (a * x0**2 + b * x0 + c)) < width
        fov = np.hypot(yy - size / 2, xx - size / 2) < 0.47 * size
        vessels &= fov
        bg = ndimage.gaussian_filter(rng.normal(0, 1, (size, size)), 8) * 18 + 120
        red = np.where(fov, bg + 60, 5) - vessels * 45 + rng.normal(0, 5, (size, size))
        green = np.where(fov, bg * 0.6, 3) - vessels * 35 + rng.normal(0, 5, (size, size))
        blue = np.where(fov, bg * 0.3, 2) - vessels * 10 + rng.normal(0, 4, (size, size))
        rgb = np.clip(np.stack([red, green, blue], -1), 0, 255).astype(np.uint8)
        key = f"{i // 2 + 1:02d}{'LR'[i % 2]}"
        path = root / "images" / f"{key}.jpg"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rgb).save(path, quality=92)
        _save(root / "masks" / f"{key}_1stObs.png", (vessels * 255).astype(np.uint8))
    return root


def speckle_blobs(root: Path, images: int = 150, seed: int = 2) -> Path:
    """Ultrasound-like lesions in speckle, in one flat folder (see the module docs); returns ``root``."""
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    for i in range(images):
        h, w = int(rng.integers(440, 560)), int(rng.integers(500, 620))
        area = rng.uniform(0.05, 0.3) * h * w
        radius = np.sqrt(area / np.pi)
        center = (rng.uniform(radius, h - radius) if h > 2 * radius else h / 2,
                  rng.uniform(radius, w - radius) if w > 2 * radius else w / 2)
        lesion = _blob((h, w), center, radius, rng, 0.3)
        depth = np.linspace(1.0, 0.6, h)[:, None]  # attenuation with depth
        tissue = ndimage.gaussian_filter(rng.normal(0, 1, (h, w)), 6) * 0.15 + 1.0
        echo = tissue * depth * np.where(lesion, 0.55, 1.0)  # hypoechoic lesion: darker, low contrast
        speckle = rng.rayleigh(1.0, (h, w))
        gray = np.clip(110 * echo * ndimage.gaussian_filter(speckle, 1.2), 0, 255).astype(np.uint8)
        name = f"{'benign malignant'.split()[i % 2]} ({i // 2 + 1})"
        _save(root / f"{name}.png", np.stack([gray] * 3, -1))
        if i % 7 == 3:  # the lesion drawn in two parts, as two mask files
            cut = np.zeros_like(lesion)
            cut[:, : int(center[1])] = True
            _save(root / f"{name}_mask.png", ((lesion & cut) * 255).astype(np.uint8))
            _save(root / f"{name}_mask_1.png", ((lesion & ~cut) * 255).astype(np.uint8))
        else:
            _save(root / f"{name}_mask.png", (lesion * 255).astype(np.uint8))
    return root
