"""`medseg deidentify` (issue 18): every attribute that the PS3.15 Basic Profile table (as the dicom-anonymizer
library carries it, not a list of ours) marks for removal, emptying or replacement is gone, empty or replaced; UIDs
are consistent across a series and its SEG; pixels are unchanged; burned-in annotation is flagged or refused; the
options keep what they promise; the input is not altered."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest

pytest.importorskip("dicomanonymizer")
import pydicom  # noqa: E402
from dicomanonymizer.dicom_anonymization_databases import dicomfields_2026c as table  # noqa: E402
from pydicom.datadict import DicomDictionary, dictionary_VR  # noqa: E402

from medseg.inference.dicom_seg import write_dicom_seg  # noqa: E402
from medseg.io import Geometry  # noqa: E402
from medseg.io.dicom import list_dicom_series, read_dicom_series, write_dicom_series  # noqa: E402
from tests.conftest import run_cli  # noqa: E402
from tests.helpers3d import oblique_direction  # noqa: E402

FILL = {"PN": "Doe^Jane", "LO": "secret", "SH": "secret", "LT": "secret", "ST": "secret", "UT": "secret", "UC": "secret",
        "DA": "20200102", "TM": "101010", "DT": "20200102101010", "AS": "042Y", "DS": "1.5", "IS": "7", "CS": "SECRET",
        "UI": "1.2.3.4.5.6", "US": 5, "UL": 5, "SS": 5, "SL": 5, "FL": 1.5, "FD": 1.5}
SIMPLE_TABLES = ("D_TAGS", "Z_TAGS", "X_TAGS", "U_TAGS", "Z_D_TAGS", "X_Z_TAGS", "X_D_TAGS", "X_Z_D_TAGS", "X_Z_U_STAR_TAGS")


def _table_tags() -> dict[str, list[int]]:
    """The library's Basic Profile tags per action (single tags of the standard dictionary, not sequences); a tag
    listed under several actions takes the last, as the library applies them."""
    action: dict[int, str] = {}
    for name in SIMPLE_TABLES:
        for t in getattr(table, name):
            if len(t) != 2 or t[0] in (0x0000, 0x0002, 0x7FE0):
                continue
            tag = (t[0] << 16) | t[1]
            if tag in DicomDictionary and dictionary_VR(tag) in FILL:
                action[tag] = name
    return {name: [t for t, a in action.items() if a == name] for name in SIMPLE_TABLES}


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    """A 4-slice MR series with every Basic Profile attribute filled in and a private tag, a SEG of it, an
    ultrasound file without a Burned In Annotation value, and a file that says YES."""
    root = tmp_path_factory.mktemp("deid")
    src = root / "in"
    geometry = Geometry((1.0, 1.0, 2.0), (5.0, 6.0, 7.0), oblique_direction())
    volume = np.random.default_rng(0).integers(0, 1000, (1, 12, 10, 4)).astype(np.int16)
    files = write_dicom_series(src / "mr", volume, geometry, modality="MR")
    tags = _table_tags()
    for f in files:
        ds = pydicom.dcmread(f)
        for tag in sorted({t for ts in tags.values() for t in ts}):
            if tag not in ds:
                ds.add_new(tag, dictionary_VR(tag), FILL[dictionary_VR(tag)])
        ds.PatientName, ds.PatientID, ds.PatientSex, ds.PatientAge = "Doe^Jane", "MRN-123", "F", "042Y"
        ds.StudyDate = "20200102"
        item = pydicom.Dataset()  # a sequence the table does not list, holding identity and a coding UID
        item.PatientName, item.StudyDate, item.ContextUID = "Doe^Nested", "20200103", "1.2.840.10008.6.1.308"
        ds.AnatomicRegionSequence = pydicom.Sequence([item])
        ref = pydicom.Dataset()  # one instance referenced from two sequences, with a well-known SOP class
        ref.ReferencedSOPClassUID, ref.ReferencedSOPInstanceUID = "1.2.840.10008.3.1.2.3.3", "1.2.3.4.5.6.7"
        ds.ReferencedPerformedProcedureStepSequence = pydicom.Sequence([ref])
        ref2 = pydicom.Dataset()
        ref2.ReferencedSOPClassUID, ref2.ReferencedSOPInstanceUID = "1.2.840.10008.5.1.4.1.1.4", "1.2.3.4.5.6.7"
        ds.ReferencedImageSequence = pydicom.Sequence([ref2])
        block = ds.private_block(0x0011, "ACME", create=True)
        block.add_new(0x01, "LO", "private secret")
        ds.save_as(f)
    labels = np.zeros((12, 10, 4), np.uint8)
    labels[3:8, 2:6, 1:3] = 1
    volume_read = read_dicom_series(src / "mr")
    (src / "seg").mkdir()
    series = list_dicom_series(src / "mr")[0]
    write_dicom_seg(src / "seg" / "mask.seg.dcm", series.files, labels, volume_read.geometry,
                    class_names=["background", "liver"], class_values=[0, 1], run_id="t")
    for name, modality, burned in (("us.dcm", "US", None), ("burned.dcm", "OT", "YES")):
        ds = pydicom.dcmread(files[0])
        ds.SOPInstanceUID = pydicom.uid.generate_uid()
        ds.Modality = modality
        if burned:
            ds.BurnedInAnnotation = burned
        ds.save_as(src / name)
    (src / "DICOMDIR").write_bytes((src / "us.dcm").read_bytes())  # stands for an export's index of patients
    return src, files


def _digest(folder):
    return {p.relative_to(folder): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_basic_profile_uids_pixels_and_burned_in(study, tmp_path):
    src, files = study
    before = _digest(src)
    out = tmp_path / "out"
    run_cli("deidentify", src, out, code=1)  # one file refused (burned-in annotation YES)
    assert _digest(src) == before  # the input is not altered
    assert not (out / "burned.dcm").exists() and (out / "us.dcm").is_file() and not (out / "DICOMDIR").exists()
    checksums = (out / "pixel_checksums.csv").read_text().splitlines()
    assert checksums[0].startswith("file,pixel_sha256") and len(checksums) == 1 + len(files) + 2  # series, SEG, us
    mapping = tmp_path / "out.uid_mapping.csv"
    assert mapping.is_file() and not (out / mapping.name).exists()
    tags = _table_tags()
    originals = {f.name: pydicom.dcmread(f) for f in files}
    for f in files:
        ds = pydicom.dcmread(out / "mr" / f.name)
        orig = originals[f.name]
        for tag in tags["X_TAGS"]:
            assert tag not in ds, f"{pydicom.datadict.keyword_for_tag(tag)} should be removed"
        for tag in tags["Z_TAGS"]:
            assert tag not in ds or ds[tag].value in ("", None, b"") or ds[tag].value != orig[tag].value
        for name in ("D_TAGS", "U_TAGS", "Z_D_TAGS", "X_Z_TAGS", "X_D_TAGS", "X_Z_D_TAGS", "X_Z_U_STAR_TAGS"):
            for tag in tags[name]:
                if tag in ds and tag in orig and ds[tag].value not in ("", None, b""):
                    assert ds[tag].value != orig[tag].value, f"{name}: {pydicom.datadict.keyword_for_tag(tag)} kept its value"
        assert not any(e.tag.is_private for e in ds)
        assert ds.PixelData == orig.PixelData
        assert str(ds.PatientName) != "Doe^Jane" and ds.get("PatientID") != "MRN-123"
        nested = ds.AnatomicRegionSequence[0]  # the profile applies inside sequences too; a coding UID is kept
        assert str(nested.get("PatientName", "")) != "Doe^Nested" and nested.get("StudyDate") != "20200103"
        assert nested.ContextUID == "1.2.840.10008.6.1.308"
        mpps, image_ref = ds.ReferencedPerformedProcedureStepSequence[0], ds.ReferencedImageSequence[0]
        assert mpps.ReferencedSOPInstanceUID == image_ref.ReferencedSOPInstanceUID != "1.2.3.4.5.6.7"  # one mapping
        assert mpps.ReferencedSOPClassUID == "1.2.840.10008.3.1.2.3.3"
    # UIDs consistent: the series still groups, the SEG references the new series and its slices
    new = [pydicom.dcmread(out / "mr" / f.name) for f in files]
    assert len({d.SeriesInstanceUID for d in new}) == 1 and new[0].SeriesInstanceUID != originals[files[0].name].SeriesInstanceUID
    seg = pydicom.dcmread(out / "seg" / "mask.seg.dcm")
    assert seg.ReferencedSeriesSequence[0].SeriesInstanceUID == new[0].SeriesInstanceUID
    referenced = {i.ReferencedSOPInstanceUID for i in seg.ReferencedSeriesSequence[0].ReferencedInstanceSequence}
    assert referenced and referenced <= {d.SOPInstanceUID for d in new}
    assert seg.StudyInstanceUID == new[0].StudyInstanceUID and seg.FrameOfReferenceUID == new[0].FrameOfReferenceUID
    sources = {g.DerivationImageSequence[0].SourceImageSequence[0].ReferencedSOPInstanceUID for g in seg.PerFrameFunctionalGroupsSequence}
    assert sources and sources <= {d.SOPInstanceUID for d in new}  # per-frame source references kept and mapped
    # the de-identified series is still one readable volume
    assert read_dicom_series(out / "mr").array.shape == (1, 12, 10, 4)


def test_options_keep_dates_and_patient_characteristics(study, tmp_path):
    src, files = study
    run_cli("deidentify", src, tmp_path / "out", "--keep-dates", "--keep-patient-characteristics", "--allow-burned-in", code=1)  # the DICOMDIR
    ds = pydicom.dcmread(tmp_path / "out" / "mr" / files[0].name)
    assert (ds.StudyDate, ds.PatientSex, ds.PatientAge) == ("20200102", "F", "042Y")
    assert str(ds.PatientName) != "Doe^Jane"
    assert (tmp_path / "out" / "burned.dcm").is_file()


def test_refuses_an_output_inside_the_input_and_a_mapping_inside_either(study, tmp_path):
    src, _ = study
    before = _digest(src)
    run_cli("deidentify", src, src / "out", code=2)
    run_cli("deidentify", src, tmp_path / "o", "--mapping", src / "map.csv", code=2)
    run_cli("deidentify", src, tmp_path / "o", "--mapping", tmp_path / "o" / "map.csv", code=2)
    assert _digest(src) == before and not (tmp_path / "o").exists()
    (tmp_path / "mine.csv").write_text("keep me")
    run_cli("deidentify", src, tmp_path / "o", "--mapping", tmp_path / "mine.csv", code=2)
    assert (tmp_path / "mine.csv").read_text() == "keep me"


def test_real_headers_shipped_with_pydicom(tmp_path):
    """pydicom's own CT and MR test files (real scanner headers, with private tags): identity gone, pixels unchanged."""
    from pydicom.data import get_testdata_file

    src = tmp_path / "in"
    src.mkdir()
    for name in ("CT_small.dcm", "MR_small.dcm"):
        path = get_testdata_file(name, download=False)
        if path is None:
            pytest.skip(f"pydicom's test file {name} is not installed")
        (src / name).write_bytes(open(path, "rb").read())
    run_cli("deidentify", src, tmp_path / "out")
    tags = _table_tags()
    assert any(e.tag.is_private for e in pydicom.dcmread(src / "CT_small.dcm"))
    for name in ("CT_small.dcm", "MR_small.dcm"):
        orig, new = pydicom.dcmread(src / name), pydicom.dcmread(tmp_path / "out" / name)
        assert not any(e.tag.is_private for e in new)
        assert new.PixelData == orig.PixelData
        for tag in tags["X_TAGS"]:
            assert tag not in new
        for key in ("PatientName", "PatientID", "StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID", "StudyDate"):
            if key in orig and str(orig.data_element(key).value):
                assert key not in new or str(new.data_element(key).value) != str(orig.data_element(key).value), key
