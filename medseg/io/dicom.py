"""DICOM series folders through SimpleITK (GDCM).

A folder holding the slice files of one series is read as one volume, with the
same ``(C, x, y, z)`` convention and ITK geometry as :mod:`medseg.io.volume`.
Only the folder itself is searched (not subfolders). When a folder holds
several series, the one named by its Series Instance UID is read, else the one
:mod:`medseg.io.dicom_choice` picks (the largest image series).

``write_dicom_series`` exports a 3D array as one file per slice, with image
position/orientation written from the geometry (oblique directions and
anisotropic spacing survive a round trip to DICOM's decimal-string precision).
"""

from __future__ import annotations

import datetime
import logging
import uuid
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from medseg.errors import DataError
from medseg.io.atomic import atomic_path
from medseg.io.base import Geometry, ImageData
from medseg.io.dicom_choice import choose_series
from medseg.io.volume import _itk_message, image_data_to_sitk, sitk_to_image_data
from medseg.io.volume_checks import MAX_COMPRESSION_RATIO, dicom_file_meta, read_information

logger = logging.getLogger(__name__)

# SOP classes for which GDCM writes image position/orientation (plain Secondary
# Capture would lose the geometry).
_SOP_CLASS = {
    "CT": "1.2.840.10008.5.1.4.1.1.2",
    "MR": "1.2.840.10008.5.1.4.1.1.4",
    "PT": "1.2.840.10008.5.1.4.1.1.128",
}
_SC_BYTE = "1.2.840.10008.5.1.4.1.1.7.2"  # Multi-frame Grayscale Byte Secondary Capture (uint8)
_SC_WORD = "1.2.840.10008.5.1.4.1.1.7.3"  # Multi-frame Grayscale Word Secondary Capture (uint16)


@dataclass(frozen=True)
class DicomSeriesInfo:
    uid: str
    files: tuple[Path, ...]
    description: str = ""
    modality: str = ""

    def describe(self) -> str:
        desc = f"'{self.description}', " if self.description else ""
        mod = f"{self.modality}, " if self.modality else ""
        return f"{self.uid} ({desc}{mod}{len(self.files)} slice file(s))"


def new_uid() -> str:
    """A new globally unique DICOM UID (UUID-derived, ``2.25.<uuid as integer>``)."""
    return f"2.25.{uuid.uuid4().int}"


def _header_tags(path: Path, tags: tuple[str, ...]) -> dict[str, str]:
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    reader.SetImageIO("GDCMImageIO")
    try:
        reader.ReadImageInformation()
    except RuntimeError:
        return {}
    return {t: reader.GetMetaData(t).strip() for t in tags if reader.HasMetaDataKey(t)}


def list_dicom_series(folder: str | Path) -> list[DicomSeriesInfo]:
    """The DICOM series directly inside ``folder`` (UID, slice files, description, modality)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError("not a folder (a DICOM series is read from the folder holding its slice files)", path=folder)
    for path in sorted(folder.iterdir()):  # GDCM scans every file: check what it would allocate for first
        if path.is_file():
            dicom_file_meta(path)
    try:
        uids = sitk.ImageSeriesReader.GetGDCMSeriesIDs(str(folder))
    except RuntimeError as e:
        raise DataError(f"cannot scan for DICOM files: {_itk_message(e)}", path=folder) from None
    series = []
    for uid in uids:
        files = tuple(Path(f) for f in sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(folder), uid))
        tags = _header_tags(files[0], ("0008|103e", "0008|0060")) if files else {}
        series.append(DicomSeriesInfo(uid, files, tags.get("0008|103e", ""), tags.get("0008|0060", "")))
    return series


def series_files(folder: str | Path, series_uid: str | None) -> tuple[Path, ...]:
    """The slice files of the series read from ``folder`` (by its UID; the rule's choice without one)."""
    folder = Path(folder)
    return choose_series(list_dicom_series(folder), folder, series_uid).files


def read_dicom_series(folder: str | Path, series_uid: str | None = None) -> ImageData:
    """Read one DICOM series from ``folder`` as ``(1, x, y, z)`` :class:`ImageData`: the one ``series_uid``
    names, else the one :func:`~medseg.io.dicom_choice.choose_series` picks by its rule."""
    folder = Path(folder)
    series = list_dicom_series(folder)
    if not series:
        raise DataError(
            "no DICOM series found in this folder",
            path=folder,
            hint="point to the folder that directly holds the slice files (subfolders are not searched)",
        )
    chosen = choose_series(series, folder, series_uid)
    check_series_files(folder, chosen, series)
    first = sitk.ImageFileReader()  # ITK allocates the volume its first slice's header declares, then reads
    first.SetImageIO("GDCMImageIO")
    first.SetFileName(str(chosen.files[0]))
    syntax = dicom_file_meta(chosen.files[0]).get(0x0010, b"").rstrip(b"\x00 ").decode("latin-1")
    read_information(first, chosen.files[0], _BYTES_PER_FILE_BYTE.get(syntax))
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames([str(f) for f in chosen.files])
    reader.MetaDataDictionaryArrayUpdateOn()  # each slice's header, kept from this one read for check_slices
    try:
        img = reader.Execute()
    except RuntimeError as e:
        raise DataError(
            f"cannot read DICOM series {chosen.uid}: {_itk_message(e)}",
            path=folder,
            hint="a slice file may be corrupt or truncated; re-export the series",
        ) from None
    check_slices(folder, chosen, [{k: reader.GetMetaData(i, k).strip() for k in _SLICE_TAGS if reader.HasMetaDataKey(i, k)}
                                  for i in range(len(chosen.files))])
    meta = {
        "format": "dicom",
        "series_uid": chosen.uid,
        "description": chosen.description,
        "modality": chosen.modality,
        "slices": len(chosen.files),
    }
    logger.debug("read DICOM series %s from %s: size %s", chosen.uid, folder, img.GetSize())
    return sitk_to_image_data(img, folder, meta=meta)


#: Slice gaps may differ from the series' median gap by this fraction (DICOM positions are decimal strings).
SLICE_GAP_TOLERANCE = 0.1
#: Image position, image orientation, gantry tilt: the header entries :func:`check_slices` reads.
_SLICE_TAGS = ("0020|0032", "0020|0037", "0018|1120")


#: Bytes of pixels one byte of a slice file can hold, by transfer syntax: uncompressed, or deflated (others: no bound).
_BYTES_PER_FILE_BYTE = {"": 1, "1.2.840.10008.1.2": 1, "1.2.840.10008.1.2.1": 1, "1.2.840.10008.1.2.2": 1,
                        "1.2.840.10008.1.2.1.99": MAX_COMPRESSION_RATIO}


def _has_preamble(path: Path) -> bool:
    """Whether ``path`` starts as a DICOM file does ("DICM" after the 128-byte preamble): such a file outside the
    image series is another kind of DICOM object (a SEG, an RTSTRUCT, a report), not a corrupt slice."""
    try:
        with open(path, "rb") as f:
            f.seek(128)
            return f.read(4) == b"DICM"
    except OSError:
        return False


def _number(text: str) -> float:
    """A decimal string's value; 0 for an empty, unreadable or non-finite one."""
    try:
        value = float(text)
    except ValueError:
        return 0.0
    return value if np.isfinite(value) else 0.0


def check_series_files(folder: Path, chosen: DicomSeriesInfo, series: list[DicomSeriesInfo]) -> None:
    """Refuse a series folder holding a file of the series' ending that is not DICOM at all: GDCM skips such a
    corrupt slice, and the remaining slices would be stretched over the gap."""
    in_series = {f.resolve() for s in series for f in s.files}
    endings = {f.suffix.lower() for f in chosen.files}
    for path in sorted(folder.iterdir()):
        if path.is_file() and not path.name.startswith(".") and path.resolve() not in in_series \
                and path.suffix.lower() in endings and path.name.upper() != "DICOMDIR" and not _has_preamble(path):
            raise DataError("a file of this series folder is not readable DICOM (corrupt or truncated?); reading "
                            "the series without it would stretch the other slices over its place", path=path,
                            hint="re-export the series, or remove the file if it does not belong to the series")


def check_slices(folder: Path, chosen: DicomSeriesInfo, tags: list[dict[str, str]]) -> None:
    """Refuse a series read as a wrong volume: slices whose positions are not evenly spaced (a missing slice: the
    gap is named), or that are not all in one orientation; ``tags`` holds each slice's :data:`_SLICE_TAGS`. A
    gantry tilt is reported."""
    orientations = {t.get("0020|0037") for t in tags}
    if len(chosen.files) < 3 or None in orientations or any("0020|0032" not in t for t in tags):
        return  # too few slices to compare, or no geometry in the headers (secondary capture)
    try:
        cosines = [np.array([float(v) for v in o.split("\\")]) for o in orientations]  # type: ignore[union-attr]
        positions = np.array([[float(v) for v in t["0020|0032"].split("\\")] for t in tags])
    except ValueError:
        return
    if positions.ndim != 2 or positions.shape[1] != 3 or not np.isfinite(positions).all():
        return  # positions that are not points in 3D: nothing to compare (ITK has placed the slices by their order)
    if any(c.shape != (6,) or np.abs(c - cosines[0]).max() > 1e-4 for c in cosines):
        raise DataError(f"the slices of series {chosen.uid} are not all in one orientation", path=folder,
                        hint="a series must be one stack of parallel slices; split it, or re-export it")
    normal = np.cross(cosines[0][:3], cosines[0][3:])
    depth = positions @ normal
    order = np.argsort(depth)
    gaps = np.diff(depth[order])
    median = float(np.median(gaps))
    if median <= 0:
        raise DataError(f"slices of series {chosen.uid} share one position", path=folder,
                        hint="two files may hold the same slice; remove the duplicate")
    worst = int(np.argmax(np.abs(gaps - median)))
    if abs(gaps[worst] - median) > SLICE_GAP_TOLERANCE * median:
        a, b = (chosen.files[i].name for i in order[worst:worst + 2])
        raise DataError(f"slice gap of {gaps[worst]:.3g} mm between {a} and {b}, where the series' slices are "
                        f"{median:.3g} mm apart: a slice is missing, or the series is not evenly spaced", path=folder,
                        hint="re-export the complete series")
    tilt = [t.get("0018|1120", "") for t in tags]
    if any(abs(_number(v)) > 1e-3 for v in tilt):
        logger.warning("%s: series %s was acquired with a gantry tilt of %s degrees; its slices are read as "
                       "positioned in the headers", folder, chosen.uid, tilt[0] or "non-zero")


def _ds(value: float) -> str:
    """A DICOM decimal string (at most 16 characters)."""
    for digits in range(12, 3, -1):
        text = f"{float(value):.{digits}g}"
        if len(text) <= 16:
            return text
    return f"{float(value):.3g}"


def write_dicom_series(
    folder: str | Path,
    array: np.ndarray,
    geometry: Geometry | None = None,
    *,
    series_uid: str | None = None,
    study_uid: str | None = None,
    description: str = "medseg export",
    modality: str = "OT",
    patient_id: str = "anonymous",
    patient_name: str = "anonymous",
    series_number: int = 1,
    file_prefix: str = "IM",
    overwrite: bool = False,
) -> list[Path]:
    """Write a 3D volume ``(x, y, z)`` or ``(1, x, y, z)`` as a DICOM series, one file per slice.

    ``modality`` "CT", "MR" and "PT" use those image storage classes: integer
    arrays are stored as they are (8/16/32 bit), float arrays with integral values
    that fit int16 as int16, other float arrays as int16 with a rescale
    slope/intercept (quantized to about 1/60000 of their value range; a warning is
    logged). Any other modality (default "OT", e.g. for masks) is written as
    multi-frame grayscale secondary capture, which holds values 0..65535 only
    (uint8 or uint16). A left-handed
    direction matrix is written with the slice axis reversed (DICOM orders
    slices along row x column), which describes the same physical grid.
    Files are ``<folder>/<file_prefix><n:05d>.dcm``, each written atomically.
    Returns the files written.
    """
    folder = Path(folder)
    arr = np.asarray(array)
    if arr.ndim == 4:
        if arr.shape[0] != 1:
            raise DataError(f"DICOM export takes one channel, got {arr.shape[0]}", path=folder)
        arr = arr[0]
    if arr.ndim != 3:
        raise DataError(f"DICOM export takes a 3D volume, got shape {arr.shape}", path=folder)
    geometry = geometry or Geometry.identity(3)
    if geometry.ndim != 3:
        raise DataError(f"DICOM export needs a 3D geometry, got {geometry.ndim}D", path=folder)

    direction = np.asarray(geometry.direction, dtype=float).reshape(3, 3)
    if np.linalg.det(direction) < 0:
        # DICOM's slice normal is row x column; flip the slice axis so the grid is right-handed.
        last = np.asarray(geometry.origin) + direction @ (np.asarray(geometry.spacing) * [0, 0, arr.shape[2] - 1])
        direction = direction.copy()
        direction[:, 2] *= -1
        arr = arr[:, :, ::-1]
        geometry = Geometry(geometry.spacing, tuple(float(v) for v in last), tuple(float(v) for v in direction.ravel()))
        logger.debug("left-handed direction: writing slices in reverse order")

    extra: dict[str, str] = {}
    if arr.dtype == bool:
        arr = arr.astype(np.uint8)
    elif arr.dtype.kind == "f":
        if not np.all(np.isfinite(arr)):
            raise DataError("cannot write NaN/inf voxels to DICOM", path=folder)
        lo, hi = float(arr.min()), float(arr.max())
        if np.all(arr == np.round(arr)) and lo >= -32768 and hi <= 32767:
            arr = arr.astype(np.int16)
        else:
            slope = (hi - lo) / 60000.0 or 1.0
            intercept = (hi + lo) / 2.0
            extra = {
                "0028|1053": _ds(slope),
                "0028|1052": _ds(intercept),
                "0028|0100": "16",
                "0028|0101": "16",
                "0028|0102": "15",
                "0028|0103": "1",
            }
            arr = arr.astype(np.float64)
            logger.warning("%s: float values stored as int16 with rescale slope %s (quantized)", folder, extra["0028|1053"])
    elif arr.dtype.kind in "iu" and arr.dtype.itemsize > 4:
        lo, hi = int(arr.min()), int(arr.max())
        if lo < np.iinfo(np.int32).min or hi > np.iinfo(np.int32).max:
            raise DataError("integer values do not fit 32 bits", path=folder)
        arr = arr.astype(np.int32)
    elif arr.dtype.kind not in "iu":
        raise DataError(f"cannot write dtype {arr.dtype} to DICOM", path=folder)

    sop_class = _SOP_CLASS.get(modality.upper())
    if sop_class is None:  # other modalities (default "OT"): secondary capture, unsigned 8/16 bit only
        if arr.dtype == np.uint8:
            sop_class = _SC_BYTE
        elif arr.dtype.kind in "iu" and not extra and arr.min() >= 0 and arr.max() <= 65535:
            arr = arr.astype(np.uint16) if arr.max() > 255 else arr.astype(np.uint8)
            sop_class = _SC_BYTE if arr.dtype == np.uint8 else _SC_WORD
        else:
            raise DataError(
                f"modality '{modality}' is written as secondary capture, which holds only values 0..65535",
                path=folder,
                hint="pass modality='CT', 'MR' or 'PT' for signed or float data",
            )

    img = image_data_to_sitk(arr[None], geometry, path=folder)
    n = arr.shape[2]
    names = [folder / f"{file_prefix}{i + 1:05d}.dcm" for i in range(n)]
    if not overwrite:
        existing = [p for p in names if p.exists()]
        if existing:
            raise DataError(
                f"{len(existing)} target file(s) exist already, e.g. {existing[0].name}",
                path=folder,
                hint="write into an empty folder, choose another file_prefix, or pass overwrite=True",
            )
    folder.mkdir(parents=True, exist_ok=True)

    series_uid = series_uid or new_uid()
    study_uid = study_uid or new_uid()
    frame_uid = new_uid()
    now = datetime.datetime.now()
    common = {
        "0008|0016": sop_class,
        "0008|0060": modality,
        "0008|0020": now.strftime("%Y%m%d"),
        "0008|0021": now.strftime("%Y%m%d"),
        "0008|0030": now.strftime("%H%M%S"),
        "0008|0031": now.strftime("%H%M%S"),
        "0008|103e": description,
        "0010|0010": patient_name,
        "0010|0020": patient_id,
        "0018|0050": _ds(geometry.spacing[2]),
        "0020|000d": study_uid,
        "0020|000e": series_uid,
        "0020|0011": str(int(series_number)),
        "0020|0052": frame_uid,
        **extra,
    }
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    writer.SetImageIO("GDCMImageIO")
    try:
        for i, target in enumerate(names):
            # A one-slice 3D image keeps the full 3D direction, so GDCM writes the true
            # (possibly oblique) image position and orientation.
            slice_img = img[:, :, i : i + 1]
            for key, value in common.items():
                slice_img.SetMetaData(key, value)
            slice_img.SetMetaData("0008|0018", new_uid())
            slice_img.SetMetaData("0020|0013", str(i + 1))
            with atomic_path(target) as tmp:
                writer.SetFileName(str(tmp))
                writer.Execute(slice_img)
    except RuntimeError as e:
        raise DataError(f"cannot write DICOM series: {_itk_message(e)}", path=folder) from None
    return names
