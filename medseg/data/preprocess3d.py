"""3D preprocessing as pure functions on numpy arrays (after nnU-Net).

Arrays are channel-first ``(C, *spatial)``; label maps ``(1, *spatial)``. Where
a function also accepts an array without the channel axis, it says so.

- :func:`crop_to_nonzero` / :func:`uncrop`: crop to the bounding box of voxels
  that are non-zero in any channel, and put a cropped array back.
- :func:`normalize`: ``"zscore"`` (per case, per channel), ``"ct"`` (clip to the
  dataset's 0.5/99.5 foreground percentiles, then dataset mean/std),
  ``"minmax"`` (0..1 per case, per channel), ``"none"``. Always float32.
- :func:`~medseg.data.resample.resample` / :func:`~medseg.data.resample.resample_to_shape` (in
  :mod:`medseg.data.resample`): images with cubic splines, labels
  by per-class linear interpolation of the one-hot encoding (or nearest);
  anisotropic data (max/min spacing > 3) is resampled in-plane with that order
  and along the low-resolution axis with nearest neighbour, as nnU-Net does.
- :class:`Preprocess3D`: the three steps above as one saved configuration, applied
  alike at training and at prediction; :meth:`Preprocess3D.restore` maps network
  output back onto the input's own grid.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from medseg.data.resample import resample, resample_to_shape
from medseg.errors import ConfigError

logger = logging.getLogger(__name__)

NORMALIZATION_SCHEMES = ("zscore", "ct", "minmax", "none")

BBox = list[tuple[int, int]]


# --------------------------------------------------------------------------- cropping


def nonzero_mask(image: np.ndarray, fill_holes: bool = True) -> np.ndarray:
    """Boolean spatial mask of voxels non-zero in any channel of ``image`` ``(C, *spatial)``.

    Holes are filled (as nnU-Net does), so dark structures inside the body stay in
    the mask that z-score normalization uses.
    """
    mask = np.any(image != 0, axis=0)
    if fill_holes and mask.any():
        mask = ndimage.binary_fill_holes(mask)
    return mask


def bbox_of(mask: np.ndarray) -> BBox:
    """``[(start, stop), ...]`` per axis of the True voxels (the full extent when none)."""
    bbox = []
    for axis in range(mask.ndim):
        other = tuple(a for a in range(mask.ndim) if a != axis)
        hit = np.flatnonzero(np.any(mask, axis=other)) if other else np.flatnonzero(mask)
        if hit.size == 0:
            return [(0, s) for s in mask.shape]
        bbox.append((int(hit[0]), int(hit[-1]) + 1))
    return bbox


def _crop(array: np.ndarray, bbox: BBox) -> np.ndarray:
    lead = (slice(None),) * (array.ndim - len(bbox))
    return array[lead + tuple(slice(a, b) for a, b in bbox)]


def crop_to_nonzero(
    image: np.ndarray, label: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray | None, BBox]:
    """Crop ``image`` ``(C, *spatial)`` (and ``label``, same spatial shape) to the non-zero box.

    Returns ``(image, label, bbox)`` with ``bbox = [(start, stop), ...]`` per spatial
    axis; an all-zero image is not cropped. The crops are copies.
    """
    mask = np.any(image != 0, axis=0)
    bbox = bbox_of(mask)
    cropped = np.ascontiguousarray(_crop(image, bbox))
    lab = None if label is None else np.ascontiguousarray(_crop(label, bbox))
    return cropped, lab, bbox


def uncrop(array: np.ndarray, bbox: BBox, full_shape: Sequence[int], fill: float = 0) -> np.ndarray:
    """Place a cropped ``array`` back into an array of spatial shape ``full_shape``.

    Leading (channel) axes of ``array`` are kept; ``full_shape`` may be the spatial
    shape or the full shape (only its last ``len(bbox)`` entries are used).
    """
    n = len(bbox)
    spatial = tuple(int(s) for s in tuple(full_shape)[-n:])
    expected = tuple(b - a for a, b in bbox)
    if tuple(array.shape[-n:]) != expected:
        raise ValueError(f"array spatial shape {array.shape[-n:]} does not match the bbox size {expected}")
    out = np.full(array.shape[:-n] + spatial, fill, dtype=array.dtype)
    out[(slice(None),) * (array.ndim - n) + tuple(slice(a, b) for a, b in bbox)] = array
    return out


# --------------------------------------------------------------------------- normalization


def intensity_stats(values: np.ndarray) -> dict:
    """Statistics of (foreground) intensities for ``"ct"`` normalization.

    ``values`` is a 1D sample of voxel values (e.g. label > 0 voxels of the
    training cases, one channel). Returns mean, std, median, min, max, p005, p995.
    """
    v = np.asarray(values, dtype=np.float64).ravel()
    v = v[np.isfinite(v)]
    if v.size == 0:
        raise ValueError("no finite values to compute intensity statistics from")
    p005, median, p995 = np.percentile(v, [0.5, 50.0, 99.5])
    return {
        "mean": float(v.mean()),
        "std": float(v.std()),
        "median": float(median),
        "min": float(v.min()),
        "max": float(v.max()),
        "p005": float(p005),
        "p995": float(p995),
    }


def _per_channel(value, n: int, what: str) -> list:
    if isinstance(value, (str, dict)) or value is None:
        return [value] * n
    value = list(value)
    if len(value) != n:
        raise ConfigError(f"{what}: {len(value)} entries given for {n} channel(s)")
    return value


def _affine(x: np.ndarray, shift: float, scale: float) -> np.ndarray:
    """``(x - shift) / scale`` in float32 (float64 inputs are computed in float64)."""
    if x.dtype == np.float64:
        return (x - shift) / scale
    return (x.astype(np.float32) - np.float32(shift)) / np.float32(scale)


def normalize(image: np.ndarray, scheme, stats=None, *, mask: np.ndarray | None = None) -> np.ndarray:
    """Intensity normalization of ``image`` ``(C, *spatial)``, returned as a new float32 array.

    ``scheme`` is one of :data:`NORMALIZATION_SCHEMES` or a list with one per channel:

    - ``"zscore"``: ``(x - mean) / std`` per case and channel. With ``mask`` (a
      boolean spatial array, normally :func:`nonzero_mask` of the uncropped-to-
      cropped image), mean and std are taken over the mask only and voxels
      outside it are set to 0. nnU-Net does this when cropping to the non-zero
      region shrank the images notably (brain MRI with a zero background); without
      ``mask`` all voxels count.
    - ``"ct"``: clip to ``stats["p005"]``..``stats["p995"]``, then
      ``(x - stats["mean"]) / stats["std"]`` with dataset-wide foreground stats
      (see :func:`intensity_stats`); ``stats`` is one dict or one per channel.
    - ``"minmax"``: ``(x - min) / (max - min)`` per case and channel (0 if constant).
    - ``"none"``: only the cast to float32.

    Statistics are computed in float64, so uint8 and float32 inputs with values
    up to ~1e6 and beyond are handled alike.
    """
    image = np.asarray(image)
    if image.ndim < 2:
        raise ValueError(f"expected a channel-first array (C, *spatial), got shape {image.shape}")
    n = image.shape[0]
    schemes = _per_channel(scheme, n, "normalization scheme")
    stats_list = _per_channel(stats, n, "normalization stats")
    if mask is not None:
        mask = np.asarray(mask, dtype=bool)
        if mask.shape != image.shape[1:]:
            raise ValueError(f"mask shape {mask.shape} does not match image spatial shape {image.shape[1:]}")
        if not mask.any():
            mask = None
    out = np.empty(image.shape, dtype=np.float32)
    for c in range(n):
        s = schemes[c]
        x = image[c]
        if s == "none":
            out[c] = x
            continue
        if s == "zscore":
            vals = x[mask] if mask is not None else x
            mean = float(np.mean(vals, dtype=np.float64))
            std = float(np.std(vals, dtype=np.float64))
            out[c] = _affine(x, mean, max(std, 1e-8))
        elif s == "ct":
            st = stats_list[c]
            need = ("mean", "std", "p005", "p995")
            if not isinstance(st, dict) or any(k not in st for k in need):
                raise ConfigError(f'"ct" normalization needs dataset statistics with keys {", ".join(need)}')
            y = np.clip(x.astype(np.float32), np.float32(st["p005"]), np.float32(st["p995"]))
            out[c] = (y - np.float32(st["mean"])) / np.float32(max(float(st["std"]), 1e-8))
        elif s == "minmax":
            lo, hi = float(np.min(x)), float(np.max(x))
            if hi > lo:
                out[c] = _affine(x, lo, hi - lo)
            else:
                out[c] = 0.0
        else:
            raise ConfigError(
                f"unknown normalization scheme '{s}'", hint=f"choose one of: {', '.join(NORMALIZATION_SCHEMES)}"
            )
        if mask is not None and s != "none":
            out[c][~mask] = 0.0
    return out


# --------------------------------------------------------------------------- the whole chain

#: z-score inside the non-zero mask when cropping keeps less than this share of the voxels
MASK_NORM_BELOW = 0.75


@dataclass
class Preprocess3D:
    """How a raw volume ``(C, x, y, z)`` becomes network input, and back.

    ``image``/``case``: crop to the non-zero box (``crop_to_nonzero``) →
    :func:`normalize` → :func:`resample` to ``target_spacing``. ``restore``
    resamples class probabilities back to the cropped shape (linear), takes the
    argmax and uncrops, so the result lies exactly on the input's grid.

    With ``zscore`` (on every channel) and cropping, a case whose non-zero box keeps
    less than ``mask_norm_below`` of its voxels (a zero background around the body or
    a skull-stripped brain) is z-scored inside its non-zero mask and zero outside, as
    nnU-Net does; nnU-Net decides this per dataset, here it is decided per case by the
    same rule, so training and prediction agree.

    Attributes:
        target_spacing: spacing (mm) of the network grid, in array axis order ``(x, y, z)``.
        normalization: one of :data:`NORMALIZATION_SCHEMES`, or one per channel.
        stats: per-channel foreground statistics for ``ct`` (see :func:`intensity_stats`).
        crop_to_nonzero: crop to the bounding box of non-zero voxels first.
        mask_norm_below: see above (0 turns masked z-scoring off).
    """

    target_spacing: tuple[float, ...]
    normalization: str | list[str] = "zscore"
    stats: list[dict] | None = None
    crop_to_nonzero: bool = True
    mask_norm_below: float = MASK_NORM_BELOW

    def __post_init__(self) -> None:
        self.target_spacing = tuple(float(s) for s in self.target_spacing)
        if len(self.target_spacing) != 3 or min(self.target_spacing) <= 0:
            raise ConfigError(f"target spacing must be three positive numbers, got {self.target_spacing}")
        schemes = [self.normalization] if isinstance(self.normalization, str) else list(self.normalization)
        for s in schemes:
            if s not in NORMALIZATION_SCHEMES:
                raise ConfigError(f"unknown normalization '{s}'", hint=f"choose one of: {', '.join(NORMALIZATION_SCHEMES)}")
        if "ct" in schemes and not self.stats:
            raise ConfigError('"ct" normalization needs dataset intensity statistics')

    def _prepare(self, image: np.ndarray, spacing: Sequence[float], label: np.ndarray | None):
        full = tuple(image.shape[1:])
        if self.crop_to_nonzero:
            image, label, bbox = crop_to_nonzero(image, label)
        else:
            bbox = [(0, s) for s in full]
        mask = None
        all_zscore = all(s == "zscore" for s in _per_channel(self.normalization, image.shape[0], "normalization"))
        if all_zscore and self.crop_to_nonzero and image[0].size < self.mask_norm_below * np.prod(full):
            mask = nonzero_mask(image)
        x = normalize(image, self.normalization, self.stats, mask=mask)
        x = resample(x, spacing, self.target_spacing)
        y = None if label is None else resample(label, spacing, self.target_spacing, is_label=True)
        ctx = {"full_shape": list(full), "bbox": [list(b) for b in bbox], "spacing": [float(s) for s in spacing],
               "masked_norm": mask is not None}
        return x, y, ctx

    def image(self, image: np.ndarray, spacing: Sequence[float]) -> tuple[np.ndarray, dict]:
        """``(C, x, y, z)`` raw → float32 network input, plus what :meth:`restore` needs."""
        x, _, ctx = self._prepare(np.asarray(image), spacing, None)
        return x, ctx

    def case(self, image: np.ndarray, label: np.ndarray, spacing: Sequence[float]) -> tuple[np.ndarray, np.ndarray, dict]:
        """A training case: image and its label map ``(1, x, y, z)`` (values kept) through the same steps."""
        return self._prepare(np.asarray(image), spacing, np.asarray(label))

    def restore(self, probs: np.ndarray, ctx: dict, probabilities: bool = False) -> tuple[np.ndarray, np.ndarray | None]:
        """Class probabilities ``(K, *network grid)`` → class ids ``(x, y, z)`` uint8 on the input grid.

        With ``probabilities``, also the probabilities on the input grid ``(K, x, y, z)``
        (outside the crop: background 1).
        """
        bbox = [tuple(b) for b in ctx["bbox"]]
        cropped = tuple(b - a for a, b in bbox)
        p = resample_to_shape(np.asarray(probs, dtype=np.float32), cropped, order=1, spacing=self.target_spacing)
        ids = uncrop(np.argmax(p, axis=0).astype(np.uint8), bbox, ctx["full_shape"])
        if not probabilities:
            return ids, None
        full = np.zeros((p.shape[0], *ctx["full_shape"]), dtype=np.float32)
        full[0] = 1.0
        full[(slice(None), *(slice(a, b) for a, b in bbox))] = p
        return ids, full

    def to_json(self) -> dict:
        return {"target_spacing": list(self.target_spacing), "normalization": self.normalization, "stats": self.stats,
                "crop_to_nonzero": self.crop_to_nonzero, "mask_norm_below": self.mask_norm_below}

    @classmethod
    def from_json(cls, d: dict) -> "Preprocess3D":
        return cls(**d)
