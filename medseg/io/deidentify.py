"""De-identification of DICOM files (``medseg deidentify IN OUT``), by the Basic Application Level
Confidentiality Profile of DICOM PS3.15 Annex E.

The profile's table of attributes and actions (remove, empty, replace, replace UID) is applied by
Kitware's ``dicom-anonymizer`` (``pip install medseg[dicom]``), which carries the table of the standard's
current edition; medseg adds what it lacks:

- **Every level:** the library applies the table to one dataset's own attributes; medseg applies it to every
  sequence item too (innermost first), so names, IDs and dates inside sequences go as well, and UIDs are
  replaced through one mapping everywhere: series still group and a SEG still references its images. The
  Referenced and Source Image Sequences (X/Z/U*) are kept with their UIDs replaced. The mapping (old, new)
  is written to a CSV file outside OUT and IN (refused inside either), also when a run stops part-way, and
  read again by a rerun into the same OUT. A DICOMDIR is not copied.
- **Options:** ``keep_dates`` (Retain Longitudinal Temporal Information with Full Dates) and
  ``keep_patient_characteristics`` (Retain Patient Characteristics: sex, age, size, weight, ethnic group,
  smoking and pregnancy status) keep those attributes.
- **Private tags** are removed (the profile's default).
- **Burned-in annotation:** a file whose Burned In Annotation is ``YES`` is not written unless
  ``allow_burned_in``; one of a modality known for text in its pixels (US, ES, XC, SC, OT, DX, CR, XA) that
  does not say ``NO`` is written and flagged.
- **Pixels** are never touched: each written file's Pixel Data is compared (SHA-256) with the original's before
  it takes its place, and the checksums are listed in ``OUT/pixel_checksums.csv``. File and folder names are
  kept: rename them first if they carry patient data.
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
    from dicomanonymizer.dicom_anonymization_databases import dicomfields_2026c as table

    for key, action in actions.items():
        if action is sda.delete:  # the library writes a dummy date into removed DA attributes: remove them
            actions[key] = _remove
    for key in table.X_Z_U_STAR_TAGS:  # Referenced/Source Image Sequence: kept, their items' UIDs replaced (U*)
        actions[key] = sda.keep
    for key, action in actions.items():  # other sequences: their items are de-identified one by one (see _anonymize),
        tag = (key[0] << 16) | key[1] if len(key) == 2 else None  # so a replacing action must not run over them again
        if tag is not None and tag in pydicom.datadict.DicomDictionary and pydicom.datadict.dictionary_VR(tag) == "SQ" \
                and action is not _remove:
            actions[key] = sda.keep
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


def _anonymize(ds, sda, actions: dict) -> None:
    """The profile applied at every level: each sequence item first (innermost first), then the dataset itself,
    through one UID mapping."""
    for element in list(ds):
        if element.VR == "SQ" and element.value is not None:
            for item in element.value:
                _anonymize(item, sda, actions)
    sda.anonymize_dataset(ds, extra_anonymization_rules=actions, delete_private_tags=True, base_rules_gen=lambda: {})


def _is_dicomdir(path: Path, ds) -> bool:
    return path.name.upper() == "DICOMDIR" or str(getattr(getattr(ds, "file_meta", None), "MediaStorageSOPClassUID", "")) == "1.2.840.10008.1.3.10"


def _read_mapping(path: Path, mapping: dict) -> None:
    if path.is_file():
        with path.open(newline="") as f:
            for row in csv.DictReader(f):
                mapping[row["original_uid"]] = row["new_uid"]


def _write_mapping(path: Path, mapping: dict) -> None:
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["original_uid", "new_uid"])
    w.writerows(sorted(mapping.items()))
    write_text(path, buf.getvalue())


CHECKSUMS_CSV = "pixel_checksums.csv"


def check_paths(src: Path, dst: Path, mapping_file: Path) -> None:
    """Refuse, before anything is written: OUT inside or equal to IN, and a mapping file inside OUT or IN."""
    src, dst, mapping = src.resolve(), dst.resolve(), mapping_file.resolve()
    if not src.is_dir():
        raise DataError("not a folder", path=src, hint="give the folder of the DICOM files to de-identify")
    if dst == src or dst.is_relative_to(src):
        raise ConfigError("the output folder must lie outside the input folder (the input is never altered)", path=dst)
    for folder, what in ((dst, "output"), (src, "input")):
        if mapping.is_relative_to(folder):
            raise ConfigError(f"the UID mapping must not be written into the {what} folder (it re-identifies the files)",
                              path=mapping, hint="give --mapping a path outside both folders")


def deidentify_folder(src: str | Path, dst: str | Path, *, mapping_file: str | Path, keep_dates: bool = False,
                      keep_patient_characteristics: bool = False, allow_burned_in: bool = False) -> DeidResult:
    """De-identify every DICOM file under ``src`` into ``dst`` (same relative paths); see the module doc. A mapping
    file from an earlier run into ``dst`` is read first, so a rerun keeps its UIDs."""
    import pydicom

    sda = _library()
    src, dst, mapping_file = Path(src), Path(dst), Path(mapping_file)
    check_paths(src, dst, mapping_file)
    actions = profile_actions(keep_dates, keep_patient_characteristics)
    sda.dictionary.clear()
    _read_mapping(mapping_file, sda.dictionary)
    result = DeidResult()
    files = sorted(p for p in src.rglob("*") if p.is_file() and not p.name.startswith("."))
    try:
        for path in files:
            _one_file(path, src, dst, sda, actions, allow_burned_in, result, pydicom)
    finally:
        _write_mapping(mapping_file, sda.dictionary)
        buf = io.StringIO()
        w = csv.DictWriter(buf, fieldnames=["file", "pixel_sha256", "modality", "burned_in_annotation"])
        w.writeheader()
        w.writerows(result.rows)
        write_text(dst / CHECKSUMS_CSV, buf.getvalue())
    return result


def _one_file(path: Path, src: Path, dst: Path, sda, actions: dict, allow_burned_in: bool, result: DeidResult, pydicom) -> None:
    try:
        ds = pydicom.dcmread(path)
    except Exception:  # noqa: BLE001 - not DICOM: not copied, and said
        result.refused.append((path, "not a DICOM file (not copied)"))
        return
    if _is_dicomdir(path, ds):
        result.refused.append((path, "a DICOMDIR lists patients, studies and dates: not copied (rebuild it from the output)"))
        return
    burned = str(ds.get("BurnedInAnnotation", "")).strip().upper()
    modality = str(ds.get("Modality", "")).upper()
    if burned == "YES" and not allow_burned_in:
        result.refused.append((path, "Burned In Annotation is YES: the pixels carry text the profile cannot remove "
                               "(not written; --allow-burned-in to write it anyway)"))
        return
    before = _pixel_sha(ds)
    try:
        _anonymize(ds, sda, actions)
    except Exception as e:  # noqa: BLE001 - one file the library cannot handle must not stop the others
        result.refused.append((path, f"could not be de-identified ({type(e).__name__}: {e}); not written"))
        return
    target = dst / path.relative_to(src)
    target.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(target) as tmp:
        ds.save_as(str(tmp))
        after = _pixel_sha(pydicom.dcmread(str(tmp)))
        if before != after:  # checked on the file as written, before it takes its place
            raise DataError("the pixel data changed while de-identifying; the file was not written", path=path)
    if burned == "YES":
        result.flagged.append((path, "Burned In Annotation is YES (written because --allow-burned-in)"))
    elif modality in BURNED_IN_MODALITIES and burned != "NO":
        result.flagged.append((path, f"modality {modality} often has burned-in text and Burned In Annotation is "
                               f"{burned or 'absent'}: check the pixels"))
    result.written.append(target)
    result.rows.append({"file": str(path.relative_to(src)), "pixel_sha256": after, "modality": modality,
                        "burned_in_annotation": burned or "absent"})
