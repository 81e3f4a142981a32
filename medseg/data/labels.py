"""Decoding label masks by meaning rather than by raw file mode.

Masks arrive as bilevel, palette, gray, gray+alpha, RGB or RGBA files. Every
mask is first reduced to one *code* per pixel: a gray level, or an ``(r, g, b)``
colour. A :class:`LabelScheme` maps codes to class ids ``0..K-1``;
:func:`detect_scheme` builds one by scanning all mask files of a dataset:

- colours declared by the user (``--label-colors`` / ``labels.json``) win;
- gray levels within ``{0, 255}`` (255 present): ``binary``;
- gray levels all below 32: ``index`` (the value is the class id);
- other gray levels: ``gray`` (each level one class, in ascending order);
- colours: ``color``; black (else the most frequent colour) is background,
  the other colours follow in ascending ``(r, g, b)`` order;
- lossy masks (every file a JPEG): compression puts values between 0 and 255 at every edge,
  so when nearly all pixels are close to 0 or to 255 the masks are ``binary`` with a
  ``threshold`` of 128 (a pixel is foreground when its gray level, the mean of its colour
  channels, is at least 128); other lossy masks are refused with a fix.

Channel conventions: 1 channel is gray; 2 channels are gray + alpha; 3 channels
are gray when ``R == G == B`` everywhere, colour otherwise; 4 channels are RGB
+ alpha. Fully transparent pixels (alpha 0) are background.
"""

from __future__ import annotations

import colorsys
import logging
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from medseg.errors import ConfigError, DataError

log = logging.getLogger(__name__)

KINDS = ("index", "binary", "gray", "color")
MAX_CODES = 64  #: more distinct colours/levels than this means the files are not masks (or lossy JPEG)
INDEX_MAX = 32  #: gray masks whose values are all below this are class indices
LOSSY_SUFFIXES = (".jpg", ".jpeg")  #: mask files whose values compression has changed
LOSSY_THRESHOLD = 128  #: lossy binary masks: foreground from this gray level up
#: lossy masks are binary when at most this share of their pixels lies between 64 and 191
LOSSY_MIDTONE_SHARE = 0.05

_BASE_PALETTE = [
    (0, 0, 0), (255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 0), (255, 0, 255), (0, 255, 255),
    (255, 128, 0), (128, 0, 255), (0, 128, 255), (255, 0, 128), (128, 255, 0), (0, 255, 128),
    (128, 64, 0), (255, 160, 160), (160, 160, 255),
]


def _palette(n: int) -> list[tuple[int, int, int]]:
    colors = list(_BASE_PALETTE[:n])
    i = 0
    while len(colors) < n:  # further distinct hues by the golden ratio
        h = (i * 0.618033988749895) % 1.0
        r, g, b = colorsys.hsv_to_rgb(h, 0.85 if i % 2 else 0.6, 1.0 if i % 3 else 0.75)
        c = (round(r * 255), round(g * 255), round(b * 255))
        if c not in colors:
            colors.append(c)
        i += 1
    return colors


def pack(rgb: np.ndarray) -> np.ndarray:
    """``(3, ...)`` uint8-valued -> packed int64 ``r << 16 | g << 8 | b``."""
    rgb = rgb.astype(np.int64)
    return (rgb[0] << 16) | (rgb[1] << 8) | rgb[2]


def unpack(code: int) -> tuple[int, int, int]:
    code = int(code)
    return ((code >> 16) & 255, (code >> 8) & 255, code & 255)


def fmt_color(c) -> str:
    return "#%02x%02x%02x" % tuple(c)


def _as_intgray(arr: np.ndarray, path) -> np.ndarray:
    if np.issubdtype(arr.dtype, np.floating):
        if not np.all(np.isfinite(arr)) or not np.array_equal(arr, np.round(arr)):
            raise DataError(
                "mask holds fractional values; a label mask must hold whole-number codes",
                path=path,
                hint="save masks as integer PNG/TIF (class ids or gray levels), not float images",
            )
    if arr.size and (arr.min() < 0):
        raise DataError("mask holds negative values", path=path, hint="class codes must be 0 or more")
    return arr.astype(np.int64)


def canonical(array: np.ndarray, path) -> tuple[str, np.ndarray, np.ndarray | None]:
    """Reader array ``(C, H, W)`` -> (``"gray"`` | ``"color"``, codes ``(H, W)`` int64, transparent mask or None).

    Colour codes are packed ``r << 16 | g << 8 | b``.
    """
    a = np.asarray(array)
    if a.ndim == 2:
        a = a[None]
    if a.ndim != 3:
        raise DataError(f"expected a 2D mask, got an array of shape {a.shape}", path=path)
    c = a.shape[0]
    alpha = None
    if c in (2, 4):
        alpha = a[-1] == 0
        a = a[:-1]
        c -= 1
        if not alpha.any():
            alpha = None
    if c == 1:
        return "gray", _as_intgray(a[0], path), alpha
    if c == 3:
        if np.array_equal(a[0], a[1]) and np.array_equal(a[1], a[2]):
            return "gray", _as_intgray(a[0], path), alpha
        if a.dtype != np.uint8:
            if a.min() < 0 or a.max() > 255:
                raise DataError("colour mask with values outside 0..255", path=path)
        return "color", pack(a), alpha
    raise DataError(f"cannot decode a mask with {a.shape[0]} channels", path=path,
                    hint="masks must be gray, gray+alpha, RGB or RGBA images")


def color_tuple(value, where: str) -> tuple[int, int, int]:
    """Parse one colour: ``[r, g, b]``, an int gray level, ``"#rrggbb"`` or ``"r,g,b"``."""
    v = value
    if isinstance(v, str):
        s = v.strip()
        if re.fullmatch(r"#?[0-9a-fA-F]{6}", s):
            s = s.lstrip("#")
            return (int(s[0:2], 16), int(s[2:4], 16), int(s[4:6], 16))
        parts = [p for p in re.split(r"[,\s]+", s) if p]
        try:
            v = [int(p) for p in parts]
        except ValueError:
            raise ConfigError(f"{where}: cannot read colour {value!r}",
                              hint="write a colour as r,g,b (0..255 each), #rrggbb, or one gray level") from None
    if isinstance(v, bool):
        raise ConfigError(f"{where}: cannot read colour {value!r}")
    if isinstance(v, (int, np.integer)):
        v = [int(v)] * 3
    if isinstance(v, (list, tuple)) and len(v) == 1:
        v = [v[0]] * 3
    if not (isinstance(v, (list, tuple)) and len(v) == 3 and all(isinstance(x, (int, np.integer)) and not isinstance(x, bool) for x in v)):
        raise ConfigError(f"{where}: cannot read colour {value!r}",
                          hint="write a colour as r,g,b (0..255 each), #rrggbb, or one gray level")
    if not all(0 <= int(x) <= 255 for x in v):
        raise ConfigError(f"{where}: colour {value!r} has a value outside 0..255")
    return (int(v[0]), int(v[1]), int(v[2]))


@dataclass
class LabelScheme:
    """How class ids are encoded in the mask files.

    Class ``i`` is encoded by ``codes[i]``: an int gray level for the kinds
    ``index``/``binary``/``gray``, an ``[r, g, b]`` list for ``color``. A ``binary`` scheme
    with a ``threshold`` decodes lossy files: gray level (mean of the colour channels) at
    least ``threshold`` is class 1.
    """

    kind: str
    codes: list
    names: list[str] = field(default_factory=list)
    threshold: int | None = None

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ConfigError(f"unknown label scheme kind {self.kind!r} (expected one of {', '.join(KINDS)})")
        if self.kind == "color":
            self.codes = [list(color_tuple(c, "label scheme")) for c in self.codes]
            keys = [tuple(c) for c in self.codes]
        else:
            self.codes = [int(c) for c in self.codes]
            keys = list(self.codes)
        if not self.codes:
            raise ConfigError("a label scheme needs at least one class")
        if len(set(keys)) != len(keys):
            raise ConfigError(f"label scheme has duplicate codes: {self.codes}")
        if not self.names:
            self.names = default_names(self.kind, len(self.codes))
        self.names = [str(n) for n in self.names]
        if len(self.names) != len(self.codes):
            raise ConfigError(f"label scheme has {len(self.codes)} codes but {len(self.names)} names")
        if self.threshold is not None and (self.kind != "binary" or not 0 < int(self.threshold) <= 255):
            raise ConfigError(f"a label threshold applies to binary masks, with a level in 1..255 (got {self.threshold})")

    @property
    def num_classes(self) -> int:
        return len(self.codes)

    def _packed_codes(self) -> list[int]:
        if self.kind == "color":
            return [(r << 16) | (g << 8) | b for r, g, b in self.codes]
        return [(c << 16) | (c << 8) | c if 0 <= c <= 255 else -1 for c in self.codes]

    def _describe_codes(self, limit: int = 12) -> str:
        shown = [fmt_color(c) if self.kind == "color" else str(c) for c in self.codes[:limit]]
        more = f", ... ({len(self.codes)} in all)" if len(self.codes) > limit else ""
        return ", ".join(f"{s}={n}" for s, n in zip(shown, self.names)) + more

    def decode(self, array: np.ndarray, path=None) -> np.ndarray:
        """Reader array ``(C, H, W)`` -> ``uint8`` ``(H, W)`` class ids.

        Codes not in the scheme raise :class:`DataError` naming the file, the
        first few bad values and the valid ones.
        """
        if self.threshold is not None and (path is None or Path(path).suffix.lower() in LOSSY_SUFFIXES):
            return _thresholded(array, self.threshold, path)  # a lossless file is held to the exact codes below
        pix_kind, codes, transparent = canonical(array, path)
        if self.kind == "color" or pix_kind == "color":
            if pix_kind == "gray":
                if codes.size and codes.max() > 255:
                    raise DataError("gray mask values above 255 cannot match colour labels", path=path)
                codes = (codes << 16) | (codes << 8) | codes
            table = self._packed_codes()
            fmt = lambda v: fmt_color(unpack(v))  # noqa: E731
        else:
            table = list(self.codes)
            fmt = str
        uniq, inverse = np.unique(codes, return_inverse=True)
        lookup = {code: i for i, code in enumerate(table)}
        mapped = np.array([lookup.get(int(u), -1) for u in uniq], dtype=np.int64)
        bad_sel = mapped < 0
        if transparent is not None and bad_sel.any():
            # values that occur only under alpha == 0 are background, not errors
            seen = np.unique(codes[~transparent])
            bad_sel &= np.isin(uniq, seen)
            mapped[mapped < 0] = 0
        if bad_sel.any():
            bad = [fmt(int(u)) for u in uniq[bad_sel][:8]]
            more = f" ... ({int(bad_sel.sum())} in all)" if bad_sel.sum() > 8 else ""
            raise DataError(
                f"mask holds values that are not in the label scheme ({self.kind}): {', '.join(bad)}{more}; "
                f"valid: {self._describe_codes()}",
                path=path,
                hint="declare them with --label-colors or labels.json, or fix the mask "
                "(lossy JPEG masks and anti-aliased edges add stray colours)",
            )
        out = mapped[inverse.reshape(codes.shape)].astype(np.uint8)
        if transparent is not None:
            out[transparent] = 0
        return out

    def colors(self) -> list[tuple[int, int, int]]:
        """A display colour per class: the codes for ``color`` schemes, else a fixed palette (background black)."""
        if self.kind == "color":
            return [tuple(int(x) for x in c) for c in self.codes]  # type: ignore[misc]
        return _palette(self.num_classes)

    def encode_color(self, labels: np.ndarray) -> np.ndarray:
        """``(H, W)`` class ids -> ``(3, H, W)`` uint8 picture in :meth:`colors`."""
        lut = np.array(self.colors(), dtype=np.uint8)
        labels = np.asarray(labels)
        if labels.size and (labels.min() < 0 or labels.max() >= self.num_classes):
            raise ValueError(f"class ids must lie in 0..{self.num_classes - 1}")
        return np.ascontiguousarray(np.moveaxis(lut[labels], -1, 0))

    def encode(self, labels: np.ndarray) -> np.ndarray:
        """``(H, W)`` class ids -> channel-first array in the training files' own encoding.

        ``(1, H, W)`` gray levels for index/binary/gray schemes (uint8 when all
        codes fit, else uint16), ``(3, H, W)`` uint8 colours for ``color``.
        """
        if self.kind == "color":
            return self.encode_color(labels)
        dtype = np.uint8 if max(self.codes) <= 255 else np.uint16
        lut = np.array(self.codes, dtype=dtype)
        return lut[np.asarray(labels)][None]

    def to_json(self) -> dict:
        d = {"kind": self.kind, "codes": [list(c) if isinstance(c, (list, tuple)) else int(c) for c in self.codes],
             "names": list(self.names)}
        if self.threshold is not None:
            d["threshold"] = int(self.threshold)
        return d

    @classmethod
    def from_json(cls, d: dict) -> "LabelScheme":
        if not isinstance(d, dict) or not {"kind", "codes"} <= set(d):
            raise ConfigError("a stored label scheme needs 'kind' and 'codes'")
        return cls(kind=d["kind"], codes=list(d["codes"]), names=list(d.get("names") or []), threshold=d.get("threshold"))


def gray(array: np.ndarray) -> np.ndarray:
    """Reader array ``(C, H, W)`` -> gray levels ``(H, W)`` float: the mean of the colour channels (alpha dropped)."""
    a = np.asarray(array)
    if a.ndim == 2:
        a = a[None]
    if a.shape[0] in (2, 4):
        a = a[:-1]
    return a.astype(np.float32).mean(0)


def _thresholded(array: np.ndarray, threshold: int, path) -> np.ndarray:
    """Class ids of a lossy binary mask: 1 where the gray level is at least ``threshold``."""
    a = np.asarray(array)
    if a.ndim not in (2, 3):
        raise DataError(f"expected a 2D mask, got an array of shape {a.shape}", path=path)
    return (gray(a) >= threshold).astype(np.uint8)


def default_names(kind: str, n: int) -> list[str]:
    if kind == "binary" and n == 2:
        return ["background", "foreground"]
    return ["background"] + [f"class_{i}" for i in range(1, n)]
