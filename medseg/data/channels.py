"""How many input channels a 2D dataset's images have: 1 (grey) or 3 (colour), decided by every image.

Each image is classed from its file header: grey modes (``L``, ``I;16``, ``I``, ``F``, ``1``, ``LA``, a grey
palette) count as 1 channel, colour modes (``RGB``, ``RGBA``, ``CMYK``, ``YCbCr``, a colour palette) as 3.
A colour file whose three channels are equal everywhere is grey stored as colour, and counts as 1; this is
decoded only when the dataset is mixed, for the files that would otherwise be odd.

A dataset that is still mixed is refused, naming the odd files (the minority), since one stray RGBA screenshot
among grey scans would otherwise make the whole model colour. ``--channels N`` converts every image to N
(grey repeated into 3 channels, colour weighted into grey; alpha is always dropped).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from medseg.errors import ConfigError, DataError

_COLOR_MODES = ("RGB", "RGBA", "CMYK", "YCbCr", "RGBX", "RGBa", "LAB", "HSV")
#: the channel counts a 2D network can take
CHANNEL_CHOICES = (1, 3)


def _rgb_is_grey(rgb: np.ndarray) -> bool:
    return bool(np.array_equal(rgb[..., 0], rgb[..., 1]) and np.array_equal(rgb[..., 1], rgb[..., 2]))


def header_channels(path: Path) -> int | None:
    """1 or 3 from the file's header (a palette is decoded); ``None`` for a file PIL cannot open (left to the
    readers, which report it when the case is loaded)."""
    try:
        with Image.open(path) as im:
            if im.mode == "P":
                return 3 if not _rgb_is_grey(np.asarray(im.convert("RGB"))) else 1
            return 3 if im.mode in _COLOR_MODES else 1
    except (OSError, ValueError, Image.DecompressionBombError):
        return None


def _stored_grey(path: Path) -> bool:
    """Whether a colour file holds a grey picture (R == G == B everywhere)."""
    try:
        with Image.open(path) as im:
            return _rgb_is_grey(np.asarray(im.convert("RGB")))
    except (OSError, ValueError, Image.DecompressionBombError):
        return False


def _names(paths: list[Path], limit: int = 5) -> str:
    shown = ", ".join(p.name for p in paths[:limit])
    return shown + (f" and {len(paths) - limit} more" if len(paths) > limit else "")


def resolve_channels(paths: list[Path], requested: int | None = None) -> int:
    """The network's input channels for images ``paths``: ``requested`` when given (every image is converted
    to it), else the one count all images share; mixed grey and colour images are a :class:`DataError` naming
    the odd ones."""
    if requested is not None:
        if requested not in CHANNEL_CHOICES:
            raise ConfigError(f"--channels {requested} is not possible for 2D images", hint="use --channels 1 (grey) or 3 (colour)")
        return requested
    counts = {p: header_channels(p) for p in paths}
    colour = [p for p, c in counts.items() if c == 3]
    grey = [p for p, c in counts.items() if c == 1]
    if not colour:
        return 1
    if not grey:
        return 3
    stored_grey = [p for p in colour if _stored_grey(p)]  # grey pictures saved as RGB(A) count as grey
    colour = [p for p in colour if p not in set(stored_grey)]
    grey += stored_grey
    if not colour:
        return 1
    odd, usual, odd_kind = (colour, "grey", "colour") if len(colour) <= len(grey) else (grey, "colour", "grey")
    raise DataError(f"{len(odd)} of {len(colour) + len(grey)} images are {odd_kind} among {usual} ones: {_names(odd)}",
                    path=odd[0],
                    hint="convert or remove the odd images, or pass --channels 1 (everything as grey) or "
                         "--channels 3 (everything as colour)")
