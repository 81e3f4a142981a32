"""3D dataset layouts: find the cases (image channels + label) of a dataset folder.

Four layouts are recognised, in this order:

1. **Medical Segmentation Decathlon** (``dataset.json`` with a ``"training"`` list
   of ``{"image", "label"}``, ``"labels"`` value->name, ``"modality"``). A
   multi-modal MSD image is one 4D file whose 4th axis holds the channels. The
   nnU-Net v1 variant (listed ``X.nii.gz`` stored as ``X_0000.nii.gz`` ...) is
   accepted too.
2. **nnU-Net v2 raw** (``dataset.json`` with ``"channel_names"``, ``"labels"``
   name->value, ``"file_ending"``; ``imagesTr/CASE_0000<ending>`` one file per
   channel, ``labelsTr/CASE<ending>``; an explicit ``"dataset"`` mapping is
   honoured).
3. **Plain folders** without ``dataset.json``: ``images/`` (or ``imagesTr/``) and
   ``labels/`` (or ``labelsTr/``), matched by name after stripping the format
   ending (``.nii.gz`` counts as one). Entries may be volume files or DICOM series
   folders. If every image name ends in ``_0000``-style channel numbers (and
   no label carries the same name), files are grouped into channels as in nnU-Net.

4. **DICOM series with DICOM SEG labels** (no ``dataset.json``, no ``images/``): see
   :mod:`medseg.data.dicom_layout`.

Hidden files (``.DS_Store``, macOS ``._*`` copies) are ignored everywhere.
``dataset_info["labels"]`` is always ``{value (int): name}``; it is ``None`` for
plain folders (then only "integer and >= 0" is checked).
"""

from __future__ import annotations

import logging
import re
from pathlib import Path


from medseg.data.dicom_layout import discover_dicom_seg, has_seg_files
from medseg.data.volume_case import VolumeCase
from medseg.errors import DataError
from medseg.io.base import file_suffix
from medseg.io.json_file import read_json_object
from medseg.io.volume import VOLUME_SUFFIXES

logger = logging.getLogger(__name__)

_CHANNEL_RE = re.compile(r"^(?P<case>.+)_(?P<channel>\d{4})$")


# --------------------------------------------------------------------------- helpers


def _strip_suffix(name: str) -> str:
    suffix = file_suffix(name)
    return name[: len(name) - len(suffix)] if suffix else name


def _visible(p: Path) -> bool:
    return not p.name.startswith(".")


def _resolve(root: Path, rel: str) -> Path:
    p = Path(rel)
    return p if p.is_absolute() else root / p


def _check_unique(cases: list[VolumeCase], where: Path) -> None:
    seen: dict[str, VolumeCase] = {}
    for c in cases:
        if c.key in seen:
            raise DataError(
                f"two cases share the name '{c.key}': {seen[c.key].images[0].name} and {c.images[0].name}",
                path=c.images[0],
                hint="rename or remove one of them (the same name with two formats?)",
            )
        seen[c.key] = c


def _labels_msd(raw, path: Path) -> dict[int, str] | None:
    if raw is None:
        return None
    try:
        return {int(k): str(v) for k, v in raw.items()}
    except (AttributeError, ValueError, TypeError):
        raise DataError(
            '"labels" must map label values to names, e.g. {"0": "background", "1": "liver"}', path=path
        ) from None


def _labels_nnunet(raw, path: Path) -> dict[int, str] | None:
    if raw is None:
        return None
    out: dict[int, str] = {}
    if not isinstance(raw, dict):
        raise DataError('"labels" must map names to values, e.g. {"background": 0, "liver": 1}', path=path)
    for name, value in raw.items():
        if isinstance(value, (list, tuple)):
            raise DataError(
                f'label "{name}" is a region (a list of values): region-based training is not supported',
                path=path,
                hint="give each label a single integer value",
            )
        try:
            out[int(value)] = str(name)
        except (ValueError, TypeError):
            raise DataError(f'label "{name}" has a non-integer value {value!r}', path=path) from None
    return out


def _channel_names(raw, path: Path) -> list[str]:
    if not raw:
        return []
    try:
        return [str(raw[k]) for k in sorted(raw, key=int)]
    except (ValueError, TypeError):
        raise DataError('channel keys must be "0", "1", ...', path=path) from None


# --------------------------------------------------------------------------- discovery


def discover_volume_cases(root: str | Path, *, require_labels: bool = True) -> tuple[list[VolumeCase], dict]:
    """Find the cases of a 3D dataset folder; return ``(cases, dataset_info)``.

    ``dataset_info`` has ``layout`` ("msd", "nnunet", "folders"), ``root``,
    ``name``, ``labels`` (``{int: name}`` or ``None``), ``channel_names``,
    ``num_channels``, ``modality`` (the raw channel dict from ``dataset.json``)
    and ``file_ending``. Cases are sorted by key. Raises :class:`DataError`
    naming the file for: a label without an image, an image without a label (when
    ``require_labels``), a missing channel file, or an empty folder.
    """
    root = Path(root)
    if not root.is_dir():
        raise DataError("dataset folder not found", path=root)
    js = root / "dataset.json"
    if js.is_file():
        meta = read_json_object(js)
        if isinstance(meta.get("training"), list):
            cases, info = _discover_msd(root, meta, js, require_labels)
        elif "channel_names" in meta or "file_ending" in meta:
            cases, info = _discover_nnunet(root, meta, js, require_labels)
        else:
            raise DataError(
                'dataset.json is neither Decathlon (a "training" list) nor nnU-Net v2 ("channel_names")',
                path=js,
                hint="see the dataset-layout section of the README",
            )
    elif not any((root / n).is_dir() for n in ("images", "imagesTr")) and has_seg_files(root):
        cases, info = discover_dicom_seg(root, require_labels)
    else:
        cases, info = _discover_folders(root, require_labels)
    if not cases:
        raise DataError("no cases found", path=root, hint="check the dataset layout (images and labels folders)")
    _check_unique(cases, root)
    cases.sort(key=lambda c: c.key)
    logger.info("%s: %d cases (%s layout, %d channel(s))", root, len(cases), info["layout"], info["num_channels"])
    return cases, info


def _discover_msd(root: Path, meta: dict, js: Path, require_labels: bool) -> tuple[list[VolumeCase], dict]:
    labels = _labels_msd(meta.get("labels"), js)
    modality = meta.get("modality") or {}
    names = _channel_names(modality, js) or ["0"]
    n_ch = len(names)
    values = tuple(sorted(labels)) if labels is not None else None
    cases = []
    if not meta["training"]:
        raise DataError('the "training" list is empty', path=js)
    for i, entry in enumerate(meta["training"]):
        if not isinstance(entry, dict) or "image" not in entry:
            raise DataError(f'training entry {i} has no "image"', path=js)
        image = _resolve(root, entry["image"])
        key = _strip_suffix(image.name)
        if image.exists():
            images = (image,)
        else:  # nnU-Net v1: the listed name, stored with _0000, _0001, ... channel suffixes
            ending = file_suffix(image.name)
            first = image.with_name(f"{key}_0000{ending}")
            if not first.exists():
                label_note = f" (its label {entry['label']} is listed)" if entry.get("label") else ""
                raise DataError(f"image listed in dataset.json not found{label_note}", path=image)
            images = tuple(image.with_name(f"{key}_{c:04d}{ending}") for c in range(n_ch))
            for p in images:
                if not p.exists():
                    raise DataError(f"missing channel file of case '{key}'", path=p)
        label = None
        if entry.get("label"):
            label = _resolve(root, entry["label"])
            if not label.exists():
                if require_labels:
                    raise DataError(f"label listed in dataset.json for case '{key}' not found", path=label)
                label = None
        elif require_labels:
            raise DataError(f'training entry for case \'{key}\' has no "label"', path=js)
        cases.append(VolumeCase(key, images, label, values, n_ch))
    n_declared = meta.get("numTraining")
    if isinstance(n_declared, int) and n_declared != len(cases):
        logger.warning("%s: numTraining is %d but %d cases are listed", js, n_declared, len(cases))
    info = {
        "layout": "msd",
        "root": str(root),
        "name": meta.get("name", root.name),
        "labels": labels,
        "channel_names": names,
        "num_channels": n_ch,
        "modality": modality,
        "file_ending": file_suffix(cases[0].images[0].name) if cases else None,
    }
    return cases, info


def _discover_nnunet(root: Path, meta: dict, js: Path, require_labels: bool) -> tuple[list[VolumeCase], dict]:
    labels = _labels_nnunet(meta.get("labels"), js)
    channels = meta.get("channel_names") or meta.get("modality") or {}
    names = _channel_names(channels, js) or ["0"]
    n_ch = len(names)
    ending = meta.get("file_ending", ".nii.gz")
    values = tuple(sorted(labels)) if labels is not None else None
    info = {
        "layout": "nnunet",
        "root": str(root),
        "name": meta.get("name", root.name),
        "labels": labels,
        "channel_names": names,
        "num_channels": n_ch,
        "modality": channels,
        "file_ending": ending,
    }
    if isinstance(meta.get("dataset"), dict):  # explicit file lists
        cases = []
        for key, entry in meta["dataset"].items():
            images = tuple(_resolve(root, p) for p in entry.get("images", []))
            if len(images) != n_ch:
                raise DataError(f"case '{key}' lists {len(images)} image(s) for {n_ch} channel(s)", path=js)
            for p in images:
                if not p.exists():
                    raise DataError(f"missing channel file of case '{key}'", path=p)
            label = _resolve(root, entry["label"]) if entry.get("label") else None
            if label is not None and not label.exists():
                if require_labels:
                    raise DataError(f"label of case '{key}' not found", path=label)
                label = None
            if label is None and require_labels:
                raise DataError(f"case '{key}' has no label", path=js)
            cases.append(VolumeCase(str(key), images, label, values, n_ch))
        return cases, info

    images_dir, labels_dir = root / "imagesTr", root / "labelsTr"
    if not images_dir.is_dir():
        raise DataError("imagesTr folder not found (nnU-Net raw layout)", path=images_dir)
    groups: dict[str, dict[int, Path]] = {}
    for p in sorted(filter(_visible, images_dir.iterdir())):
        if not p.name.endswith(ending):
            logger.warning("%s: ignored (not a %s file)", p, ending)
            continue
        m = _CHANNEL_RE.match(p.name[: -len(ending)])
        if m is None:
            raise DataError(
                "image name does not end in a 4-digit channel number",
                path=p,
                hint=f"nnU-Net names images CASE_0000{ending}, CASE_0001{ending}, ... (one per channel)",
            )
        ch = int(m["channel"])
        if ch >= n_ch:
            raise DataError(f"channel {ch} but dataset.json declares {n_ch} channel(s)", path=p)
        groups.setdefault(m["case"], {})[ch] = p
    if not groups:
        raise DataError(f"no {ending} images found", path=images_dir)
    label_files: dict[str, Path] = {}
    if labels_dir.is_dir():
        for p in sorted(filter(_visible, labels_dir.iterdir())):
            if p.name.endswith(ending):
                label_files[p.name[: -len(ending)]] = p
    for key, p in label_files.items():
        if key not in groups:
            raise DataError(
                f"label without image: no {key}_0000{ending} in imagesTr", path=p, hint="add the image or remove the label"
            )
    cases = []
    for key, chans in groups.items():
        for c in range(n_ch):
            if c not in chans:
                raise DataError(f"missing channel file of case '{key}'", path=images_dir / f"{key}_{c:04d}{ending}")
        label = label_files.get(key)
        if label is None and require_labels:
            raise DataError(
                f"image without label: case '{key}' has no label",
                path=labels_dir / f"{key}{ending}",
                hint="add the label, remove the case, or run without requiring labels",
            )
        cases.append(VolumeCase(key, tuple(chans[c] for c in range(n_ch)), label, values, n_ch))
    n_declared = meta.get("numTraining")
    if isinstance(n_declared, int) and n_declared != len(cases):
        logger.warning("%s: numTraining is %d but %d cases were found", js, n_declared, len(cases))
    return cases, info


def _entries(folder: Path) -> dict[str, Path]:
    """Volume files and DICOM folders in ``folder``, keyed by name without format ending."""
    out: dict[str, Path] = {}
    for p in sorted(filter(_visible, folder.iterdir())):
        if p.is_dir():
            key = p.name
        elif file_suffix(p) in VOLUME_SUFFIXES:
            key = _strip_suffix(p.name)
        else:
            if p.suffix.lower() not in (".raw", ".zraw"):  # MetaImage data files
                logger.warning("%s: ignored (not a volume file: %s)", p, ", ".join(VOLUME_SUFFIXES))
            continue
        if key in out:
            raise DataError(
                f"two files for the name '{key}': {out[key].name} and {p.name}",
                path=p,
                hint="keep one format per case",
            )
        out[key] = p
    return out


def _discover_folders(root: Path, require_labels: bool) -> tuple[list[VolumeCase], dict]:
    images_dir = next((root / n for n in ("images", "imagesTr") if (root / n).is_dir()), None)
    if images_dir is None:
        raise DataError(
            "no dataset found: expected dataset.json (Decathlon / nnU-Net) or an images/ folder",
            path=root,
            hint="put the volumes in images/ and the label maps (same names) in labels/",
        )
    labels_dir = next((root / n for n in ("labels", "labelsTr") if (root / n).is_dir()), None)
    images = _entries(images_dir)
    if not images:
        raise DataError("folder holds no volume files or DICOM folders", path=images_dir)
    labels = _entries(labels_dir) if labels_dir is not None else {}
    if require_labels and labels_dir is None:
        raise DataError("labels folder not found", path=root / "labels", hint="add labels/ or run without labels")

    grouped = all(_CHANNEL_RE.match(k) for k in images) and not any(k in labels for k in images)
    groups: dict[str, dict[int, Path]] = {}
    for k, p in images.items():
        if grouped:
            m = _CHANNEL_RE.match(k)
            groups.setdefault(m["case"], {})[int(m["channel"])] = p
        else:
            groups[k] = {0: p}
    n_ch = max(len(g) for g in groups.values())
    for key, chans in groups.items():
        for c in range(n_ch):
            if c not in chans:
                ref = next(iter(chans.values()))
                missing = ref.with_name(f"{key}_{c:04d}{file_suffix(ref.name)}")
                raise DataError(f"missing channel file of case '{key}'", path=missing)
    for key, p in labels.items():
        if key not in groups:
            raise DataError(f"label without image: no image named '{key}' in {images_dir.name}/", path=p)
    cases = []
    for key, chans in groups.items():
        label = labels.get(key)
        if label is None and require_labels:
            raise DataError(
                f"image without label: no label named '{key}' in {labels_dir.name}/",
                path=chans[0],
                hint="add the label (same name), remove the image, or run without requiring labels",
            )
        cases.append(VolumeCase(key, tuple(chans[c] for c in range(n_ch)), label, None, n_ch))
    info = {
        "layout": "folders",
        "root": str(root),
        "name": root.name,
        "labels": None,
        "channel_names": [f"channel_{c}" for c in range(n_ch)],
        "num_channels": n_ch,
        "modality": {},
        "file_ending": None,
    }
    return cases, info


# --------------------------------------------------------------------------- detection
