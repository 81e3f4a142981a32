"""Random patch sampling with foreground oversampling, for 2D and 3D.

A fraction of the patches (``foreground_fraction``) is centred on a voxel of a
randomly chosen foreground class, so that rare classes are seen; the rest are
placed uniformly. Images smaller than the patch are padded (image with 0, which
is the mean after z-scoring; label with background). Arrays may be numpy
memory maps: only the patch is read.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


class PatchSampler:
    """Draws batches ``(B, C, *patch)`` float32 and ``(B, *patch)`` int64 from a list of cases.

    Args:
        images: per case, a channel-first array ``(C, *S)``.
        labels: per case, a label map ``(*S)`` with class ids.
        patch_size: spatial size of a patch.
        num_classes: classes including background.
        foreground_fraction: share of patches centred on foreground.
        max_locations: foreground voxels remembered per case and class.
    """

    def __init__(
        self,
        images: Sequence[np.ndarray],
        labels: Sequence[np.ndarray],
        patch_size: Sequence[int],
        num_classes: int,
        foreground_fraction: float = 0.33,
        max_locations: int = 10000,
        seed: int = 0,
    ):
        if len(images) != len(labels) or not images:
            raise ValueError("need the same, nonzero number of images and labels")
        self.images, self.labels = list(images), list(labels)
        self.patch = tuple(int(p) for p in patch_size)
        self.num_classes = num_classes
        self.fg_fraction = foreground_fraction
        rng = np.random.default_rng(seed)
        # class -> list of (case index, coordinates array (n, dims))
        self.locations: dict[int, list[tuple[int, np.ndarray]]] = {}
        for i, lab in enumerate(self.labels):
            lab = np.asarray(lab)
            for k in range(1, num_classes):
                coords = np.argwhere(lab == k)
                if len(coords):
                    if len(coords) > max_locations:
                        coords = coords[rng.choice(len(coords), max_locations, replace=False)]
                    self.locations.setdefault(k, []).append((i, coords))

    def _corner(self, rng: np.random.Generator, shape: tuple[int, ...], center: np.ndarray | None) -> list[int]:
        corner = []
        for ax, (s, p) in enumerate(zip(shape, self.patch)):
            hi = max(s - p, 0)
            if center is None:
                corner.append(int(rng.integers(0, hi + 1)))
            else:
                c = int(center[ax]) - p // 2 + int(rng.integers(-p // 4, p // 4 + 1))
                corner.append(int(np.clip(c, 0, hi)))
        return corner

    def sample(self, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """One patch: ``(C, *patch)`` float32 and ``(*patch)`` int64."""
        center = None
        if self.locations and rng.random() < self.fg_fraction:
            k = list(self.locations)[int(rng.integers(len(self.locations)))]
            case, coords = self.locations[k][int(rng.integers(len(self.locations[k])))]
            center = coords[int(rng.integers(len(coords)))]
        else:
            case = int(rng.integers(len(self.images)))
        img, lab = self.images[case], self.labels[case]
        shape = tuple(lab.shape)
        corner = self._corner(rng, shape, center)
        sl = tuple(slice(c, c + p) for c, p in zip(corner, self.patch))
        x = np.asarray(img[(slice(None),) + sl], dtype=np.float32)
        y = np.asarray(lab[sl], dtype=np.int64)
        if x.shape[1:] != self.patch:
            pad = [(0, p - s) for s, p in zip(x.shape[1:], self.patch)]
            x = np.pad(x, [(0, 0)] + pad)
            y = np.pad(y, pad)
        return x, y

    def batch(self, batch_size: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        xs, ys = zip(*(self.sample(rng) for _ in range(batch_size)))
        return np.stack(xs), np.stack(ys)
