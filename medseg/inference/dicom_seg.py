"""DICOM Segmentation objects from predictions on DICOM series (``medseg predict ... --format dicom-seg``).

The object is built by ``highdicom`` (``pip install medseg[dicom]``) from the source series' own
datasets, so it references that series (study, series and SOP instance UIDs, frame of reference)
and carries its geometry. medseg maps the label map onto the source slices itself and checks the map:

- **Frames**: the source slices are sorted by their position along the slice normal (row x column
  cosines), never by file name or instance number; each slice's frame is the label map's plane
  whose position matches (a slice that lies on no plane of the grid is an error).
- **Segments**: one per class *present* in the prediction (an absent class gets no empty segment), numbered
  by the class's label value (so a SEG decodes to the values of the NIfTI output, and
  :mod:`medseg.io.dicom_seg_read` reads it back as such); ``LABELMAP`` (one frame per slice, pixel = segment number) when
  the installed highdicom has it, otherwise ``BINARY``; empty frames are omitted.
- **Codes**: a label name that is a Segmentation Property Type of DICOM CID 7151 (``Hippocampus``,
  ``Liver``, ``Neoplasm``... looked up in pydicom's code dictionary, not a list of ours) gets its
  SNOMED CT code and the matching category; a code given in the run's ``labels.json`` (``"codes":
  {"<label value>": {"value", "scheme", "meaning", "category"?}}``) takes precedence; any other label
  is "Tissue" with its name as the segment label.
- **Algorithm**: "medseg" with its version, family "Artificial Intelligence", the run id as a parameter.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from medseg.errors import ConfigError, DataError
from medseg.io.atomic import atomic_path
from medseg.io.base import Geometry

log = logging.getLogger(__name__)

SEG_SUFFIX = ".seg.dcm"
#: category context groups of CID 7151's members, and the category (CID 7150) each implies
_CATEGORY_OF_CID = {7191: "Tissue", 7192: "AnatomicalStructure", 7193: "PhysicalObject",
                    7194: "MorphologicallyAbnormalStructure", 7195: "Function", 7196: "SpatialAndRelationalConcept",
                    7197: "BodySubstance"}
#: a position off the grid by more than this fraction of the slice spacing is an error
POSITION_TOLERANCE = 0.05


def _require():
    try:
        import highdicom  # noqa: F401
        import pydicom  # noqa: F401
    except ImportError:
        raise ConfigError("--format dicom-seg needs highdicom and pydicom", hint="pip install 'medseg[dicom]'") from None


def _keyword(name: str) -> str:
    """``"left kidney"`` → ``"LeftKidney"`` (pydicom's code-dictionary keywords)."""
    return "".join(w[:1].upper() + w[1:] for w in re.split(r"[^0-9A-Za-z]+", name) if w)


def segment_codes(name: str, user: Mapping | None = None):
    """(category, property type) codes of a label named ``name`` (see the module doc)."""
    from pydicom.sr.codedict import codes
    from pydicom.sr.coding import Code

    if user:
        prop = Code(str(user["value"]), str(user.get("scheme", "SCT")), str(user.get("meaning", name)))
        category = getattr(codes.cid7150, _keyword(str(user.get("category", "Anatomical Structure"))), None)
        return category or codes.SCT.AnatomicalStructure, prop
    keyword = _keyword(name)
    for cid, category in _CATEGORY_OF_CID.items():
        group = getattr(codes, f"cid{cid}")
        if keyword in group.dir():
            return getattr(codes.cid7150, category, codes.SCT.AnatomicalStructure), getattr(group, keyword)
    return codes.SCT.Tissue, codes.SCT.Tissue


def sorted_source(files: Sequence[Path]) -> list:
    """The series' datasets (pixels included: highdicom copies what it needs), sorted by position along the normal."""
    import pydicom

    datasets = [pydicom.dcmread(str(f)) for f in files]
    iop = np.asarray(datasets[0].ImageOrientationPatient, dtype=float)
    normal = np.cross(iop[:3], iop[3:])
    return sorted(datasets, key=lambda d: float(np.asarray(d.ImagePositionPatient, dtype=float) @ normal))


def frames_for(datasets: Sequence, labels: np.ndarray, geometry: Geometry) -> np.ndarray:
    """``(slices, rows, columns)``: the plane of ``labels (x, y, z)`` at each source slice's position."""
    direction = np.asarray(geometry.direction, dtype=float).reshape(3, 3)
    origin, spacing = np.asarray(geometry.origin, float), np.asarray(geometry.spacing, float)
    out = np.zeros((len(datasets), labels.shape[1], labels.shape[0]), dtype=labels.dtype)
    for s, ds in enumerate(datasets):
        index = (direction.T @ (np.asarray(ds.ImagePositionPatient, dtype=float) - origin)) / spacing
        k = int(round(index[2]))
        if np.abs(index[:2]).max() > POSITION_TOLERANCE or abs(index[2] - k) > POSITION_TOLERANCE or not 0 <= k < labels.shape[2]:
            raise DataError(f"slice {getattr(ds, 'SOPInstanceUID', s)} lies on no plane of the predicted volume "
                            f"(grid index {np.round(index, 3).tolist()})", hint="the series was read in another geometry; report it")
        if (int(ds.Rows), int(ds.Columns)) != out.shape[1:]:
            raise DataError(f"slice {ds.SOPInstanceUID} is {ds.Rows}x{ds.Columns}, the volume's planes {out.shape[1:]}")
        out[s] = labels[:, :, k].T
    return out


def write_dicom_seg(target: str | Path, source_files: Sequence[Path], labels: np.ndarray, geometry: Geometry, *,
                    class_names: Sequence[str], class_values: Sequence[int], run_id: str,
                    user_codes: Mapping[str, Mapping] | None = None) -> Path | None:
    """Write the SEG of ``labels`` (class ids ``(x, y, z)`` on the series' grid ``geometry``) for the series of
    ``source_files``; ``class_names``/``class_values`` by class id (``class_values``: the label values, which
    ``user_codes`` is keyed by). Returns the file, or ``None`` when nothing was predicted (a SEG needs a segment)."""
    _require()
    import highdicom as hd
    from pydicom.sr.codedict import codes

    import medseg

    datasets = sorted_source(source_files)
    frames = frames_for(datasets, np.asarray(labels), geometry)
    present = [int(c) for c in np.unique(frames) if c != 0]
    if not present:
        log.warning("%s: nothing predicted, so no DICOM SEG written (a SEG holds at least one segment)", target)
        return None
    # segment number = the class's label value (so the SEG decodes to the values of the NIfTI output), or its id
    # where the values are not small positive integers (colour-coded 2D schemes)
    by_value = all(isinstance(v, (int, np.integer)) and 0 < int(v) <= 65535 for v in list(class_values)[1:])
    number_of = {c: int(class_values[c]) if by_value else c for c in present}
    numbers = np.zeros(max(present) + 1, dtype=np.uint16)
    algorithm = hd.AlgorithmIdentificationSequence(name="medseg", family=codes.cid7162.ArtificialIntelligence,
                                                   version=medseg.__version__, parameters={"run": run_id})
    descriptions = []
    for c in present:
        numbers[c] = number_of[c]
        name = str(class_names[c])
        category, prop = segment_codes(name, (user_codes or {}).get(str(class_values[c])))
        descriptions.append(hd.seg.SegmentDescription(
            segment_number=number_of[c], segment_label=name[:64], segmented_property_category=category,
            segmented_property_type=prop, algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
            algorithm_identification=algorithm))
    labelmap = "LABELMAP" in hd.seg.SegmentationTypeValues.__members__
    pixels = numbers[frames].astype(np.uint8 if max(number_of.values()) < 256 else np.uint16)
    if not labelmap:  # BINARY: one mask per segment along a last axis, in segment-number order
        pixels = np.stack([pixels == number_of[c] for c in present], axis=-1).astype(np.uint8)
    seg = hd.seg.Segmentation(
        source_images=datasets, pixel_array=pixels,
        segmentation_type=hd.seg.SegmentationTypeValues.LABELMAP if labelmap else hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=descriptions, series_instance_uid=hd.UID(), series_number=9901,
        sop_instance_uid=hd.UID(), instance_number=1, manufacturer="medseg", manufacturer_model_name="medseg",
        software_versions=medseg.__version__, device_serial_number=run_id[:64] or "unknown",
        content_description="medseg automatic segmentation", content_label="MEDSEG", omit_empty_frames=True)
    target = Path(target)
    with atomic_path(target) as tmp:
        seg.save_as(str(tmp))
    return target
