"""DICOM Segmentation objects read as label maps on their source series' grid (training from SEG labels).

A SEG is decoded with pydicom alone (``pip install medseg[dicom]``): each frame is placed on the image's grid by
its own Image Position (Patient), checked to lie on a plane of that grid, and its pixels become label values: the
frame's segment number (LABELMAP: the pixel value; BINARY/FRACTIONAL: the frame's referenced segment where the
pixel is set, fractional ones at half or more). So a SEG's segment numbers are its label values;
:mod:`medseg.data.dicom_layout` checks that a label name has one number across a dataset.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from medseg.errors import ConfigError, DataError
from medseg.io.base import ImageData

SEG_SOP_CLASS = "1.2.840.10008.5.1.4.1.1.66.4"
LABELMAP_SOP_CLASS = "1.2.840.10008.5.1.4.1.1.66.7"
#: a frame off the image's planes by more than this fraction of a voxel is an error
POSITION_TOLERANCE = 0.05


def _pydicom():
    try:
        import pydicom
    except ImportError:
        raise ConfigError("DICOM SEG labels need pydicom", hint="pip install 'medseg[dicom]'") from None
    return pydicom


def is_seg_file(path: str | Path) -> bool:
    """Whether ``path`` is a DICOM Segmentation object (by its header; ``False`` for anything unreadable)."""
    path = Path(path)
    if not path.is_file():
        return False
    try:
        with open(path, "rb") as f:
            f.seek(128)
            if f.read(4) != b"DICM":
                return False
        ds = _pydicom().dcmread(path, stop_before_pixels=True, specific_tags=["SOPClassUID", "Modality"])
    except Exception:  # noqa: BLE001 - not DICOM, or not readable: not a SEG
        return False
    return str(ds.get("SOPClassUID", "")) in (SEG_SOP_CLASS, LABELMAP_SOP_CLASS) or str(ds.get("Modality", "")) == "SEG"


def seg_header(path: str | Path) -> tuple[str, dict[int, str]]:
    """The SEG's referenced series UID and its segments ``{number: label}``."""
    ds = _pydicom().dcmread(Path(path), stop_before_pixels=True)
    try:
        series = str(ds.ReferencedSeriesSequence[0].SeriesInstanceUID)
    except (AttributeError, IndexError):
        raise DataError("a DICOM SEG without a Referenced Series Sequence: it does not say which series it segments",
                        path=path, hint="export the SEG with its source references") from None
    segments = {int(s.SegmentNumber): str(s.get("SegmentLabel", f"segment {int(s.SegmentNumber)}"))
                for s in ds.get("SegmentSequence", []) if int(s.SegmentNumber) > 0}
    return series, segments


def read_seg_label(path: str | Path, image: ImageData) -> ImageData:
    """The SEG at ``path`` as a ``(1, x, y, z)`` label map of segment numbers on ``image``'s grid."""
    path = Path(path)
    ds = _pydicom().dcmread(path)
    shape = image.spatial_shape
    rows, cols = int(ds.Rows), int(ds.Columns)
    if (rows, cols) != (shape[1], shape[0]):
        raise DataError(f"SEG frames are {rows}x{cols}, the image's slices {shape[1]}x{shape[0]}", path=path,
                        hint="the SEG must segment this series")
    frames = np.asarray(ds.pixel_array).reshape((-1, rows, cols))
    labelmap = str(ds.get("SegmentationType", "")) == "LABELMAP" or str(ds.SOPClassUID) == LABELMAP_SOP_CLASS
    fractional = str(ds.get("SegmentationType", "")) == "FRACTIONAL"
    top = int(ds.get("MaximumFractionalValue", 255)) if fractional else 1
    direction = np.asarray(image.geometry.direction, float).reshape(3, 3)
    origin, spacing = np.asarray(image.geometry.origin, float), np.asarray(image.geometry.spacing, float)
    shared = ds.get("SharedFunctionalGroupsSequence", [None])[0]
    out = np.zeros(shape, np.uint16)
    for i, group in enumerate(ds.PerFrameFunctionalGroupsSequence):
        position = np.asarray(group.PlanePositionSequence[0].ImagePositionPatient, float)
        index = (direction.T @ (position - origin)) / spacing
        k = int(round(index[2]))
        if np.abs(index[:2]).max() > POSITION_TOLERANCE or abs(index[2] - k) > POSITION_TOLERANCE or not 0 <= k < shape[2]:
            raise DataError(f"frame {i + 1} of the SEG lies on no slice of its image (grid index "
                            f"{np.round(index, 3).tolist()})", path=path, hint="the SEG must segment this series")
        frame = frames[i]
        if labelmap:
            plane = frame.astype(np.uint16)
        else:
            ident = group.get("SegmentIdentificationSequence") or (shared.get("SegmentIdentificationSequence") if shared else None)
            number = int(ident[0].ReferencedSegmentNumber)
            plane = np.where(frame.astype(np.int32) * 2 >= top if fractional else frame > 0, number, 0).astype(np.uint16)
        current = out[:, :, k].T
        out[:, :, k] = np.where(plane > 0, plane, current).T
    dtype = np.uint8 if out.max() <= 255 else np.uint16
    return ImageData(out[None].astype(dtype), image.geometry, path=path, meta={"format": "dicom-seg"})
