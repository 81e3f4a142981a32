"""Post-processing of predicted label maps, per class, as ``RUN/postprocessing.json`` decides it
(:mod:`medseg.evaluation.postprocess_fit` makes the decision on out-of-fold predictions).

Per class, each step is applied when its ``apply`` is true (the file is meant to be read and edited):

- ``min_size``: connected components of the class smaller than ``voxels`` become background;
- ``largest_component``: only the class's largest connected component is kept, the rest becomes background;
- ``fill_holes``: background enclosed by the class becomes the class.

Each step changes only its class's voxels and background, so no other class is touched. Components are
face-connected (6-neighbourhood in 3D, 4 in 2D). Probabilities are left as they are.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy import ndimage

POSTPROCESSING_FILE = "postprocessing.json"
STEPS = ("min_size", "largest_component", "fill_holes")


def remove_small(mask: np.ndarray, voxels: int) -> np.ndarray:
    labelled, n = ndimage.label(mask)
    if n == 0:
        return mask
    sizes = np.bincount(labelled.ravel())
    keep = sizes >= voxels
    keep[0] = False
    return keep[labelled]


def largest_component(mask: np.ndarray) -> np.ndarray:
    labelled, n = ndimage.label(mask)
    if n <= 1:
        return mask
    sizes = np.bincount(labelled.ravel())
    sizes[0] = 0
    return labelled == int(sizes.argmax())


def apply_step(labels: np.ndarray, c: int, step: str, voxels: int = 0) -> np.ndarray:
    """``labels`` (class ids) with one step applied to class ``c`` (a new array)."""
    out = labels.copy()
    mask = labels == c
    if step == "min_size":
        out[mask & ~remove_small(mask, voxels)] = 0
    elif step == "largest_component":
        out[mask & ~largest_component(mask)] = 0
    elif step == "fill_holes":
        out[ndimage.binary_fill_holes(mask) & (labels == 0)] = c
    else:
        raise ValueError(f"unknown post-processing step {step!r}")
    return out


@dataclass
class PostProcessing:
    """The steps to apply: ``[(class id, step, voxels)]`` in the order of :data:`STEPS` per class."""

    steps: list[tuple[int, str, int]]

    @classmethod
    def from_json(cls, d: dict, path=None) -> "PostProcessing":
        from medseg.errors import ConfigError

        steps = []
        try:
            for name, entry in (d.get("classes") or {}).items():
                c = int(entry["class_id"])
                for step in STEPS:
                    s = entry.get(step) or {}
                    if s.get("apply"):
                        voxels = int(s.get("voxels", 0))
                        if step == "min_size" and voxels < 1:
                            raise ValueError(f"{name}: min_size needs 'voxels' of 1 or more")
                        steps.append((c, step, voxels))
        except (KeyError, TypeError, ValueError, AttributeError) as e:
            raise ConfigError(f"the post-processing file cannot be read: {e}", path=path,
                              hint="each class needs 'class_id' and per step 'apply' (min_size also 'voxels')") from None
        return cls(steps)

    @classmethod
    def of_run(cls, run_dir: str | Path) -> "PostProcessing | None":
        from medseg.io.json_file import read_json_object

        path = Path(run_dir) / POSTPROCESSING_FILE
        return cls.from_json(read_json_object(path), path) if path.is_file() else None

    def __call__(self, labels: np.ndarray) -> np.ndarray:
        for c, step, voxels in self.steps:
            labels = apply_step(labels, c, step, voxels)
        return labels

    def describe(self) -> str:
        return ", ".join(f"class {c}: {step}" + (f" < {v}" if step == "min_size" else "") for c, step, v in self.steps) or "none"
