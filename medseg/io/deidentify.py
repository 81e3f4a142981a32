"""De-identification of DICOM files (``medseg deidentify IN OUT``), by the Basic Application Level
Confidentiality Profile of DICOM PS3.15 Annex E.

The profile's table of attributes and actions (remove, empty, replace, replace UID) is applied by
Kitware's ``dicom-anonymizer`` (``pip install medseg[dicom]``), which carries the table of the standard's
current edition; medseg adds what it lacks:

- **UIDs are replaced consistently, nested ones too:** the library replaces top-level UIDs through one
  mapping; medseg maps every other instance UID inside sequences (a SEG's references to its source
  series and slices, a Referenced Image Sequence) through the same mapping, so series still group and a
  SEG still references its images. Well-known UIDs (SOP classes, transfer syntaxes) are kept. The mapping
  (old, new) is written to a CSV file *outside* OUT, for the user to keep private or delete.
- **Options:** ``keep_dates`` (Retain Longitudinal Temporal Information with Full Dates) and
  ``keep_patient_characteristics`` (Retain Patient Characteristics: sex, age, size, weight, ethnic group,
  smoking and pregnancy status) keep those attributes.
- **Private tags** are removed (the profile's default).
- **Burned-in annotation:** a file whose Burned In Annotation is ``YES`` is not written unless
  ``allow_burned_in``; one of a modality known for text in its pixels (US, ES, XC, SC, OT, DX, CR, XA) that
  does not say ``NO`` is written and flagged.
- **Pixels** are never touched: each file's Pixel Data SHA-256 is recorded before and after.
"""

from __future__ import annotations

import csv
import hashlib
import io
import logging
from dataclasses import dataclass, field
from pathlib import Path

from medseg.errors import ConfigError, DataError
from medseg.io.atomic import atomic_path, write_text

log = logging.getLogger(__name__)

#: modalities whose pixels often carry burned-in text (ultrasound, endoscopy, photographs, screenshots, X-ray)
BURNED_IN_MODALITIES = frozenset({"US", "ES", "XC", "SC", "OT", "DX", "CR", "XA", "IO", "PX"})
#: attributes the Retain Patient Characteristics Option keeps
PATIENT_CHARACTERISTICS = ("PatientSex", "PatientAge", "PatientSize", "PatientWeight", "EthnicGroup", "SmokingStatus",
                           "PregnancyStatus", "PatientSexNeutered")


@dataclass
class DeidResult:
    written: list[Path] = field(default_factory=list)
    refused: list[tuple[Path, str]] = field(default_factory=list)
    flagged: list[tuple[Path, str]] = field(default_factory=list)
    rows: list[dict] = field(default_factory=list)


def _library():
    try:
        import pydicom  # noqa: F401
        from dicomanonymizer import simpledicomanonymizer
    except ImportError:
        raise ConfigError("medseg deidentify needs dicom-anonymizer and pydicom", hint="pip install 'medseg[dicom]'") from None
    return simpledicomanonymizer


def profile_actions(keep_dates: bool = False, keep_patient_characteristics: bool = False) -> dict:
    """``{tag: action}``: the library's Basic Profile table, with the options' attributes kept."""
    import pydicom

    sda = _library()
    actions = sda.initialize_actions("dicomfields_2026c")
    for key, action in actions.items():
        if action is sda.delete:  # the library writes a dummy date into removed DA attributes: remove them
            actions[key] = _remove
    kept: list[int] = []
    if keep_patient_characteristics:
        kept += [pydicom.datadict.tag_for_keyword(k) for k in PATIENT_CHARACTERISTICS]
    if keep_dates:
        kept += [t for t in pydicom.datadict.DicomDictionary if pydicom.datadict.dictionary_VR(t) in ("DA", "DT", "TM")]
    for tag in kept:
        if tag is not None:
            key = (tag >> 16, tag & 0xFFFF)
            if key in actions:
                actions[key] = sda.keep
    return actions


def _remove(dataset, tag) -> None:
    """The profile's X: the attribute is removed, whatever its VR."""
    if tag in dataset:
        del dataset[tag]


def _pixel_sha(ds) -> str:
    data = ds.get("PixelData")
    return hashlib.sha256(data if isinstance(data, bytes) else data.value).hexdigest() if data is not None else ""


def _remap_nested(ds, mapping: dict, new_uids: set) -> None:
    """Every instance UID inside ``ds``'s sequences through ``mapping`` (new ones made as the library makes them)."""
    import pydicom
    from pydicom.uid import UID_dictionary

    def visit(dataset, element):
        if element.VR == "SQ":
            for item in element.value:
                item.walk(replace)

    def replace(dataset, element):
        if element.VR != "UI" or element.value in (None, ""):
            return
        values = element.value if isinstance(element.value, pydicom.multival.MultiValue) else [element.value]
        out = []
        for v in values:
            v = str(v)
            if v in UID_dictionary or v in new_uids:
                out.append(v)
            else:
                if v not in mapping:
                    mapping[v] = pydicom.uid.generate_uid(None)
                new_uids.add(mapping[v])
                out.append(mapping[v])
        element.value = out if len(out) > 1 else out[0]

    for element in list(ds):
        visit(ds, element)


def deidentify_folder(src: str | Path, dst: str | Path, *, mapping_file: str | Path, keep_dates: bool = False,
                      keep_patient_characteristics: bool = False, allow_burned_in: bool = False) -> DeidResult:
    """De-identify every DICOM file under ``src`` into ``dst`` (same relative paths); see the module doc."""
    import pydicom

    sda = _library()
    src, dst = Path(src), Path(dst)
    if not src.is_dir():
        raise DataError("not a folder", path=src, hint="give the folder of the DICOM files to de-identify")
    if dst.resolve() == src.resolve() or dst.resolve().is_relative_to(src.resolve()):
        raise ConfigError("the output folder must lie outside the input folder (the input is never altered)", path=dst)
    actions = profile_actions(keep_dates, keep_patient_characteristics)
    sda.dictionary.clear()
    result = DeidResult()
    files = sorted(p for p in src.rglob("*") if p.is_file() and not p.name.startswith("."))
    for path in files:
        try:
            ds = pydicom.dcmread(path)
        except Exception:  # noqa: BLE001 - not DICOM: not copied, and said
            result.refused.append((path, "not a DICOM file (not copied)"))
            continue
        burned = str(ds.get("BurnedInAnnotation", "")).strip().upper()
        modality = str(ds.get("Modality", "")).upper()
        if burned == "YES" and not allow_burned_in:
            result.refused.append((path, "Burned In Annotation is YES: the pixels carry text the profile cannot remove "
                                   "(not written; --allow-burned-in to write it anyway)"))
            continue
        before = _pixel_sha(ds)
        sda.anonymize_dataset(ds, extra_anonymization_rules=actions, delete_private_tags=True,
                              base_rules_gen=lambda: {})
        _remap_nested(ds, sda.dictionary, set(sda.dictionary.values()))
        after = _pixel_sha(ds)
        if before != after:
            raise DataError("the pixel data changed while de-identifying; nothing of this file was written", path=path)
        if burned == "YES":
            result.flagged.append((path, "Burned In Annotation is YES (written because --allow-burned-in)"))
        elif modality in BURNED_IN_MODALITIES and burned != "NO":
            result.flagged.append((path, f"modality {modality} often has burned-in text and Burned In Annotation is "
                                   f"{burned or 'absent'}: check the pixels"))
        target = dst / path.relative_to(src)
        target.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(target) as tmp:
            ds.save_as(str(tmp))
        result.written.append(target)
        result.rows.append({"file": str(path.relative_to(src)), "pixel_sha256": after, "modality": modality,
                            "burned_in_annotation": burned or "absent"})
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["original_uid", "new_uid"])
    w.writerows(sorted(sda.dictionary.items()))
    write_text(mapping_file, buf.getvalue())
    return result
