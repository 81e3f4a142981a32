"""Small 2D datasets written in tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image


def write_disc_dataset(root: Path, n: int = 6, size: int = 48, seed: int = 0) -> Path:
    """``root/images/caseN.png`` with a bright disc, ``root/masks/caseN.png`` 0/255 masks of it."""
    rng = np.random.default_rng(seed)
    (root / "images").mkdir(parents=True, exist_ok=True)
    (root / "masks").mkdir(parents=True, exist_ok=True)
    yy, xx = np.mgrid[:size, :size]
    for i in range(n):
        cy, cx, r = rng.integers(12, size - 12), rng.integers(12, size - 12), rng.integers(5, 10)
        disc = (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r
        img = (40 + 150 * disc + rng.normal(0, 10, disc.shape)).clip(0, 255).astype(np.uint8)
        Image.fromarray(img).save(root / "images" / f"case{i}.png")
        Image.fromarray((disc * 255).astype(np.uint8)).save(root / "masks" / f"case{i}.png")
    return root
