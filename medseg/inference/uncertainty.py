"""Voxel-wise and per-case uncertainty from the test-time-augmentation (mirroring) ensemble.

The ensemble members are the network's outputs on the mirrored copies of the
input (``2**D`` of them, see :func:`medseg.inference.sliding_window.predict_probabilities`).
Only their running sum is kept, never the members themselves, so memory does not
grow with the ensemble: the mean probabilities ``p̄ (K, *S)`` are all that is needed.

- **Voxel-wise uncertainty**: the predictive entropy of the mean,
  ``H = -sum_k p̄_k log p̄_k / log K``, normalised to 0 (one class certain) .. 1
  (uniform over the ``K`` classes). It captures both the network's own softness and
  the members' disagreement.
- **Per-case score** (:func:`case_uncertainty`): the mean of ``H`` over the
  *predicted foreground and its one-voxel outer ring* (the foreground dilated once,
  face-connected). Averaging over the whole image would mostly measure how much
  easy background the scan holds (a larger field of view would look more
  certain); the structure and its boundary are where segmentation errors are.
  When nothing is predicted the score falls back to the whole-image mean (and
  ``region_voxels`` is 0).

Files written by ``medseg predict --uncertainty`` (:func:`entropy_png`, :func:`write_uncertainty_csv`):
3D ``<case>_entropy<ending>`` float32 on the input's grid; 2D ``<name>_entropy.png``
(8-bit, ``round(255 H)``, for viewing) and ``<name>_entropy.npy`` (float32, exact);
``uncertainty.csv`` with one row per case.
"""

from __future__ import annotations

import csv
import io
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy import ndimage

from medseg.io.atomic import atomic_path, write_text

UNCERTAINTY_CSV = "uncertainty.csv"


def normalized_entropy(probs: np.ndarray) -> np.ndarray:
    """``-sum_k p_k log p_k / log K`` of ``probs (K, *S)`` → float32 ``(*S)`` in [0, 1] (``0 log 0 = 0``).

    One class at a time, so the temporaries stay the size of one channel.
    """
    probs = np.asarray(probs)
    k = probs.shape[0]
    if k < 2:
        raise ValueError(f"entropy needs at least 2 classes, got probabilities of shape {probs.shape}")
    h = np.zeros(probs.shape[1:], np.float32)
    for c in range(k):
        p = probs[c].astype(np.float32, copy=False)
        h -= p * np.log(np.maximum(p, np.float32(1e-12)))
    h /= np.float32(math.log(k))
    return np.clip(h, 0.0, 1.0, out=h)


def uncertainty_region(foreground: np.ndarray) -> np.ndarray:
    """The predicted foreground (bool ``(*S)``) and its one-voxel, face-connected outer ring."""
    foreground = np.asarray(foreground, dtype=bool)
    return ndimage.binary_dilation(foreground, ndimage.generate_binary_structure(foreground.ndim, 1))


@dataclass(frozen=True)
class CaseUncertainty:
    """Per-case uncertainty: ``score`` (see the module doc), the whole-image mean entropy, the region size."""

    score: float
    mean_entropy: float
    region_voxels: int

    def row(self) -> dict:
        return {"uncertainty": self.score, "mean_entropy": self.mean_entropy, "region_voxels": self.region_voxels}


def case_uncertainty(entropy: np.ndarray, foreground: np.ndarray) -> CaseUncertainty:
    """The per-case score of an entropy map ``(*S)`` given the predicted foreground ``(*S)`` (bool)."""
    region = uncertainty_region(foreground)
    whole = float(entropy.mean(dtype=np.float64))
    n = int(region.sum())
    score = float(entropy[region].mean(dtype=np.float64)) if n else whole
    return CaseUncertainty(score, whole, n)


def entropy_png(entropy: np.ndarray) -> np.ndarray:
    """An entropy map in [0, 1] as 8-bit gray levels ``round(255 H)``."""
    return np.rint(np.clip(entropy, 0.0, 1.0) * 255).astype(np.uint8)


def save_npy(path: str | Path, array: np.ndarray) -> None:
    """``np.save`` written atomically."""
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        np.save(f, array)


def write_uncertainty_csv(path: str | Path, rows: list[dict]) -> None:
    """``uncertainty.csv``: one row per case (``case``, ``uncertainty``, ``mean_entropy``, ``region_voxels``, ``entropy_map``)."""
    buf = io.StringIO()
    fields = ["case", "uncertainty", "mean_entropy", "region_voxels", "entropy_map"]
    w = csv.DictWriter(buf, fieldnames=fields, extrasaction="ignore")
    w.writeheader()
    for r in rows:
        w.writerow({k: (f"{v:.6f}" if isinstance(v, float) else v) for k, v in r.items()})
    write_text(path, buf.getvalue())
