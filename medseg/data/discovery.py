"""Finding 2D cases in a folder: which file is an image, which are its masks.

A *case* is one image, the label file(s) drawn on it, an optional field-of-view
(FOV) mask and an optional group (patient) id used to keep slices of one
patient in the same split subset.

Layouts understood (see :func:`find_layout`):

- subfolders named by role, e.g. ``images/`` + ``labels/`` (or ``masks/``,
  ``gt/``, ``1st_manual/`` ...) + optional ``fov/``. The DRIVE layout
  ``images/`` + ``1st_manual/`` + ``mask/`` is read with ``mask/`` as the FOV;
- one flat folder where a file is a mask when a token of its name is a mask
  role word (``case1.png`` + ``case1_mask.png`` + ``case1_mask_1.png``), and a
  FOV when a token is ``fov`` or ``roi``;
- images only (``require_masks=False``): unlabelled cases for prediction.

Images and masks are paired by name (:func:`pairing_key`), never by sorted
position, so a missing or extra file is reported instead of silently shifting
every pair by one.
"""

from __future__ import annotations

import csv
import logging
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from medseg.errors import ConfigError, DataError

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".png", ".tif", ".tiff", ".gif", ".jpg", ".jpeg", ".bmp")

#: subfolder names (lower case) that hold images, in priority order
IMAGE_DIR_NAMES = ("images", "image", "imgs", "img", "scans", "inputs", "input", "x")
#: subfolder names (lower case) that hold label masks, in priority order
LABEL_DIR_NAMES = (
    "labels", "label", "1st_manual", "manual", "gt", "groundtruth", "ground_truth", "annotations",
    "segmentations", "segmentation", "masks", "mask", "y",
)
#: subfolder names (lower case) that hold field-of-view masks
FOV_DIR_NAMES = ("fov", "roi")

#: name tokens that say what a file is rather than which case it belongs to
ROLE_TOKENS = frozenset({
    "image", "img", "imgs", "images", "training", "train", "test", "testing", "val", "validation",
    "manual", "manual1", "manual2", "mask", "masks", "label", "labels", "seg", "segmentation",
    "segmentations", "gt", "groundtruth", "annotation", "annotations", "anno", "fov", "roi",
})
#: tokens that make a file in a flat folder a label mask
MASK_TOKENS = frozenset({
    "mask", "masks", "label", "labels", "seg", "segmentation", "segmentations", "gt", "groundtruth",
    "manual", "manual1", "manual2", "annotation", "annotations", "anno",
})
#: tokens that make a file in a flat folder a field-of-view mask
FOV_TOKENS = frozenset({"fov", "roi"})

#: operating-system clutter and medseg's own dataset metadata, skipped without a warning
_JUNK_FILES = frozenset({"thumbs.db", "desktop.ini", "labels.json"})

_TOKEN_SPLIT = re.compile(r"[_\-. ]+")
_AUTO_GROUP = re.compile(r"(?i)(?<![a-z])(patient|case|subject|pat|sub|p)[-_]?\d+")


@dataclass(frozen=True)
class Case2D:
    """One 2D image with its label file(s), optional FOV and group id."""

    key: str  #: pairing key, e.g. ``"21"``
    image: Path
    masks: tuple[Path, ...]  #: label files for this image (merged later); ``()`` when unlabelled
    fov: Path | None = None  #: field-of-view mask, optional
    group: str | None = None  #: patient/case id for a group-aware split


@dataclass(frozen=True)
class Layout2D:
    """Where the images, masks and FOV masks of a dataset folder are.

    ``masks == images`` means a flat folder: masks are told apart by name.
    ``masks is None`` means no labels were found.
    """

    root: Path
    images: Path
    masks: Path | None
    fov: Path | None

    @property
    def flat(self) -> bool:
        return self.masks is not None and self.masks == self.images


# --------------------------------------------------------------------------- files


def _brief_listing(folder: Path, limit: int = 8) -> str:
    try:
        entries = sorted(folder.iterdir(), key=lambda p: p.name.lower())
    except OSError:
        return "(cannot list)"
    if not entries:
        return "(empty)"
    names = [p.name + ("/" if p.is_dir() else "") for p in entries[:limit]]
    more = f" ... and {len(entries) - limit} more" if len(entries) > limit else ""
    return ", ".join(names) + more


def list_image_files(folder: Path) -> list[Path]:
    """The image files directly in ``folder``, sorted by name.

    Hidden files (``.DS_Store``, ``._x.png``), OS clutter (``Thumbs.db``,
    ``desktop.ini``) and ``labels.json`` are ignored silently; subfolders are not entered; any other
    file whose ending is not one of :data:`IMAGE_SUFFIXES` is skipped with one
    logged WARNING naming them, so a stray ``notes.txt`` does not stop a run.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError("folder not found", path=folder)
    images: list[Path] = []
    skipped: list[str] = []
    for p in sorted(folder.iterdir(), key=lambda p: p.name):
        if p.name.startswith(".") or p.name.lower() in _JUNK_FILES or not p.is_file():
            continue
        if p.suffix.lower() in IMAGE_SUFFIXES:
            images.append(p)
        else:
            skipped.append(p.name)
    if skipped:
        shown = ", ".join(skipped[:10]) + (f" ... and {len(skipped) - 10} more" if len(skipped) > 10 else "")
        log.warning("%s: skipping %d file(s) that are not 2D images: %s", folder, len(skipped), shown)
    return images


def _tokens(stem: str) -> list[str]:
    return [t for t in _TOKEN_SPLIT.split(stem.lower()) if t]


def pairing_key(stem: str, is_mask: bool) -> str:
    """The case key of a file name stem: the stem without its role words.

    ``21_training`` -> ``21``; ``21_manual1`` -> ``21``; ``21_training_mask`` ->
    ``21``; ``case7_mask_1`` -> ``case7`` (in a mask name a number right after a
    role word is an instance index); ``patient003_slice012`` unchanged.
    The instance index is kept when nothing else would remain (``mask_1`` ->
    ``1``, to pair with ``img_1``). A stem made only of role words keys as itself.
    """
    tokens = _tokens(stem)
    kept: list[str] = []
    index_tokens: list[str] = []
    prev_role = False
    for t in tokens:
        if t in ROLE_TOKENS:
            prev_role = True
            continue
        if is_mask and prev_role and t.isdigit():
            index_tokens.append(t)
        else:
            kept.append(t)
        prev_role = False
    if not kept:
        kept = index_tokens
    if not kept:
        return "_".join(tokens) if tokens else stem.lower()
    return "_".join(kept)


def _pattern_key_fn(pattern: str, what: str, group_name: str) -> Callable[[Path], str]:
    try:
        rx = re.compile(pattern)
    except re.error as e:
        raise ConfigError(f"invalid {what} regular expression {pattern!r}: {e}") from None

    def key(path: Path) -> str:
        m = rx.search(path.stem)
        if m is None:
            raise DataError(
                f"file name '{path.stem}' does not match the {what} {pattern!r}",
                path=path,
                hint=f"adjust the {what} so that it matches every file name",
            )
        if group_name in rx.groupindex:
            value = m.group(group_name)
        elif rx.groups >= 1:
            value = m.group(1)
        else:
            value = m.group(0)
        if not value:
            raise DataError(f"the {what} {pattern!r} matched an empty {group_name} in '{path.stem}'", path=path)
        return value

    return key


# --------------------------------------------------------------------------- layout


def _resolve_dir(root: Path, value: str | Path, what: str) -> Path:
    p = Path(value)
    if not p.is_absolute():
        p = root / p
    if not p.is_dir():
        raise DataError(
            f"{what} folder not found",
            path=p,
            hint=f"give the {what} folder relative to {root} or as an absolute path",
        )
    return p


def _has_mask_named_files(folder: Path) -> bool:
    for p in folder.iterdir():
        if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith("."):
            if set(_tokens(p.stem)) & (MASK_TOKENS | FOV_TOKENS):
                return True
    return False


def find_layout(
    root: str | Path,
    images: str | Path | None = None,
    masks: str | Path | None = None,
    fov: str | Path | None = None,
) -> Layout2D:
    """Find the image, label and FOV folders under ``root``.

    Explicit folders (relative to ``root`` or absolute) override detection.
    Subfolders are recognised by name, case-insensitively (see
    :data:`IMAGE_DIR_NAMES`, :data:`LABEL_DIR_NAMES`, :data:`FOV_DIR_NAMES`); a
    ``mask``/``masks`` folder is the FOV when another label folder was chosen
    (DRIVE). Without an image subfolder the images are in ``root`` itself; when
    no label folder exists but the image folder holds mask-named files, the
    folder is flat (``masks == images``).
    """
    root = Path(root)
    if not root.is_dir():
        raise DataError("dataset folder not found" if not root.exists() else "not a folder", path=root)

    subdirs: dict[str, Path] = {}
    for p in sorted(root.iterdir(), key=lambda p: p.name):
        if p.is_dir() and not p.name.startswith("."):
            subdirs.setdefault(p.name.lower(), p)

    def first(names, exclude=()) -> Path | None:
        for n in names:
            if n in subdirs and subdirs[n] not in exclude:
                return subdirs[n]
        return None

    images_dir = _resolve_dir(root, images, "images") if images is not None else (first(IMAGE_DIR_NAMES) or root)

    if masks is not None:
        masks_dir: Path | None = _resolve_dir(root, masks, "masks")
    else:
        masks_dir = first(LABEL_DIR_NAMES, exclude=(images_dir,))
        if masks_dir is None and _has_mask_named_files(images_dir):
            masks_dir = images_dir

    if fov is not None:
        fov_dir: Path | None = _resolve_dir(root, fov, "FOV")
    else:
        taken = tuple(p for p in (images_dir, masks_dir) if p is not None)
        fov_dir = first(FOV_DIR_NAMES, exclude=taken)
        if fov_dir is None and masks_dir is not None:
            fov_dir = first(("mask", "masks"), exclude=taken)

    layout = Layout2D(root=root, images=images_dir, masks=masks_dir, fov=fov_dir)
    log.debug("dataset layout: %s", layout)
    return layout


# --------------------------------------------------------------------------- cases


def _classify_flat(files: list[Path]) -> tuple[list[Path], list[Path], list[Path]]:
    imgs, msks, fovs = [], [], []
    for f in files:
        toks = set(_tokens(f.stem))
        if toks & FOV_TOKENS:
            fovs.append(f)
        elif toks & MASK_TOKENS:
            msks.append(f)
        else:
            imgs.append(f)
    return imgs, msks, fovs


def _names(paths, limit: int = 5) -> str:
    paths = list(paths)
    shown = ", ".join(p.name for p in paths[:limit])
    return shown + (f" ... and {len(paths) - limit} more" if len(paths) > limit else "")


def _read_groups_csv(path: Path) -> dict[str, str]:
    if not path.is_file():
        raise DataError("groups CSV not found", path=path)
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            reader = csv.DictReader(f)
            fields = {(n or "").strip().lower(): n for n in (reader.fieldnames or [])}
            if "file" not in fields or "group" not in fields:
                raise DataError(
                    f"groups CSV needs the columns 'file' and 'group' (found: {', '.join(fields) or 'none'})",
                    path=path,
                    hint="first line: file,group  then one line per image: 21_training.tif,patient07",
                )
            mapping: dict[str, str] = {}
            for row in reader:
                name = (row.get(fields["file"]) or "").strip()
                group = (row.get(fields["group"]) or "").strip()
                if not name:
                    continue
                if not group:
                    raise DataError(f"line {reader.line_num}: empty group for '{name}'", path=path)
                mapping[Path(name).name] = group
    except UnicodeDecodeError as e:
        raise DataError(f"cannot read groups CSV: {e}", path=path, hint="save it as UTF-8 text") from None
    return mapping


def _assign_groups(
    root: Path,
    images: dict[str, Path],
    group_pattern: str | None,
    groups_csv: str | Path | None,
) -> dict[str, str]:
    if group_pattern is not None and groups_csv is not None:
        raise ConfigError("give either a group pattern or a groups CSV, not both")
    if group_pattern is not None:
        fn = _pattern_key_fn(group_pattern, "group pattern", "group")
        return {k: fn(p) for k, p in images.items()}
    if groups_csv is not None:
        csv_path = Path(groups_csv)
        if not csv_path.is_absolute() and not csv_path.is_file() and (root / csv_path).is_file():
            csv_path = root / csv_path
        mapping = _read_groups_csv(csv_path)
        by_stem: dict[str, str] = {Path(n).stem: g for n, g in mapping.items()}
        out: dict[str, str] = {}
        for k, p in images.items():
            g = mapping.get(p.name, by_stem.get(p.stem))
            if g is None:
                raise DataError(
                    f"image '{p.name}' is not listed in the groups CSV {csv_path}",
                    path=p,
                    hint=f"add a line '{p.name},<group>' to {csv_path.name}",
                )
            out[k] = g
        return out
    # auto-detect a patient id shared by every image name
    matches = {k: _AUTO_GROUP.search(p.stem) for k, p in images.items()}
    if images and all(m is not None for m in matches.values()):
        out = {k: m.group(0).lower() for k, m in matches.items()}  # type: ignore[union-attr]
        n_groups = len(set(out.values()))
        (log.info if n_groups < len(out) else log.debug)(
            "grouping slices by patient id found in the file names: %d images in %d groups",
            len(out), n_groups,
        )
        return out
    return {k: k for k in images}


def discover_cases(
    root: str | Path,
    *,
    images: str | Path | None = None,
    masks: str | Path | None = None,
    fov: str | Path | None = None,
    pair_pattern: str | None = None,
    group_pattern: str | None = None,
    groups_csv: str | Path | None = None,
    require_masks: bool = True,
) -> list[Case2D]:
    """Find the 2D cases under ``root``, in image file name order.

    Raises :class:`DataError` naming the file(s) for: no images; an image
    without a mask (when ``require_masks``); a mask without an image; two
    images with the same key. A FOV file without an image is only warned about.
    """
    layout = find_layout(root, images, masks, fov)
    root = layout.root

    if layout.flat:
        image_files, mask_files, fov_files = _classify_flat(list_image_files(layout.images))
    else:
        image_files = list_image_files(layout.images)
        mask_files = list_image_files(layout.masks) if layout.masks is not None else []
        fov_files = []
    if layout.fov is not None:
        fov_files = fov_files + list_image_files(layout.fov)

    if not image_files:
        subfolders = layout.images == root and any(p.is_dir() for p in root.iterdir())
        raise DataError(
            f"no images found (contents: {_brief_listing(layout.images)})",
            path=layout.images,
            hint=(
                "point medseg at the folder that holds the images (or its images/ + labels/ subfolders), "
                "or name the folders with --images and --masks"
                if subfolders
                else f"put the images ({', '.join(IMAGE_SUFFIXES)}) in this folder, or name it with --images"
            ),
        )

    if pair_pattern is not None:
        pattern_fn = _pattern_key_fn(pair_pattern, "pair pattern", "key")
        image_key = mask_key = pattern_fn
    else:
        def image_key(p: Path) -> str:
            return pairing_key(p.stem, is_mask=False)

        def mask_key(p: Path) -> str:
            return pairing_key(p.stem, is_mask=True)

    by_key: dict[str, Path] = {}
    for p in image_files:
        k = image_key(p)
        if k in by_key:
            raise DataError(
                f"two images have the same pairing key '{k}': {by_key[k].name} and {p.name}",
                path=p,
                hint="rename one of them, or give --pair-pattern with a (?P<key>...) group that tells them apart",
            )
        by_key[k] = p

    masks_by_key: dict[str, list[Path]] = {}
    for p in mask_files:
        masks_by_key.setdefault(mask_key(p), []).append(p)

    if require_masks:
        if not mask_files:
            where = layout.masks if layout.masks is not None else root
            raise DataError(
                "no mask files found" + ("" if layout.masks is not None else
                                         f" (no label folder such as labels/ or masks/; contents: {_brief_listing(root)})"),
                path=where,
                hint="name the label folder with --masks, or put masks named like <image>_mask.png beside the images",
            )
        missing = [p for k, p in by_key.items() if k not in masks_by_key]
        if missing:
            orphans = [m for k, ms in masks_by_key.items() if k not in by_key for m in ms]
            extra = f"; masks without an image: {_names(orphans)}" if orphans else ""
            raise DataError(
                f"no mask found for image '{missing[0].name}' "
                f"({len(missing)} of {len(by_key)} images without a mask: {_names(missing)}{extra})",
                path=missing[0],
                hint="images and masks are paired by name (e.g. 21_training.tif <-> 21_manual1.gif); "
                "give --pair-pattern with a (?P<key>...) group if your names differ, or --masks for the label folder",
            )

    orphans = [m for k, ms in masks_by_key.items() if k not in by_key for m in ms]
    if orphans:
        raise DataError(
            f"mask '{orphans[0].name}' has no matching image ({len(orphans)} mask(s) without an image: {_names(orphans)})",
            path=orphans[0],
            hint="remove the stray mask, add its image, or give --pair-pattern if names differ",
        )

    fov_by_key: dict[str, Path] = {}
    stray_fov: list[Path] = []
    for p in fov_files:
        if pair_pattern is not None:
            try:
                k = mask_key(p)
            except DataError:
                stray_fov.append(p)
                continue
        else:
            k = mask_key(p)
        if k not in by_key:
            stray_fov.append(p)
            continue
        if k in fov_by_key:
            raise DataError(
                f"two FOV masks for image '{by_key[k].name}': {fov_by_key[k].name} and {p.name}",
                path=p,
                hint="keep one FOV mask per image",
            )
        fov_by_key[k] = p
    if stray_fov:
        log.warning("%d FOV mask(s) with no matching image, ignored: %s", len(stray_fov), _names(stray_fov))

    groups = _assign_groups(root, by_key, group_pattern, groups_csv)

    cases = [
        Case2D(
            key=k,
            image=p,
            masks=tuple(sorted(masks_by_key.get(k, []), key=lambda m: m.name)),
            fov=fov_by_key.get(k),
            group=groups[k],
        )
        for k, p in by_key.items()
    ]
    log.info(
        "found %d cases in %s (%d with masks, %d with FOV)",
        len(cases), root, sum(1 for c in cases if c.masks), sum(1 for c in cases if c.fov),
    )
    return cases
