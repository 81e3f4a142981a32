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
import json
import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from medseg.errors import ConfigError, DataError
from medseg.io.base import read_image

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


def _pack(rgb: np.ndarray) -> np.ndarray:
    """``(3, ...)`` uint8-valued -> packed int64 ``r << 16 | g << 8 | b``."""
    rgb = rgb.astype(np.int64)
    return (rgb[0] << 16) | (rgb[1] << 8) | rgb[2]


def _unpack(code: int) -> tuple[int, int, int]:
    code = int(code)
    return ((code >> 16) & 255, (code >> 8) & 255, code & 255)


def _fmt_color(c) -> str:
    return "#%02x%02x%02x" % tuple(c)


def _as_int_gray(arr: np.ndarray, path) -> np.ndarray:
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


def _canonical(array: np.ndarray, path) -> tuple[str, np.ndarray, np.ndarray | None]:
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
        return "gray", _as_int_gray(a[0], path), alpha
    if c == 3:
        if np.array_equal(a[0], a[1]) and np.array_equal(a[1], a[2]):
            return "gray", _as_int_gray(a[0], path), alpha
        if a.dtype != np.uint8:
            if a.min() < 0 or a.max() > 255:
                raise DataError("colour mask with values outside 0..255", path=path)
        return "color", _pack(a), alpha
    raise DataError(f"cannot decode a mask with {a.shape[0]} channels", path=path,
                    hint="masks must be gray, gray+alpha, RGB or RGBA images")


def _color_tuple(value, where: str) -> tuple[int, int, int]:
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
            self.codes = [list(_color_tuple(c, "label scheme")) for c in self.codes]
            keys = [tuple(c) for c in self.codes]
        else:
            self.codes = [int(c) for c in self.codes]
            keys = list(self.codes)
        if not self.codes:
            raise ConfigError("a label scheme needs at least one class")
        if len(set(keys)) != len(keys):
            raise ConfigError(f"label scheme has duplicate codes: {self.codes}")
        if not self.names:
            self.names = _default_names(self.kind, len(self.codes))
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
        shown = [_fmt_color(c) if self.kind == "color" else str(c) for c in self.codes[:limit]]
        more = f", ... ({len(self.codes)} in all)" if len(self.codes) > limit else ""
        return ", ".join(f"{s}={n}" for s, n in zip(shown, self.names)) + more

    def decode(self, array: np.ndarray, path=None) -> np.ndarray:
        """Reader array ``(C, H, W)`` -> ``uint8`` ``(H, W)`` class ids.

        Codes not in the scheme raise :class:`DataError` naming the file, the
        first few bad values and the valid ones.
        """
        if self.threshold is not None and (path is None or Path(path).suffix.lower() in LOSSY_SUFFIXES):
            return _thresholded(array, self.threshold, path)  # a lossless file is held to the exact codes below
        pix_kind, codes, transparent = _canonical(array, path)
        if self.kind == "color" or pix_kind == "color":
            if pix_kind == "gray":
                if codes.size and codes.max() > 255:
                    raise DataError("gray mask values above 255 cannot match colour labels", path=path)
                codes = (codes << 16) | (codes << 8) | codes
            table = self._packed_codes()
            fmt = lambda v: _fmt_color(_unpack(v))  # noqa: E731
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


def _gray(array: np.ndarray) -> np.ndarray:
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
    return (_gray(a) >= threshold).astype(np.uint8)


def _detect_lossy(files: Sequence[Path]) -> LabelScheme:
    """The scheme of masks that are all lossy files (JPEG): binary with a threshold, when nearly every
    pixel is near 0 or 255; otherwise a :class:`DataError` asking for lossless masks."""
    total = mid = high = 0
    for f in files:
        g = _gray(read_image(f).array)
        total += g.size
        mid += int(np.count_nonzero((g >= 64) & (g < 192)))
        high += int(np.count_nonzero(g >= LOSSY_THRESHOLD))
    share = mid / max(total, 1)
    if share > LOSSY_MIDTONE_SHARE:
        raise DataError(
            f"the masks are JPEG files and {share:.0%} of their pixels are mid-gray (64..191): they do not look like "
            "binary masks, and lossy compression has changed their class values", path=files[0],
            hint="save the masks losslessly (PNG or TIF), or declare the classes with --label-colors")
    log.info("JPEG masks: read as binary, foreground from gray level %d (%.2f%% of the pixels were between 64 and 191, "
             "compression noise at the edges)", LOSSY_THRESHOLD, 100 * share)
    if high == 0:
        log.warning("all %d JPEG mask files are empty (below gray level %d)", len(files), LOSSY_THRESHOLD)
    return LabelScheme(kind="binary", codes=[0, 255], threshold=LOSSY_THRESHOLD)


def _default_names(kind: str, n: int) -> list[str]:
    if kind == "binary" and n == 2:
        return ["background", "foreground"]
    return ["background"] + [f"class_{i}" for i in range(1, n)]


# --------------------------------------------------------------------------- user-declared labels


def parse_label_colors(spec: str) -> dict[str, tuple[int, int, int]]:
    """Parse the CLI form ``"background=0,0,0;lung=255,0,0;tumour=#00ff00"``.

    Returns ``{name: (r, g, b)}`` in class order (the first entry is class 0).
    A single number is a gray level: ``vessel=255`` means ``(255, 255, 255)``.
    """
    if not isinstance(spec, str) or not spec.strip():
        raise ConfigError("empty --label-colors", hint='write e.g. "background=0,0,0;lung=255,0,0"')
    out: dict[str, tuple[int, int, int]] = {}
    for item in (p.strip() for p in re.split(r"[;\n]", spec)):
        if not item:
            continue
        if "=" not in item:
            raise ConfigError(f"--label-colors entry {item!r} has no '='",
                              hint='write each class as name=r,g,b, separated by ";", e.g. "background=0,0,0;lung=255,0,0"')
        name, value = (s.strip() for s in item.split("=", 1))
        if not name:
            raise ConfigError(f"--label-colors entry {item!r} has no class name")
        if name in out:
            raise ConfigError(f"--label-colors names class {name!r} twice")
        out[name] = _color_tuple(value, f"--label-colors entry {item!r}")
    _check_distinct(out, "--label-colors")
    return out


def _check_distinct(colors: dict, where: str) -> None:
    seen: dict[tuple, str] = {}
    for name, c in colors.items():
        if c in seen:
            raise ConfigError(f"{where}: classes {seen[c]!r} and {name!r} have the same colour {_fmt_color(c)}")
        seen[c] = name
    if not colors:
        raise ConfigError(f"{where}: no classes declared")


def load_labels_json(path) -> dict[str, tuple[int, int, int]]:
    """Read a ``labels.json``: ``{name: (r, g, b)}`` in class order.

    Two forms are accepted::

        {"labels": {"0": {"name": "background", "color": [0, 0, 0]},
                    "1": {"name": "lung", "color": "#ff0000"}}}
        {"background": [0, 0, 0], "lung": [255, 0, 0]}

    In the first, the keys must be the class ids 0..K-1. A colour may be
    ``[r, g, b]``, ``"#rrggbb"`` or a single gray level.
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError("labels file not found", path=path)
    try:
        data = json.loads(path.read_text(encoding="utf-8-sig"))
    except json.JSONDecodeError as e:
        raise ConfigError(f"not valid JSON (line {e.lineno}, column {e.colno}: {e.msg})", path=path) from None
    except UnicodeDecodeError as e:
        raise ConfigError(f"cannot read labels file: {e}", path=path, hint="save it as UTF-8 text") from None
    hint = ('write {"labels": {"0": {"name": "background", "color": [0,0,0]}, "1": {...}}} '
            'or {"background": [0,0,0], "lung": [255,0,0]}')
    if not isinstance(data, dict) or not data:
        raise ConfigError("expected a JSON object of labels", path=path, hint=hint)
    out: dict[str, tuple[int, int, int]] = {}
    try:
        if "labels" in data and isinstance(data["labels"], dict):
            entries = data["labels"]
            try:
                ids = sorted(int(k) for k in entries)
            except ValueError:
                raise ConfigError("the keys of 'labels' must be class ids 0, 1, 2, ...", path=path, hint=hint) from None
            if ids != list(range(len(ids))):
                raise ConfigError(f"class ids must run 0..{len(ids) - 1} without gaps (found {ids})", path=path, hint=hint)
            by_id = {int(k): v for k, v in entries.items()}
            for i in ids:
                e = by_id[i]
                if not isinstance(e, dict) or "color" not in e:
                    raise ConfigError(f"class {i} needs a 'color'", path=path, hint=hint)
                name = str(e.get("name") or (_default_names("color", i + 1)[i]))
                if name in out:
                    raise ConfigError(f"class name {name!r} is used twice", path=path)
                out[name] = _color_tuple(e["color"], f"{path}: class {i}")
        else:
            for name, value in data.items():
                out[str(name)] = _color_tuple(value, f"{path}: class {name!r}")
        _check_distinct(out, str(path))
    except ConfigError as e:
        if e.path is None:
            raise ConfigError(e.message, path=path, hint=e.hint or hint) from None
        raise
    return out


# --------------------------------------------------------------------------- detection


def _read_codes(path: Path) -> tuple[str, np.ndarray, np.ndarray | None]:
    img = read_image(path)
    return _canonical(img.array, path)


def detect_scheme(
    mask_files: Sequence[Path],
    *,
    label_colors: dict | None = None,
    num_classes: int | None = None,
) -> LabelScheme:
    """Scan every mask file and decide how classes are encoded (see module docs)."""
    files = [Path(p) for p in mask_files]
    if not files:
        raise DataError("no mask files to read the label scheme from",
                        hint="check the mask folder, or pass --label-colors")
    if num_classes is not None and num_classes < 1:
        raise ConfigError(f"number of classes must be at least 1, got {num_classes}")

    if label_colors:
        colors = {str(k): _color_tuple(v, "label colours") for k, v in label_colors.items()}
        _check_distinct(colors, "label colours")
        if num_classes is not None and num_classes != len(colors):
            raise ConfigError(f"{len(colors)} label colours declared but {num_classes} classes requested")
        all_gray = all(r == g == b for r, g, b in colors.values())
        scheme = LabelScheme(
            kind="gray" if all_gray else "color",
            codes=[c[0] for c in colors.values()] if all_gray else [list(c) for c in colors.values()],
            names=list(colors),
        )
        for f in files:  # every file must use declared codes only; the error names the file
            img = read_image(f)
            scheme.decode(img.array, f)
        return scheme

    if all(f.suffix.lower() in LOSSY_SUFFIXES for f in files):
        scheme = _detect_lossy(files)
        if num_classes is not None and num_classes != scheme.num_classes:
            raise DataError(f"JPEG masks are read as binary (2 classes), but {num_classes} were requested", path=files[0],
                            hint="save multi-class masks losslessly (PNG or TIF)")
        return scheme

    gray_counts: dict[int, int] = {}
    color_counts: dict[int, int] = {}
    first_file: dict[tuple[str, int], Path] = {}
    for f in files:
        kind, codes, transparent = _read_codes(f)
        target = gray_counts if kind == "gray" else color_counts
        if transparent is not None:
            # fully transparent pixels are background: they count as black / 0
            codes = codes[~transparent]
            target[0] = target.get(0, 0) + int(transparent.sum())
        uniq, counts = np.unique(codes, return_counts=True)
        for u, c in zip(uniq.tolist(), counts.tolist()):
            target[u] = target.get(u, 0) + c
            first_file.setdefault((kind, u), f)
        if len(target) > MAX_CODES:
            what = "colours" if kind == "color" else "gray levels"
            raise DataError(
                f"masks hold more than {MAX_CODES} distinct {what} (seen up to this file); these do not look like label masks",
                path=f,
                hint="lossy JPEG masks and anti-aliased edges create stray values: save masks as PNG, "
                "or declare the classes with --label-colors / labels.json",
            )

    if color_counts:
        # gray pixels in a colour dataset are colours (v, v, v)
        counts = dict(color_counts)
        for g, c in gray_counts.items():
            if g > 255:
                raise DataError("masks mix colour files and gray values above 255", path=files[0])
            packed = (g << 16) | (g << 8) | g
            counts[packed] = counts.get(packed, 0) + c
        if len(counts) > MAX_CODES:
            raise DataError(
                f"masks hold {len(counts)} distinct colours (more than {MAX_CODES})",
                path=files[0],
                hint="lossy JPEG masks and anti-aliased edges create stray colours: save masks as PNG, "
                "or declare the classes with --label-colors / labels.json",
            )
        background = 0 if 0 in counts else max(counts, key=lambda k: (counts[k], -k))
        order = [background] + sorted(k for k in counts if k != background)
        scheme = LabelScheme(kind="color", codes=[list(_unpack(k)) for k in order])
        if 0 not in counts:
            log.info("no black in the colour masks: the most frequent colour %s is taken as background",
                     _fmt_color(_unpack(background)))
        log.info("colour masks: %d classes: %s", scheme.num_classes,
                 ", ".join(f"{_fmt_color(c)} -> {i}" for i, c in enumerate(scheme.codes)))
    else:
        levels = sorted(gray_counts)
        if levels == [0]:
            log.warning("all %d mask files are empty (only 0); assuming binary masks 0/255", len(files))
            scheme = LabelScheme(kind="binary", codes=[0, 255])
        elif set(levels) <= {0, 255} and 255 in levels:
            scheme = LabelScheme(kind="binary", codes=[0, 255])
        elif levels[-1] < INDEX_MAX:
            n = levels[-1] + 1
            if num_classes is not None and num_classes > n:
                n = num_classes
            scheme = LabelScheme(kind="index", codes=list(range(n)))
        else:
            if levels[0] != 0:
                log.info("gray masks without 0: the lowest level %d is taken as background", levels[0])
            scheme = LabelScheme(kind="gray", codes=levels)
            log.info("gray-level masks: %d classes: %s", scheme.num_classes,
                     ", ".join(f"{v} -> {i}" for i, v in enumerate(levels)))

    if num_classes is not None:
        if scheme.num_classes > num_classes:
            extra = scheme.codes[num_classes]
            if scheme.kind == "color":
                r, g, b = extra
                packed = (r << 16) | (g << 8) | b
                where = first_file.get(("color", packed)) or first_file.get(("gray", r), files[0])
            else:
                where = first_file.get(("gray", extra), files[0])
            raise DataError(
                f"masks hold {scheme.num_classes} classes ({scheme._describe_codes()}) but {num_classes} were requested",
                path=where,
                hint="raise --num-classes, or fix the masks (stray values), or declare classes with --label-colors",
            )
        if scheme.num_classes < num_classes:
            log.warning(
                "%d classes requested but the masks show only %d (%s); the missing classes have no known code",
                num_classes, scheme.num_classes, scheme._describe_codes(),
            )
    return scheme


def read_mask(paths: Sequence[Path], scheme: LabelScheme) -> np.ndarray:
    """Read and decode the label file(s) of one image into ``(H, W)`` uint8 class ids.

    Several files are merged with ``np.maximum``: the union for binary masks;
    for multi-class masks the higher class id wins where they overlap.
    Files of different sizes raise :class:`DataError`.
    """
    paths = [Path(p) for p in paths]
    if not paths:
        raise ValueError("read_mask needs at least one file")
    out: np.ndarray | None = None
    first: Path | None = None
    for p in paths:
        img = read_image(p)
        lab = scheme.decode(img.array, p)
        if out is None:
            out, first = lab, p
        elif lab.shape != out.shape:
            raise DataError(
                f"mask size {lab.shape[1]}x{lab.shape[0]} differs from {first.name} "  # type: ignore[union-attr]
                f"({out.shape[1]}x{out.shape[0]}), another mask of the same image",
                path=p,
                hint="all masks of one image must have the image's size",
            )
        else:
            np.maximum(out, lab, out=out)
    return out  # type: ignore[return-value]
