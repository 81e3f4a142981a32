"""Reading label masks: detecting how a dataset's mask files encode classes, and decoding them.

:func:`detect_scheme` scans every mask file of a dataset and builds a :class:`~medseg.data.labels.LabelScheme`
(see :mod:`medseg.data.labels` for the rules); :func:`read_mask` decodes (and merges) the mask file(s) of one image.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from medseg.data.label_files import check_distinct
from medseg.data.labels import INDEX_MAX, LOSSY_MIDTONE_SHARE, LOSSY_SUFFIXES, LOSSY_THRESHOLD, MAX_CODES, LabelScheme, canonical, color_tuple, fmt_color, gray, unpack
from medseg.errors import ConfigError, DataError
from medseg.io.base import read_image

log = logging.getLogger(__name__)


def _detect_lossy(files: Sequence[Path]) -> LabelScheme:
    """The scheme of masks that are all lossy files (JPEG): binary with a threshold, when nearly every
    pixel is near 0 or 255; otherwise a :class:`DataError` asking for lossless masks."""
    total = mid = high = 0
    for f in files:
        g = gray(read_image(f).array)
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


def _read_codes(path: Path) -> tuple[str, np.ndarray, np.ndarray | None]:
    img = read_image(path)
    return canonical(img.array, path)


def detect_scheme(
    mask_files: Sequence[Path],
    *,
    label_colors: dict | None = None,
    num_classes: int | None = None,
    allow_rare: bool = False,
) -> LabelScheme:
    """Scan every mask file and decide how classes are encoded (see module docs). Without declared colours, values
    found in only a few of many masks beside classes in common use are refused as stray values
    (:func:`check_rare_codes`) unless ``allow_rare``."""
    files = [Path(p) for p in mask_files]
    if not files:
        raise DataError("no mask files to read the label scheme from",
                        hint="check the mask folder, or pass --label-colors")
    if num_classes is not None and num_classes < 1:
        raise ConfigError(f"number of classes must be at least 1, got {num_classes}")

    if label_colors:
        colors = {str(k): color_tuple(v, "label colours") for k, v in label_colors.items()}
        check_distinct(colors, "label colours")
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
    files_with: dict[tuple[str, int], list[Path]] = {}  #: the files holding each (kind, code), in reading order
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
            files_with.setdefault((kind, u), []).append(f)
        if len(target) > MAX_CODES:
            what = "colours" if kind == "color" else "gray levels"
            raise DataError(
                f"masks hold more than {MAX_CODES} distinct {what} (seen up to this file); these do not look like label masks",
                path=f,
                hint="lossy JPEG masks and anti-aliased edges create stray values: save masks as PNG, "
                "or declare the classes with --label-colors / labels.json",
            )

    if not allow_rare:
        check_rare_codes(files_with, len(files))
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
        scheme = LabelScheme(kind="color", codes=[list(unpack(k)) for k in order])
        if 0 not in counts:
            log.info("no black in the colour masks: the most frequent colour %s is taken as background",
                     fmt_color(unpack(background)))
        log.info("colour masks: %d classes: %s", scheme.num_classes,
                 ", ".join(f"{fmt_color(c)} -> {i}" for i, c in enumerate(scheme.codes)))
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
                where = (files_with.get(("color", packed)) or files_with.get(("gray", r)) or files)[0]
            else:
                where = files_with.get(("gray", extra), files)[0]
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


#: Below this many mask files, no value is called rare: a small dataset's class may well be in one mask.
RARE_MIN_FILES = 10
#: A value in at most this share of the mask files (and at least one) is rare.
RARE_SHARE = 0.01


def check_rare_codes(files_with: dict[tuple[str, int], list[Path]], n_files: int) -> None:
    """Refuse values (gray levels or colours, background aside) found in at most :data:`RARE_SHARE` of the masks
    (one at least) when other foreground values are in common use: a stray value, such as a mask saved with
    anti-aliasing among 0/255 masks, would otherwise become a class of its own."""
    if n_files < RARE_MIN_FILES:
        return
    limit = max(1, int(RARE_SHARE * n_files))
    foreground = {k: v for k, v in files_with.items() if k[1] != 0}
    rare = {k: v for k, v in foreground.items() if len(v) <= limit}
    if not rare or len(rare) == len(foreground):
        return
    where = sorted({p for v in rare.values() for p in v}, key=str)
    values = [str(u) if kind == "gray" else fmt_color(unpack(u)) for kind, u in sorted(rare)]
    shown = ", ".join(values[:8]) + (f" ... ({len(values)} in all)" if len(values) > 8 else "")
    names = ", ".join(p.name for p in where[:5]) + (f" ... ({len(where)} files)" if len(where) > 5 else "")
    raise DataError(f"mask value(s) {shown} appear in only {names} of {n_files} masks, beside classes that most masks "
                    "share; they look like stray values (anti-aliasing, a mask saved in another encoding), not classes",
                    path=where[0], hint="fix those masks, declare the classes (labels.json or --label-colors), or pass "
                    "--allow-new-labels to train them as classes")


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
