"""DICOM SEG output (issue 18): realistic MR series made from shared Hippocampus volumes (oblique orientation,
anisotropic spacing, shuffled file names, odd instance numbers, a second series in the same folder), a SEG written
from a label map with non-consecutive values and an absent class, decoded by two independent readers: highdicom's,
and pydicom with our own frame-to-position mapping checked against the source slices' geometry. Then end to end:
`medseg predict --format dicom-seg` decodes to the `--format nifti` prediction, voxel for voxel."""

from __future__ import annotations

import random
import shutil
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("highdicom")
import highdicom as hd  # noqa: E402
import pydicom  # noqa: E402

from medseg.data.labels import LabelScheme  # noqa: E402
from medseg.inference.dicom_seg import write_dicom_seg  # noqa: E402
from medseg.inference.inputs import InputCase  # noqa: E402
from medseg.inference.writers import VolumeWriter  # noqa: E402
from medseg.io import Geometry, read_image  # noqa: E402
from medseg.io.dicom import list_dicom_series, read_dicom_series, write_dicom_series  # noqa: E402
from tests.conftest import run_cli, shared_path  # noqa: E402
from tests.helpers3d import oblique_direction, write_msd_dataset  # noqa: E402

OBLIQUE = Geometry((0.9, 1.1, 2.2), (12.0, -40.5, 7.25), oblique_direction(25.0, 10.0))


def realistic_series(folder: Path, volume: np.ndarray, geometry: Geometry, seed: int = 0, prefix: str = "IM") -> list[Path]:
    """Write ``volume (1, x, y, z)`` as an MR series, then shuffle the file names and give the slices odd instance
    numbers (descending, in steps of 7), as exports from scanners do."""
    files = write_dicom_series(folder, volume.astype(np.int16), geometry, modality="MR", file_prefix=prefix)
    rng = random.Random(seed)
    for i, f in enumerate(files):
        ds = pydicom.dcmread(f)
        ds.InstanceNumber = 1000 - 7 * i
        ds.save_as(f)
    names = [f"{rng.getrandbits(40):010x}.dcm" for _ in files]
    moved = []
    for f, name in zip(files, names):
        moved.append(f.rename(folder / name))
    return moved


def pydicom_decode(seg_path: Path, source_files: list[Path], shape: tuple[int, int, int], geometry: Geometry) -> np.ndarray:
    """The SEG's label values on the label grid ``(x, y, z)``, read with pydicom alone: every frame is placed by its
    own Image Position (Patient) through the grid's geometry; segment numbers map to the label values that the
    segment labels name (``value:<n>``)."""
    seg = pydicom.dcmread(seg_path)
    frames = seg.pixel_array.reshape((-1, int(seg.Rows), int(seg.Columns)))
    number_to_value = {int(s.SegmentNumber): int(str(s.SegmentLabel).split(":")[1]) for s in seg.SegmentSequence
                       if str(s.SegmentLabel).startswith("value:")}
    direction = np.asarray(geometry.direction, float).reshape(3, 3)
    origin, spacing = np.asarray(geometry.origin, float), np.asarray(geometry.spacing, float)
    sources = {pydicom.dcmread(f, stop_before_pixels=True).SOPInstanceUID: f for f in source_files}
    out = np.zeros(shape, np.int32)
    for i, group in enumerate(seg.PerFrameFunctionalGroupsSequence):
        position = np.asarray(group.PlanePositionSequence[0].ImagePositionPatient, float)
        referenced = group.DerivationImageSequence[0].SourceImageSequence[0].ReferencedSOPInstanceUID
        src = pydicom.dcmread(sources[referenced], stop_before_pixels=True)
        np.testing.assert_allclose(position, np.asarray(src.ImagePositionPatient, float), atol=1e-3)  # at its source slice
        index = (direction.T @ (position - origin)) / spacing
        k = int(round(index[2]))
        assert abs(index[2] - k) < 1e-3 and np.abs(index[:2]).max() < 1e-3
        # a frame's row r, column c lies at position + c * dcol * rowcos + r * drow * colcos: x along columns, y along rows
        values = np.vectorize(lambda n: number_to_value.get(int(n), 0))(frames[i])
        out[:, :, k] = values.T
    return out


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    """A folder holding a 35-slice oblique MR series of Hippocampus case 001 and a 6-slice second series, and the
    case's label map on the series' grid."""
    root = tmp_path_factory.mktemp("study")
    image = read_image(shared_path("datasets", "hippocampus", "imagesTr", "hippocampus_001.nii.gz"))
    label = read_image(shared_path("datasets", "hippocampus", "labelsTr", "hippocampus_001.nii.gz"))
    folder = root / "study"
    main = realistic_series(folder, image.array, OBLIQUE)
    realistic_series(folder, image.array[:, :, :, :6], OBLIQUE, seed=1, prefix="LOC")
    return folder, main, label.array[0].astype(np.int32)


def test_the_seg_decodes_to_the_labels_by_two_readers(study, tmp_path):
    folder, main, labels = study
    assert len(list_dicom_series(folder)) == 2
    volume = read_dicom_series(folder)  # the rule: the largest series
    assert volume.array.shape[1:] == labels.shape
    # label values 3 and 7 (non-consecutive); class 2 ("value:5") is never predicted: no segment for it
    values = [0, 3, 5, 7]
    ids = np.select([labels == 1, labels == 2], [1, 3], 0).astype(np.uint8)
    names = ["background", "value:3", "value:5", "value:7"]
    files = [s for s in list_dicom_series(folder) if s.uid == volume.meta["series_uid"]][0].files
    out = write_dicom_seg(tmp_path / "a.seg.dcm", files, ids, volume.geometry, class_names=names, class_values=values, run_id="test")
    seg = hd.seg.segread(str(out))
    numbers = {int(s.SegmentNumber): str(s.SegmentLabel) for s in seg.SegmentSequence if int(s.SegmentNumber) > 0}
    assert sorted(numbers.values()) == ["value:3", "value:7"]
    assert seg.SeriesInstanceUID != volume.meta["series_uid"]
    assert seg.ReferencedSeriesSequence[0].SeriesInstanceUID == volume.meta["series_uid"]
    assert len(seg.PerFrameFunctionalGroupsSequence) == int(np.any(ids > 0, axis=(0, 1)).sum())  # empty frames omitted
    want = np.asarray(values)[ids]
    # reader 1: highdicom, by source instance in the order of the sorted source slices
    sources = sorted((pydicom.dcmread(f, stop_before_pixels=True) for f in files),
                     key=lambda d: float(np.asarray(d.ImagePositionPatient, float) @ np.cross(*np.reshape(np.asarray(d.ImageOrientationPatient, float), (2, 3)))))
    pixels = seg.get_pixels_by_source_instance([d.SOPInstanceUID for d in sources], combine_segments=True, skip_overlap_checks=True)
    number_to_value = np.zeros(max(numbers) + 1, np.int32)
    for n, label in numbers.items():
        number_to_value[n] = int(label.split(":")[1])
    by_highdicom = np.stack([number_to_value[p].T for p in pixels], axis=-1)
    assert np.array_equal(by_highdicom, want)
    # reader 2: pydicom and our own placement of each frame by its position
    assert np.array_equal(pydicom_decode(out, list(files), labels.shape, volume.geometry), want)


def test_codes_come_from_the_dicom_context_groups_or_the_run(study, tmp_path):
    from medseg.inference.dicom_seg import segment_codes

    category, prop = segment_codes("hippocampus")
    assert (prop.value, prop.scheme_designator, category.meaning) == ("5366008", "SCT", "Anatomical Structure")
    category, prop = segment_codes("Neoplasm")
    assert category.meaning == "Morphologically Abnormal Structure"
    assert segment_codes("Anterior")[1].meaning == "Tissue"  # not a structure: the generic code, the name as label
    user = segment_codes("Anterior", {"value": "123", "scheme": "99LOCAL", "meaning": "Anterior hippocampus"})[1]
    assert (user.value, user.scheme_designator) == ("123", "99LOCAL")


def test_writer_refuses_a_seg_without_a_dicom_source(tmp_path):
    from medseg.errors import ConfigError

    writer = VolumeWriter(LabelScheme.from_json({"kind": "index", "names": ["bg", "fg"], "codes": [0, 1]}), "dicom-seg")
    with pytest.raises(ConfigError, match="needs DICOM series inputs"):
        writer.targets(tmp_path, InputCase("a", (tmp_path / "a.nii.gz",)), False, False)


@pytest.fixture(scope="module")
def blob_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("segrun")
    data = write_msd_dataset(tmp / "data", n=6)
    run = tmp / "run"
    run_cli("train", data, "--out", run, "--split", "66/17/17", "--epochs", "6", "--iterations", "8", "--batch-size", "2",
            "--features", "4", "--depth", "2", "--threads", "1", "--no-plan", "--patch-size", "16x16x8")
    return data, run


def test_predict_to_seg_matches_the_nifti_prediction(blob_run, tmp_path):
    data, run = blob_run
    image = read_image(sorted((data / "imagesTr").glob("*.nii.gz"))[0])
    series = tmp_path / "study" / "case"
    files = realistic_series(series, np.rint(image.array), image.geometry)
    run_cli("predict", run, series, "--out", tmp_path / "nifti", "--no-qc")
    nifti = read_image(tmp_path / "nifti" / "case.nii.gz").array[0].astype(np.int32)
    if not nifti.any():
        pytest.fail("the test model predicted nothing; train it longer")
    run_cli("predict", run, series, "--out", tmp_path / "seg", "--format", "dicom-seg", "--no-qc")
    seg_file = tmp_path / "seg" / "case.seg.dcm"
    seg = hd.seg.segread(str(seg_file))
    assert seg.SegmentationType in ("LABELMAP", "BINARY")
    values = {int(s.SegmentNumber): str(s.SegmentLabel) for s in seg.SegmentSequence if int(s.SegmentNumber) > 0}
    scheme = LabelScheme.from_json(__import__("json").loads((run / "medseg_run.json").read_text())["labels"])
    label_of = {name: scheme.codes[i] for i, name in enumerate(scheme.names)}
    assert set(values.values()) == {scheme.names[scheme.codes.index(v)] for v in np.unique(nifti) if v != 0}
    algorithm = seg.SegmentSequence[-1].SegmentationAlgorithmIdentificationSequence[0]
    assert algorithm.AlgorithmName == "medseg"
    volume = read_dicom_series(series)
    decoded = np.zeros(nifti.shape, np.int32)
    direction = np.asarray(volume.geometry.direction, float).reshape(3, 3)
    for i, group in enumerate(seg.PerFrameFunctionalGroupsSequence):
        position = np.asarray(group.PlanePositionSequence[0].ImagePositionPatient, float)
        k = int(round(((direction.T @ (position - np.asarray(volume.geometry.origin))) / np.asarray(volume.geometry.spacing))[2]))
        frame = seg.pixel_array.reshape((-1, int(seg.Rows), int(seg.Columns)))[i]
        decoded[:, :, k] = np.vectorize(lambda n: label_of[values[n]] if n in values else 0)(frame).T
    assert np.array_equal(decoded, nifti)
    assert files and not (tmp_path / "seg" / "case.nii.gz").exists()
    shutil.rmtree(tmp_path / "seg")


def test_medseg_reads_seg_back_as_label_values_binary_fractional_too(study, tmp_path):
    from pydicom.sr.codedict import codes

    from medseg.inference.dicom_seg import sorted_source
    from medseg.io.dicom_seg_read import read_seg_label

    folder, _, labels = study
    volume = read_dicom_series(folder)
    files = [s for s in list_dicom_series(folder) if s.uid == volume.meta["series_uid"]][0].files
    ids = np.select([labels == 1, labels == 2], [1, 3], 0).astype(np.uint8)  # class 2 absent
    values = [0, 3, 5, 7]
    seg = write_dicom_seg(tmp_path / "a.seg.dcm", files, ids, volume.geometry, class_names=["bg", "a", "b", "c"],
                          class_values=values, run_id="t")
    assert np.array_equal(read_seg_label(seg, volume).array[0], np.asarray(values)[ids])
    # a FRACTIONAL SEG as other tools write it: a voxel belongs to the segment at probability 0.5 or more
    datasets = sorted_source(files)
    frames = np.stack([(labels[:, :, k].T == 1) * 0.8 + (labels[:, :, k].T == 2) * 0.3 for k in range(labels.shape[2])])
    algorithm = hd.AlgorithmIdentificationSequence(name="other", family=codes.cid7162.ArtificialIntelligence, version="1")
    fractional = hd.seg.Segmentation(
        source_images=datasets, pixel_array=frames.astype(np.float32), segmentation_type="FRACTIONAL",
        segment_descriptions=[hd.seg.SegmentDescription(
            segment_number=1, segment_label="Anterior", segmented_property_category=codes.SCT.Tissue,
            segmented_property_type=codes.SCT.Tissue, algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
            algorithm_identification=algorithm)],
        series_instance_uid=hd.UID(), series_number=2, sop_instance_uid=hd.UID(), instance_number=1, manufacturer="x",
        manufacturer_model_name="x", software_versions="1", device_serial_number="1")
    fractional.save_as(tmp_path / "f.dcm")
    assert np.array_equal(read_seg_label(tmp_path / "f.dcm", volume).array[0], (labels == 1).astype(np.uint8))
