"""Finding 2D cases in a folder tree: which file is an image, which are its masks, whose patient it is.

A *case* is one image, the label file(s) drawn on it, an optional field-of-view
(FOV) mask and a group (patient) id that keeps slices of one patient in the same
split subset.

Layouts understood, in any folder of the tree (see :func:`find_layouts`):

- subfolders named by role, e.g. ``images/`` + ``labels/`` (or ``masks/``, ``gt/``,
  ``1st_manual/`` ...) + optional ``fov/``; the DRIVE layout ``images/`` + ``1st_manual/`` +
  ``mask/`` is read with ``mask/`` as the FOV. The role folders may hold subfolders
  (``images/<patient>/a.png`` pairs with ``masks/<patient>/a.png``);
- a flat folder where a file is a mask when a word of its name is a mask role word
  (``case1.png`` + ``case1_mask.png`` + ``case1_mask_1.png``), and a FOV when a word is ``fov``/``roi``;
- a folder of such folders, to any depth (``DATA/<patient>/<patient>_<n>.tif`` beside
  ``<patient>_<n>_mask.tif``): a folder without images of its own is searched below;
- images only (``require_masks=False``): unlabelled cases for prediction.

Images and masks are paired by name, never by sorted position (:mod:`medseg.data.naming`):
the same key once role words are dropped (``21_training.tif`` <-> ``21_manual1.gif``), else
the image whose name is the longest prefix of the mask's (``01.jpg`` <-> ``01_1stObs.png``),
or ``--pair-pattern``. Groups: :mod:`medseg.data.grouping`.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from medseg.data.files import IMAGE_SUFFIXES, brief_listing, has_images, list_image_files, names_of, visible
from medseg.data.grouping import Grouping, assign_groups
from medseg.data.naming import file_role, pairing_key, pattern_key_fn, prefix_pairs, tokens
from medseg.logs import info_once
from medseg.errors import DataError

log = logging.getLogger(__name__)

#: subfolder names (lower case) that hold images, in priority order
IMAGE_DIR_NAMES = ("images", "image", "imgs", "img", "scans", "inputs", "input", "x")
#: subfolder names (lower case) that hold label masks, in priority order
LABEL_DIR_NAMES = (
    "labels", "label", "1st_manual", "manual", "gt", "groundtruth", "ground_truth", "annotations",
    "segmentations", "segmentation", "masks", "mask", "y",
)
#: subfolder names (lower case) that hold field-of-view masks
FOV_DIR_NAMES = ("fov", "roi")

#: how deep below the dataset folder cases are looked for
MAX_DEPTH = 8

PAIRING_METHODS = ("same name", "role words", "name prefix", "pattern")
#: folder names that hold one subset of an official split
SUBSET_FOLDERS = {"train": ("train", "training", "trainval"), "val": ("val", "valid", "validation"),
                  "test": ("test", "testing")}


@dataclass(frozen=True)
class Case2D:
    """One 2D image with its label file(s), optional FOV and group id."""

    key: str  #: pairing key, e.g. ``"21"``
    image: Path
    masks: tuple[Path, ...]  #: label files for this image (merged later); ``()`` when unlabelled
    fov: Path | None = None  #: field-of-view mask, optional
    group: str | None = None  #: patient/case id for a group-aware split
    subset: str | None = None  #: ``train``/``val``/``test`` when the case lies in a folder named so (an official split)


@dataclass(frozen=True)
class Layout2D:
    """Where the images, masks and FOV masks of one folder are.

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


@dataclass
class Discovery:
    """The cases of a dataset folder and how they were found (for ``medseg inspect``)."""

    root: Path
    cases: list[Case2D]
    layouts: list[Layout2D]
    grouping: Grouping
    pairing: dict[str, int] = field(default_factory=dict)          #: method -> number of images paired so
    examples: dict[str, list[str]] = field(default_factory=dict)   #: method -> up to 3 "image <- masks"

    def summary(self) -> dict:
        rel = [str(lay.root.relative_to(self.root)) if lay.root != self.root else "." for lay in self.layouts]
        subsets = {s: sum(c.subset == s for c in self.cases) for s in SUBSET_FOLDERS}
        return {"folders": len(self.layouts), "folder_examples": rel[:3], "pairing": dict(self.pairing),
                "pairing_examples": {k: v for k, v in self.examples.items()}, "groups": self.grouping.summary(),
                "subsets_from_folders": {s: n for s, n in subsets.items() if n}}


# --------------------------------------------------------------------------- files


def _resolve_dir(root: Path, value: str | Path, what: str) -> Path:
    p = Path(value)
    if not p.is_absolute():
        p = root / p
    if not p.is_dir():
        raise DataError(f"{what} folder not found", path=p, hint=f"give the {what} folder relative to {root} or as an absolute path")
    return p


def find_layout(root: str | Path, images: str | Path | None = None, masks: str | Path | None = None,
                fov: str | Path | None = None) -> Layout2D:
    """Find the image, label and FOV folders of the one folder ``root``.

    Explicit folders (relative to ``root`` or absolute) override detection. Subfolders are
    recognised by name, case-insensitively (see :data:`IMAGE_DIR_NAMES`, :data:`LABEL_DIR_NAMES`,
    :data:`FOV_DIR_NAMES`), or by a role word in a longer name when one folder alone has it
    (``Tissue_Images/`` + ``Binary_masks/``); a ``mask``/``masks`` folder is the FOV when another label folder was
    chosen (DRIVE). Without an image subfolder the images are in ``root`` itself; when no label
    folder exists but the image folder holds mask-named files, the folder is flat (``masks == images``).
    """
    root = Path(root)
    if not root.is_dir():
        raise DataError("dataset folder not found" if not root.exists() else "not a folder", path=root)
    subdirs: dict[str, Path] = {}
    for p in sorted(root.iterdir(), key=lambda p: p.name):
        if p.is_dir() and not p.name.startswith("."):
            subdirs.setdefault(p.name.lower(), p)

    def first(names, exclude=(), exact_only=False) -> Path | None:
        exact = next((subdirs[n] for n in names if n in subdirs and subdirs[n] not in exclude), None)
        if exact is not None or exact_only:
            return exact
        # a name with a role word among others (Tissue_Images/, Binary_masks/), when only one folder has it
        words = {n for n in names if len(n) > 2}
        hits = [p for n, p in subdirs.items() if p not in exclude and (set(tokens(n)) & words or re.sub(r"[\W_]+", "", n) in words)]
        return hits[0] if len(hits) == 1 else None

    images_dir = _resolve_dir(root, images, "images") if images is not None else (first(IMAGE_DIR_NAMES) or root)
    if masks is not None:
        masks_dir: Path | None = _resolve_dir(root, masks, "masks")
    else:
        masks_dir = first(LABEL_DIR_NAMES, exclude=(images_dir,))
        if masks_dir is None and images_dir.is_dir() and any(
                file_role(p.stem) != "image" for p in list_image_files(images_dir, recursive=images_dir != root, warn=False)):
            masks_dir = images_dir
    if fov is not None:
        fov_dir: Path | None = _resolve_dir(root, fov, "FOV")
    else:
        taken = tuple(p for p in (images_dir, masks_dir) if p is not None)
        fov_dir = first(FOV_DIR_NAMES, exclude=taken)
        if fov_dir is None and masks_dir is not None:
            fov_dir = first(("mask", "masks"), exclude=taken, exact_only=True)  # not masks_color/ beside masks/
    return Layout2D(root=root, images=images_dir, masks=masks_dir, fov=fov_dir)


def find_layouts(root: str | Path, images: str | Path | None = None, masks: str | Path | None = None,
                 fov: str | Path | None = None) -> list[Layout2D]:
    """The folders of the tree under ``root`` that hold cases, each with its layout.

    A folder with role subfolders (``images/`` + ``masks/``) or with images of its own is one
    layout; a folder with neither is searched below (to :data:`MAX_DEPTH` levels), so a folder of
    patient folders is found. Explicit folders make ``root`` the only layout.
    """
    root = Path(root)
    top = find_layout(root, images, masks, fov)
    if images is not None or masks is not None or fov is not None:
        return [top]

    def walk(layout: Layout2D, depth: int) -> list[Layout2D]:
        folder = layout.root
        if layout.images != folder or (layout.masks is not None and layout.masks != folder) or has_images(folder):
            return [layout]
        if depth >= MAX_DEPTH:
            return []
        found: list[Layout2D] = []
        for sub in sorted(folder.iterdir(), key=lambda p: p.name):
            if sub.is_dir() and visible(sub):
                found += walk(find_layout(sub), depth + 1)
        return found

    return walk(top, 0) or [top]


# --------------------------------------------------------------------------- pairing


@dataclass
class _Files:
    """The image, mask and FOV files of one pairing scope (a folder), before pairing."""

    folder: Path                       #: relative to the dataset root, role folders removed
    images: list[Path] = field(default_factory=list)
    masks: list[Path] = field(default_factory=list)
    fovs: list[Path] = field(default_factory=list)


def _scopes(layout: Layout2D, root: Path) -> list[_Files]:
    """The files of ``layout`` grouped by the folder they pair within."""
    base = layout.root.relative_to(root) if layout.root != root and layout.root.is_relative_to(root) else Path()
    scopes: dict[Path, _Files] = {}

    def add(files: list[Path], top: Path, kind: str | None) -> None:
        for f in files:
            rel = f.parent.relative_to(top) if f.parent.is_relative_to(top) else Path()
            entry = scopes.setdefault(rel, _Files(base / rel))
            role = kind or file_role(f.stem)
            (entry.images if role == "image" else entry.masks if role == "mask" else entry.fovs).append(f)

    nested = layout.images != layout.root
    add(list_image_files(layout.images, recursive=nested), layout.images, None if layout.flat else "image")
    if layout.masks is not None and not layout.flat:
        add(list_image_files(layout.masks, recursive=layout.masks != layout.root), layout.masks, "mask")
        # images/<sub>/ pairs with masks/<sub>/; a subfolder the mask folder lacks (thumbnails, previews) is left out
        lone = sorted(rel for rel, entry in scopes.items() if rel != Path() and entry.images and not entry.masks
                      and not (layout.masks / rel).is_dir())
        for rel in lone:
            log.warning("%s: %d image(s) in a subfolder with no counterpart in %s, left out", layout.images / rel,
                        len(scopes[rel].images), layout.masks)
            del scopes[rel]
    if layout.fov is not None:
        add(list_image_files(layout.fov, recursive=True), layout.fov, "fov")
    return [scopes[k] for k in sorted(scopes)]


@dataclass
class _Paired:
    """The cases of one scope: images, masks and FOVs by key, how each image was paired, and leftovers."""

    images: dict[str, Path]
    masks: dict[str, list[Path]]
    methods: dict[str, str]
    fovs: dict[str, Path]
    orphans: list[Path]   #: masks without an image
    stray: list[Path]     #: FOV masks without an image


def _pair_scope(files: _Files, key_of: Callable[[Path, bool], str], by_pattern: bool) -> _Paired:
    """Pair the files of one scope by key (role words dropped, or ``--pair-pattern``), then the
    masks left over by name prefix (:func:`~medseg.data.naming.prefix_pairs`)."""
    by_key: dict[str, Path] = {}
    for p in files.images:
        k = key_of(p, False)
        if k in by_key:
            raise DataError(
                f"two images have the same pairing key '{k}': {by_key[k].name} and {p.name}",
                path=p, hint="rename one of them, or give --pair-pattern with a (?P<key>...) group that tells them apart")
        by_key[k] = p
    masks: dict[str, list[Path]] = {}
    for p in files.masks:
        masks.setdefault(key_of(p, True), []).append(p)
    methods = {k: "pattern" if by_pattern else
               "same name" if all(m.stem.lower() == by_key[k].stem.lower() for m in masks[k]) else "role words"
               for k in by_key if k in masks}
    orphans = [m for k, ms in masks.items() if k not in by_key for m in ms]
    if orphans and not by_pattern:
        key_by_image = {p: k for k, p in by_key.items()}
        paired, orphans = prefix_pairs([p for k, p in by_key.items() if k not in masks], orphans)
        for image, ms in paired.items():
            masks[key_by_image[image]] = ms
            methods[key_by_image[image]] = "name prefix"
    fovs: dict[str, Path] = {}
    stray: list[Path] = []
    keyed: list[tuple[str, Path]] = []
    for p in files.fovs:
        try:
            keyed.append((key_of(p, True), p))
        except DataError:
            stray.append(p)
    unmatched = [p for k, p in keyed if k not in by_key]
    if unmatched and not by_pattern:  # a FOV named like its image plus a word
        key_by_image = {p: k for k, p in by_key.items()}
        paired, _ = prefix_pairs(list(by_key.values()), unmatched)
        by_fov = {f: key_by_image[img] for img, fs in paired.items() for f in fs}
        keyed = [(by_fov.get(p, k), p) for k, p in keyed]
    for k, p in keyed:
        if k not in by_key:
            stray.append(p)
        elif k in fovs:
            raise DataError(f"two FOV masks for image '{by_key[k].name}': {fovs[k].name} and {p.name}",
                            path=p, hint="keep one FOV mask per image")
        else:
            fovs[k] = p
    return _Paired(by_key, masks, methods, fovs, orphans, stray)


# --------------------------------------------------------------------------- cases


def discover(root: str | Path, *, images: str | Path | None = None, masks: str | Path | None = None,
             fov: str | Path | None = None, pair_pattern: str | None = None, group_pattern: str | None = None,
             groups_csv: str | Path | None = None, require_masks: bool = True) -> Discovery:
    """Find the 2D cases under ``root`` (in path order) and say how they were paired and grouped.

    Raises :class:`DataError` naming the file(s) for: no images; an image without a mask (when
    ``require_masks``); a mask without an image; two images with the same key; an ambiguous
    prefix pairing. A FOV file without an image is only warned about.
    """
    root = Path(root)
    layouts = find_layouts(root, images, masks, fov)
    pattern_fn = pattern_key_fn(pair_pattern, "pair pattern", "key") if pair_pattern is not None else None

    def key_of(p: Path, is_mask: bool) -> str:
        return pattern_fn(p) if pattern_fn is not None else pairing_key(p.stem, is_mask)

    counts: dict[str, int] = {}
    examples: dict[str, list[str]] = {}
    cases: list[tuple[str, Path, tuple[Path, ...], Path | None, Path]] = []
    orphans: list[Path] = []
    stray: list[Path] = []
    any_masks = False
    for layout in layouts:
        for files in _scopes(layout, root):
            any_masks = any_masks or bool(files.masks)
            found = _pair_scope(files, key_of, pattern_fn is not None)
            orphans += found.orphans
            stray += found.stray
            for k, p in found.images.items():
                ms = tuple(sorted(found.masks.get(k, []), key=lambda m: m.name))
                cases.append((k, p, ms, found.fovs.get(k), files.folder))
                if ms:
                    method = found.methods[k]
                    counts[method] = counts.get(method, 0) + 1
                    if len(examples.setdefault(method, [])) < 3:
                        examples[method].append(f"{p.name} <- {', '.join(m.name for m in ms)}")

    if not cases:
        where = layouts[0].images
        sub = any(p.is_dir() for p in root.iterdir())
        raise DataError(
            f"no images found (contents: {brief_listing(where)})", path=where,
            hint=("point medseg at the folder that holds the images (or its images/ + labels/ subfolders), "
                  "or name the folders with --images and --masks" if sub and where == root
                  else f"put the images ({', '.join(IMAGE_SUFFIXES)}) in this folder, or name it with --images"))
    if require_masks and not any_masks:
        where = layouts[0].masks or root
        raise DataError(
            "no mask files found" + ("" if layouts[0].masks is not None else
                                     f" (no label folder such as labels/ or masks/; contents: {brief_listing(root)})"),
            path=where, hint="name the label folder with --masks, or put masks named like <image>_mask.png beside the images")
    missing = [p for _, p, ms, _, _ in cases if not ms]
    if require_masks and missing:
        extra = f"; masks without an image: {names_of(orphans)}" if orphans else ""
        raise DataError(
            f"no mask found for image '{missing[0].name}' "
            f"({len(missing)} of {len(cases)} images without a mask: {names_of(missing)}{extra})",
            path=missing[0],
            hint="images and masks are paired by name (e.g. 21_training.tif <-> 21_manual1.gif, or 01.jpg <-> 01_1stObs.png); "
            "give --pair-pattern with a (?P<key>...) group if your names differ, or --masks for the label folder")
    if orphans:
        raise DataError(f"mask '{orphans[0].name}' has no matching image ({len(orphans)} mask(s) without an image: "
                        f"{names_of(orphans)})", path=orphans[0],
                        hint="remove the stray mask, add its image, or give --pair-pattern if names differ; images in "
                        "subfolders pair only with masks in subfolders of the same name")
    if stray:
        log.warning("%d FOV mask(s) with no matching image, ignored: %s", len(stray), names_of(stray))

    keys = _unique_keys([(k, folder, p) for k, p, _, _, folder in cases])
    grouping = assign_groups(root, {k: c[1] for k, c in zip(keys, cases)}, {k: c[4] for k, c in zip(keys, cases)},
                             group_pattern, groups_csv)
    out = [Case2D(key=k, image=p, masks=ms, fov=f, group=grouping.groups[k], subset=folder_subset(folder))
           for k, (_, p, ms, f, folder) in zip(keys, cases)]
    info_once(log, "found %d cases in %s (%d with masks, %d with FOV%s)", len(out), root, sum(1 for c in out if c.masks),
             sum(1 for c in out if c.fov), f", in {len(layouts)} folders" if len(layouts) > 1 else "")
    return Discovery(root, out, layouts, grouping, counts, examples)


def _unique_keys(keys: list[tuple[str, Path, Path]]) -> list[str]:
    """Case keys, qualified by their folder (``<folder>_<key>``) where a key recurs in several folders;
    ``keys`` holds ``(key, folder, image file)``."""
    seen: dict[str, int] = {}
    for k, _, _ in keys:
        seen[k] = seen.get(k, 0) + 1
    out = [("_".join([*folder.parts, k]).lower() if seen[k] > 1 and folder.parts else k) for k, folder, _ in keys]
    first: dict[str, Path] = {}
    for key, (_, _, image) in zip(out, keys):
        if key in first:
            raise DataError(f"two images have the same case key '{key}': {first[key]} and {image}", path=image,
                            hint="rename one of them, or give --pair-pattern with a (?P<key>...) group that tells them apart")
        first[key] = image
    return out


def folder_subset(folder: Path) -> str | None:
    """``train``/``val``/``test`` when a part of ``folder`` names a subset of an official split (``training/``,
    ``testing/``...), else ``None``."""
    for part in folder.parts:
        word = part.lower()
        for subset, names in SUBSET_FOLDERS.items():
            if word in names:
                return subset
    return None


def discover_cases(root: str | Path, **options) -> list[Case2D]:
    """The cases of :func:`discover` (same options)."""
    return discover(root, **options).cases
