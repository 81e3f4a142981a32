"""Preprocessing of 2D images and masks: channels, resizing, median filter, normalisation.

The same :class:`Preprocess2D` object (saved in the run folder) is applied at
training and at prediction, and :meth:`Preprocess2D.restore` maps a prediction
back to the image's original size: the interface :class:`~medseg.data.preprocess3d.Preprocess3D`
has too (``image(array, spacing) -> (x, context)``, ``restore(probabilities, context)``).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage

from medseg.errors import ConfigError

NORMALIZATIONS = ("zscore", "minmax", "none", "rgb")


def to_channels(arr: np.ndarray, channels: int) -> np.ndarray:
    """Map a reader array (C,H,W) with C in 1..4 to ``channels`` (1 or 3); alpha is dropped."""
    c = arr.shape[0]
    if c in (2, 4):  # LA / RGBA: drop alpha
        arr, c = arr[: c - 1], c - 1
    if c == channels:
        return arr
    if c == 1 and channels == 3:
        return np.repeat(arr, 3, axis=0)
    if c == 3 and channels == 1:
        weights = np.array([0.299, 0.587, 0.114], dtype=np.float32)[:, None, None]
        return (arr.astype(np.float32) * weights).sum(0, keepdims=True)
    raise ConfigError(f"cannot map an image with {c} channels to {channels}")


def _pixel_range(arr: np.ndarray) -> float:
    """The full range of the pixel type: 255 for uint8, 65535 for uint16; floats: 255 when above 1, else 1."""
    if arr.dtype == bool:
        return 1.0
    if arr.dtype.kind in "ui":
        return float(np.iinfo(arr.dtype).max)
    return 255.0 if float(np.max(arr, initial=0.0)) > 1.0 else 1.0


def area_fractions(index: torch.Tensor, k: int, size: tuple[int, int]) -> torch.Tensor:
    """Class ids ``(H, W)`` → ``(k, h, w)``: the share of each class under each pixel of a grid of ``size``
    (the one-hot encoding resampled linearly, antialiased when shrinking). Its argmax is a label map at
    that size; :mod:`medseg.planning.resolution` measures with the same resampling."""
    onehot = F.one_hot(index, k).permute(2, 0, 1)[None].float()
    return F.interpolate(onehot, size=size, mode="bilinear", align_corners=False, antialias=True)[0]


@dataclass
class Preprocess2D:
    """How raw 2D images become network input.

    Attributes:
        channels: network input channels (1 grayscale, 3 RGB); images are converted to it.
        size: ``(H, W)`` to resize every image to (``--size``), or ``None``.
        scale: the working resolution as one factor for every image (``0.5`` halves each side), or
            ``None``: the 2D analogue of a target spacing, for images whose pixels mean the same size.
        long_side: the working resolution per image: each is resampled so that its longer side has
            this many pixels (aspect ratio kept), for images whose objects scale with the frame.
            At most one of ``size``, ``scale`` and ``long_side`` is set; none keeps each image's size.
        median: median-filter size in pixels (0 = off).
        normalize: ``zscore`` per image and channel, ``minmax`` to 0..1, ``rgb`` (the pixel type's
            range to 0..1: uint8 / 255, uint16 / 65535), or ``none``.
    """

    channels: int = 1
    size: tuple[int, int] | None = None
    median: int = 0
    normalize: str = "zscore"
    scale: float | None = None
    long_side: int | None = None

    def __post_init__(self) -> None:
        if self.normalize not in NORMALIZATIONS:
            raise ConfigError(f"unknown normalisation '{self.normalize}'", hint=f"choose one of: {', '.join(NORMALIZATIONS)}")
        if self.size is not None:
            self.size = (int(self.size[0]), int(self.size[1]))
        if sum(v is not None for v in (self.size, self.scale, self.long_side)) > 1:
            raise ConfigError("give one working resolution: --size, --scale or --long-side, not several",
                              hint="the plan's spacing.scale and spacing.long_side are used when none is given")
        if self.scale is not None and not 0 < float(self.scale) <= 4:
            raise ConfigError(f"working-resolution scale must be in (0, 4], got {self.scale}")
        if self.long_side is not None and int(self.long_side) < 8:
            raise ConfigError(f"working-resolution long side must be at least 8 pixels, got {self.long_side}")

    def working_size(self, shape: tuple[int, ...]) -> tuple[int, int]:
        """The ``(h, w)`` an image of spatial ``shape`` ``(H, W)`` is resampled to (``shape`` when kept)."""
        if self.size is not None:
            return self.size
        factor = self.scale if self.scale is not None else (
            self.long_side / max(shape) if self.long_side is not None else None)
        if factor is None or factor == 1:
            return (int(shape[0]), int(shape[1]))
        return (max(1, round(shape[0] * factor)), max(1, round(shape[1] * factor)))

    def image(self, arr: np.ndarray, spacing=None) -> tuple[np.ndarray, tuple[int, int]]:
        """(C,H,W) raw → (float32 (channels, h, w) network input, the original size (H, W) to restore to).
        ``spacing`` is not used: 2D image files carry no trustworthy pixel size."""
        full = _pixel_range(arr) if self.normalize == "rgb" else 1.0
        x = to_channels(arr, self.channels).astype(np.float32)
        if self.normalize == "rgb":
            x /= np.float32(full)
        if self.median > 1:
            x = ndimage.median_filter(x, size=(1, self.median, self.median))
        size = self.working_size(x.shape[1:])
        if tuple(x.shape[1:]) != size:
            t = torch.from_numpy(np.ascontiguousarray(x))[None]
            x = F.interpolate(t, size=size, mode="bilinear", align_corners=False, antialias=True)[0].numpy()
        return self._normalize(x), (int(arr.shape[-2]), int(arr.shape[-1]))

    def _normalize(self, x: np.ndarray) -> np.ndarray:  # "rgb" is scaled in image(), from the pixel type
        if self.normalize == "zscore":
            mean = x.mean(axis=(1, 2), keepdims=True)
            std = x.std(axis=(1, 2), keepdims=True)
            return ((x - mean) / np.maximum(std, 1e-6)).astype(np.float32)
        if self.normalize == "minmax":
            lo = x.min(axis=(1, 2), keepdims=True)
            hi = x.max(axis=(1, 2), keepdims=True)
            return ((x - lo) / np.maximum(hi - lo, 1e-6)).astype(np.float32)
        return x

    def mask(self, labels: np.ndarray) -> np.ndarray:
        """(H,W) class ids → (h,w) uint8 at the working size: nearest neighbour when enlarging;
        when shrinking, each pixel takes the class of largest area under it (a linear resampling of
        the one-hot encoding, then argmax), so thin structures are not lost to nearest-neighbour gaps."""
        size = self.working_size(labels.shape)
        if tuple(labels.shape) == size:
            return labels.astype(np.uint8)
        t = torch.from_numpy(labels.astype(np.uint8))[None, None]
        if size[0] >= labels.shape[0] and size[1] >= labels.shape[1]:
            return F.interpolate(t, size=size, mode="nearest-exact")[0, 0].numpy()
        return area_fractions(t[0, 0].long(), int(labels.max()) + 1, size).argmax(0).to(torch.uint8).numpy()

    def restore(self, probs: np.ndarray, ctx: tuple[int, int], probabilities: bool = False) -> tuple[np.ndarray, np.ndarray | None]:
        """Class probabilities (K,h,w) at the working size → (class ids (H,W) uint8 at the original size ``ctx``,
        the probabilities (K,H,W) there when ``probabilities``), resampled bilinearly."""
        full = np.asarray(probs, dtype=np.float32)
        if tuple(full.shape[1:]) != tuple(ctx):
            full = F.interpolate(torch.from_numpy(full)[None], size=tuple(ctx), mode="bilinear", align_corners=False)[0].numpy()
        return full.argmax(0).astype(np.uint8), (full if probabilities else None)

    def to_json(self) -> dict:
        d = asdict(self)
        d["size"] = list(self.size) if self.size else None
        return d

    @classmethod
    def from_json(cls, d: dict) -> "Preprocess2D":
        d = dict(d)
        if d.get("size"):
            d["size"] = tuple(d["size"])
        return cls(**d)
