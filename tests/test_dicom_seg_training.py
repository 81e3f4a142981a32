"""Training from DICOM series with DICOM SEG labels (issue 18): 20 shared Hippocampus cases written as MR series
(one folder each, shuffled file names) with their labels as SEG files in another folder; the layout is found, each
SEG matched to its series by the Referenced Series UID, its segments become the classes by their labels; a
make-test-sized run trains, evaluates, and predicts a SEG. Inconsistent segment numbering and a SEG of a missing
series are refused, naming the files."""

from __future__ import annotations

import json
import random

import numpy as np
import pytest

pytest.importorskip("highdicom")
import pydicom  # noqa: E402

from medseg.data.dataset_kind import is_volume_dataset  # noqa: E402
from medseg.data.layouts import discover_volume_cases  # noqa: E402
from medseg.data.volume_case import load_case  # noqa: E402
from medseg.errors import DataError  # noqa: E402
from medseg.inference.dicom_seg import write_dicom_seg  # noqa: E402
from medseg.io import read_image  # noqa: E402
from medseg.io.dicom import list_dicom_series, read_dicom_series, write_dicom_series  # noqa: E402
from tests.conftest import run_cli, shared_path  # noqa: E402

N_CASES = 20


def _convert(root, n=N_CASES):
    """``root/series/<case>/`` MR series and ``root/seg/<case>.dcm`` SEGs of the first ``n`` shared cases; returns
    the label maps by case."""
    images = sorted(shared_path("datasets", "hippocampus", "imagesTr").glob("hippocampus_*.nii.gz"))[:n]
    truth = {}
    rng = random.Random(0)
    (root / "seg").mkdir(parents=True)
    for f in images:
        case = f.name.removesuffix(".nii.gz")
        image = read_image(f)
        label = read_image(f.parent.parent / "labelsTr" / f.name).array[0].astype(np.uint8)
        folder = root / "series" / case
        files = write_dicom_series(folder, image.array.astype(np.int16), image.geometry, modality="MR",
                                   patient_id=case, description="T1")
        for p in files:
            p.rename(folder / f"{rng.getrandbits(32):08x}.dcm")
        series = list_dicom_series(folder)[0]
        volume = read_dicom_series(folder)
        assert set(np.unique(label)) == {0, 1, 2}  # both classes: segment numbers 1 and 2 in every SEG
        write_dicom_seg(root / "seg" / f"{case}.dcm", series.files, label, volume.geometry,
                        class_names=["background", "Anterior", "Posterior"], class_values=[0, 1, 2], run_id="truth")
        truth[case] = label
    return truth


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp("dicomseg") / "data"
    return root, _convert(root)


def test_the_layout_is_found_and_each_seg_decodes_on_its_series(dataset):
    root, truth = dataset
    assert is_volume_dataset(root)
    cases, info = discover_volume_cases(root)
    assert info["layout"] == "dicom-seg" and info["labels"] == {0: "background", 1: "Anterior", 2: "Posterior"}
    assert info["channel_names"] == ["MR"] and len(cases) == N_CASES
    for case in cases[:4]:
        name = case.images[0].name
        _, label = load_case(case)
        assert np.array_equal(label.array[0], truth[name]), name


def test_train_evaluate_and_predict_a_seg(dataset, tmp_path, one_thread):
    root, truth = dataset
    run = tmp_path / "run"
    run_cli("train", root, "--out", run, "--split", "60/20/20", "--epochs", "8", "--iterations", "6", "--batch-size", "2",
            "--features", "8", "--depth", "2", "--threads", "1", "--no-plan", "--patch-size", "32x32x32")
    info = json.loads((run / "medseg_run.json").read_text())
    assert info["labels"]["names"][1:] == ["Anterior", "Posterior"]
    run_cli("evaluate", run, "--out", tmp_path / "ev")
    summary = json.loads((tmp_path / "ev" / "summary.json").read_text())
    assert summary["images"] == 4 and set(summary["classes"]) == {"Anterior", "Posterior"}
    assert summary["mean_dice"]["mean"] > 0.05  # it learned from the SEG labels
    test_keys = [e["key"] for e in json.loads((run / "split.json").read_text())["test"]]
    series = root / "series" / test_keys[0].split("_", 1)[1] if test_keys[0].startswith("series_") else root / "series" / test_keys[0]
    run_cli("predict", run, series, "--out", tmp_path / "nifti", "--no-qc")
    run_cli("predict", run, series, "--out", tmp_path / "pred", "--format", "dicom-seg", "--no-qc")
    volume = read_dicom_series(series)
    from medseg.io.dicom_seg_read import read_seg_label

    decoded = read_seg_label(tmp_path / "pred" / f"{series.name}.seg.dcm", volume).array[0]
    assert np.array_equal(decoded, read_image(tmp_path / "nifti" / f"{series.name}.nii.gz").array[0])


def test_inconsistent_segment_numbers_and_a_missing_series_are_refused(dataset, tmp_path):
    root, _ = dataset
    import shutil

    bad = tmp_path / "bad"
    shutil.copytree(root / "series" / "hippocampus_001", bad / "series" / "a")
    shutil.copytree(root / "series" / "hippocampus_003", bad / "series" / "b")
    (bad / "seg").mkdir()
    shutil.copy(root / "seg" / "hippocampus_001.dcm", bad / "seg" / "a.dcm")
    renumbered = pydicom.dcmread(root / "seg" / "hippocampus_003.dcm")
    for s in renumbered.SegmentSequence:
        if int(s.SegmentNumber) == 1:
            s.SegmentLabel = "Posterior"
        elif int(s.SegmentNumber) == 2:
            s.SegmentLabel = "Anterior"
    renumbered.save_as(bad / "seg" / "b.dcm")
    with pytest.raises(DataError, match="segment 1 is 'Anterior' in a.dcm but 'Posterior' in b.dcm"):
        discover_volume_cases(bad)
    lone = pydicom.dcmread(root / "seg" / "hippocampus_003.dcm")  # 'Anterior' as a new number, 3
    lone.SegmentSequence = pydicom.Sequence([x for x in lone.SegmentSequence if int(x.SegmentNumber) == 2])
    lone.SegmentSequence[0].SegmentNumber, lone.SegmentSequence[0].SegmentLabel = 3, "Anterior"
    lone.save_as(bad / "seg" / "b.dcm")
    with pytest.raises(DataError, match="segment 'Anterior' is number 3 in b.dcm but 1 in a.dcm"):
        discover_volume_cases(bad)
    shutil.rmtree(bad / "series" / "b")
    shutil.copy(root / "seg" / "hippocampus_003.dcm", bad / "seg" / "b.dcm")
    with pytest.raises(DataError, match="not in the dataset folder") as e:
        discover_volume_cases(bad)
    assert "b.dcm" in str(e.value)
