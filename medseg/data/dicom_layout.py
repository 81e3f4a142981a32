"""A dataset of DICOM series with DICOM SEG label files (the fourth 3D layout).

Any folder tree, without ``dataset.json`` or an ``images/`` folder, that holds DICOM SEG files: every file's
header is read (no pixels), the image series are grouped by Series Instance UID, and each SEG is matched to
the series its Referenced Series Sequence names. A case is one labelled series: its image is the folder that
holds it (one image series per folder), its label the SEG. The segments become the classes, by their labels:
a label must carry the same segment number in every SEG (the number is the label value), or the dataset is
refused naming both files. Series without a SEG are unlabelled cases; a SEG whose series is not in the
folder, or two SEGs of one series, are errors naming the files.
"""

from __future__ import annotations

import logging
from pathlib import Path

from medseg.data.volume_case import VolumeCase
from medseg.errors import DataError
from medseg.io.dicom_choice import NON_IMAGE_MODALITIES
from medseg.io.dicom_seg_read import is_seg_file, seg_header

log = logging.getLogger(__name__)


def has_seg_files(root: Path) -> bool:
    """Whether the tree under ``root`` holds a DICOM SEG (every file's first bytes and SOP class are looked at)."""
    return any(is_seg_file(q) for q in sorted(root.rglob("*")) if q.is_file() and not q.name.startswith("."))


def discover_dicom_seg(root: Path, require_labels: bool) -> tuple[list[VolumeCase], dict]:
    """The cases and dataset info of a DICOM + SEG tree (see the module doc)."""
    from medseg.io.dicom_seg_read import _pydicom

    pydicom = _pydicom()
    series_folders: dict[str, set[Path]] = {}
    folder_series: dict[Path, set[str]] = {}
    modalities: set[str] = set()
    segs: list[Path] = []
    for p in sorted(q for q in root.rglob("*") if q.is_file() and not q.name.startswith(".")):
        if is_seg_file(p):
            segs.append(p)
            continue
        try:
            ds = pydicom.dcmread(p, stop_before_pixels=True, specific_tags=["SeriesInstanceUID", "Modality"])
        except Exception:  # noqa: BLE001 - not DICOM: not part of the dataset
            continue
        if "SeriesInstanceUID" not in ds or str(ds.get("Modality", "")).upper() in NON_IMAGE_MODALITIES:
            continue
        uid = str(ds.SeriesInstanceUID)
        modalities.add(str(ds.get("Modality", "")).upper())
        series_folders.setdefault(uid, set()).add(p.parent)
        folder_series.setdefault(p.parent, set()).add(uid)
    for folder, uids in folder_series.items():
        if len(uids) > 1:
            raise DataError(f"a folder of this DICOM + SEG dataset holds {len(uids)} image series", path=folder,
                            hint="give each series its own folder (each is one case)")
    for uid, folders in series_folders.items():
        if len(folders) > 1:
            raise DataError(f"series {uid} is split over several folders: {', '.join(sorted(str(f) for f in folders))}",
                            path=sorted(folders)[0], hint="keep each series in one folder")
    label_of: dict[str, Path] = {}
    names: dict[int, tuple[str, Path]] = {}
    for seg in segs:
        uid, segments = seg_header(seg)
        if uid not in series_folders:
            raise DataError(f"this SEG segments series {uid}, which is not in the dataset folder", path=seg,
                            hint="add the series, or remove the SEG")
        if uid in label_of:
            raise DataError(f"two SEGs of series {uid}: {label_of[uid].name} and {seg.name}", path=seg,
                            hint="keep one label file per series")
        label_of[uid] = seg
        number_of = {n.lower(): k for k, (n, _) in names.items()}  # from the earlier SEGs only
        for number, name in segments.items():
            seen = names.get(number)
            if seen is not None and seen[0].lower() != name.lower():
                raise DataError(f"segment {number} is '{seen[0]}' in {seen[1].name} but '{name}' in {seg.name}: the segment "
                                "numbers are the label values and must mean one structure across the dataset", path=seg,
                                hint="renumber the segments consistently when exporting the SEGs")
            if number_of.get(name.lower(), number) != number:
                first = names[number_of[name.lower()]][1]
                raise DataError(f"segment '{name}' is number {number} in {seg.name} but {number_of[name.lower()]} in "
                                f"{first.name}", path=seg, hint="renumber the segments consistently when exporting the SEGs")
        for number, name in segments.items():
            names.setdefault(number, (name, seg))
    cases = []
    for uid, folders in sorted(series_folders.items(), key=lambda kv: str(sorted(kv[1])[0])):
        folder = next(iter(folders))
        label = label_of.get(uid)
        if label is None and require_labels:
            continue  # an image series without a SEG (a localizer, an unlabelled scan): not a training case
        key = "_".join(folder.relative_to(root).parts) or folder.name
        cases.append(VolumeCase(key, (folder,), label, tuple([0] + sorted(names)), 1))
    skipped = len(series_folders) - len(cases)
    if skipped:
        log.info("%s: %d image series without a SEG left out", root, skipped)
    labels = {0: "background", **{n: name for n, (name, _) in sorted(names.items())}}
    info = {"layout": "dicom-seg", "root": str(root), "name": root.name, "labels": labels, "channel_names": [modalities.pop() if len(modalities) == 1 else "channel_0"],
            "num_channels": 1, "modality": {}, "file_ending": None}
    return cases, info
