"""Loading a 2D dataset: cases → label scheme → preprocessed arrays in memory.

:func:`prepare_dataset` finds the cases, works out how the masks encode classes
and how many input channels to use; :func:`load_sample` reads one case, checks
that its image and masks agree in size, and preprocesses both.
"""

from __future__ import annotations

import logging
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from medseg.data.cache import fingerprint
from medseg.data.channels import resolve_channels
from medseg.data.discovery import Case2D, Discovery, discover
from medseg.data.labels import LabelScheme, canonical
from medseg.data.label_files import load_labels_json, parse_label_colors
from medseg.data.mask_reading import detect_scheme, read_mask
from medseg.data.preprocess2d import Preprocess2D
from medseg.errors import DataError
from medseg.io import read_image

log = logging.getLogger(__name__)


@dataclass
class DataOptions2D:
    """Where the data is and how to read it (all optional: the defaults detect).

    Attributes:
        images, masks, fov: subfolders (relative to the data folder, or absolute).
        pair_pattern: regex whose group ``key`` (or group 1) pairs images with masks.
        group_pattern: regex whose group ``group`` (or group 1) is the patient id.
        groups_csv: CSV ``file,group`` giving the patient of each image.
        label_colors: ``"name=r,g,b;..."`` or the path of a labels.json; the data
            folder's own ``labels.json`` is used when present.
        num_classes: expected classes (background included); more in the masks is an error.
        allow_new_labels: accept values found in only a few masks as classes (refused as stray values otherwise).
        channels: convert every image to this many channels (1 or 3); default: the count all images share
            (mixed grey and colour images are refused, see :mod:`medseg.data.channels`).
    """

    images: str | None = None
    masks: str | None = None
    fov: str | None = None
    pair_pattern: str | None = None
    group_pattern: str | None = None
    groups_csv: str | None = None
    label_colors: str | None = None
    num_classes: int | None = None
    allow_new_labels: bool = False
    channels: int | None = None

    def to_json(self) -> dict:
        return dict(self.__dict__)


@dataclass
class Sample2D:
    key: str
    image: np.ndarray                  # (C, h, w) float32, preprocessed
    label: np.ndarray | None           # (h, w) uint8 at network size
    original_size: tuple[int, int]     # (H, W) of the file
    fov: np.ndarray | None = None      # (H, W) bool at the original size
    raw_label: np.ndarray | None = None  # (H, W) uint8 at the original size


@dataclass
class Dataset2D:
    root: Path
    cases: list[Case2D]
    scheme: LabelScheme
    channels: int
    display_colors: list[tuple[int, int, int]] = field(default_factory=list)
    discovery: Discovery | None = None  #: how the cases were found, paired and grouped


def _declared_colors(root: Path, spec: str | None) -> dict | None:
    if spec:
        p = Path(spec)
        return load_labels_json(p) if p.suffix.lower() == ".json" and p.exists() else parse_label_colors(spec)
    if (root / "labels.json").is_file():
        log.info("using %s for class names and colours", root / "labels.json")
        return load_labels_json(root / "labels.json")
    return None


def resolve_scheme(root: Path, cases: list[Case2D], spec: str | None, num_classes: int | None,
                   allow_new: bool = False) -> tuple[LabelScheme, list]:
    """The label scheme of the masks, plus display colours for each class.

    Declared colours (``--label-colors``, or ``labels.json`` beside the data)
    decode colour masks; for index/binary masks they only name and colour the classes.
    """
    mask_files = [m for c in cases for m in c.masks]
    declared = _declared_colors(root, spec)
    if declared and spec:
        scheme = detect_scheme(mask_files, label_colors=declared, num_classes=num_classes)
    else:
        scheme = detect_scheme(mask_files, num_classes=num_classes, allow_rare=allow_new or bool(declared))
        if declared and scheme.kind == "color":
            scheme = detect_scheme(mask_files, label_colors=declared, num_classes=num_classes)
        elif declared and len(declared) == scheme.num_classes:
            scheme.names = list(declared)
        elif declared and scheme.num_classes > len(declared) and not allow_new:
            _refuse_undeclared(scheme, len(declared), mask_files, root / "labels.json")
    colors = [tuple(c) for c in declared.values()] if declared and len(declared) == scheme.num_classes else scheme.colors()
    return scheme, colors


def _refuse_undeclared(scheme: LabelScheme, n_declared: int, mask_files: list[Path], declared_in: Path) -> None:
    extra = set(scheme.codes[n_declared:]) if scheme.kind != "color" else set()
    where = mask_files[0]
    for f in mask_files:  # the first file holding an undeclared value (read again on this error path only)
        codes = canonical(read_image(f).array, f)[1]
        if extra and extra & set(np.unique(codes).tolist()):
            where = f
            break
    raise DataError(f"the masks hold {scheme.num_classes} classes ({scheme._describe_codes()}) but {declared_in} "
                    f"declares {n_declared}; value(s) {', '.join(map(str, sorted(extra)))} are not declared", path=where,
                    hint="fix the masks, declare the classes in labels.json, or pass --allow-new-labels")


#: the label scheme and channels of the last dataset prepared, by a hash of its files and options
_SCHEMES: dict[str, tuple[dict, list, int]] = {}


def prepare_dataset(root: str | Path, opts: DataOptions2D, require_masks: bool = True) -> Dataset2D:
    root = Path(root)
    found = discover(
        root, images=opts.images, masks=opts.masks, fov=opts.fov, pair_pattern=opts.pair_pattern,
        group_pattern=opts.group_pattern, groups_csv=opts.groups_csv, require_masks=require_masks,
    )
    declared = [p for p in (root / "labels.json", Path(opts.label_colors or "")) if opts.label_colors != "" and p.is_file()]
    files = [p for c in found.cases for p in (c.image, *c.masks)] + declared
    key = fingerprint(files, {"options": opts.to_json(), "what": "label scheme and channels"})
    if key not in _SCHEMES:  # planning and training read the same folder in one process: decode the masks once
        _SCHEMES.clear()
        scheme, colors = resolve_scheme(root, found.cases, opts.label_colors, opts.num_classes, opts.allow_new_labels)
        _SCHEMES[key] = (scheme.to_json(), colors, resolve_channels([c.image for c in found.cases], opts.channels))
    raw, colors, channels = _SCHEMES[key]
    return Dataset2D(root, found.cases, LabelScheme.from_json(raw), channels, list(colors), found)


def read_fov(path: Path, size: tuple[int, int]) -> np.ndarray:
    arr = read_image(path).array
    fov = arr[: 3 if arr.shape[0] >= 3 else 1].max(0) > 0
    if fov.shape != tuple(size):
        raise DataError(f"field-of-view mask is {fov.shape[1]}x{fov.shape[0]} but its image is {size[1]}x{size[0]}", path=path)
    return fov


def load_sample(case: Case2D, pre: Preprocess2D, scheme: LabelScheme | None, with_raw: bool = False) -> Sample2D:
    """Read, check and preprocess one case. ``scheme=None`` reads the image only."""
    img = read_image(case.image)
    size = img.spatial_shape
    label = raw = None
    if scheme is not None and case.masks:
        raw = read_mask(case.masks, scheme)
        if raw.shape != size:
            raise DataError(
                f"mask is {raw.shape[1]}x{raw.shape[0]} but its image {case.image.name} is {size[1]}x{size[0]}",
                path=case.masks[0],
                hint="a mask must have exactly its image's size; check that they are paired correctly (--pair-pattern)",
            )
        label = pre.mask(raw)
    fov = read_fov(case.fov, size) if case.fov is not None else None
    return Sample2D(case.key, pre.image(img.array)[0], label, size, fov, raw if with_raw else None)


def load_samples(cases: list[Case2D], pre: Preprocess2D, scheme: LabelScheme | None, with_raw: bool = False,
                 workers: int | None = None) -> list[Sample2D]:
    """:func:`load_sample` for each case, in order, on a few threads (decoding and resampling release
    the GIL); the first unreadable case raises its :class:`DataError`."""
    workers = workers or min(8, os.cpu_count() or 1)
    if workers <= 1 or len(cases) < 8:
        return [load_sample(c, pre, scheme, with_raw) for c in cases]
    with ThreadPoolExecutor(max_workers=workers) as pool:
        return list(pool.map(lambda c: load_sample(c, pre, scheme, with_raw), cases))


def save_labels_json(path: Path, scheme: LabelScheme, colors: list) -> None:
    """``RUN/labels.json``: class names and colours; segment codes a user added (``"codes"``) are kept."""
    from medseg.io.atomic import write_json

    out: dict = {"labels": {str(i): {"name": n, "color": list(c)} for i, (n, c) in enumerate(zip(scheme.names, colors))}}
    if path.is_file():
        from medseg.io.json_file import read_json_object

        try:
            codes = read_json_object(path).get("codes")
        except Exception:  # noqa: BLE001 - an unreadable old file is replaced, as before
            codes = None
        if isinstance(codes, dict):
            out["codes"] = codes
    write_json(path, out)

