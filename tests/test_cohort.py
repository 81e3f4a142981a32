"""Cohort prediction from a manifest (issue 21, the in-process engine): outputs identical to `medseg predict`, a
corrupt study recorded in failures.csv while the rest finish, an interrupted driver resumed without redoing
finished studies, a tampered output redone, missing files reported up front, --max-failures."""

from __future__ import annotations

import csv
import shutil

import numpy as np
import pytest

from medseg.inference.cohort import FAILURES_CSV, STATUS_CSV, read_manifest, run_cohort
from medseg.inference.predictor import Predictor
from medseg.io import read_image
from tests.conftest import run_cli
from tests.helpers3d import write_msd_dataset

FAST = ["--epochs", "1", "--iterations", "1", "--batch-size", "2", "--features", "4", "--depth", "2", "--threads", "1",
        "--no-plan", "--patch-size", "16x16x8"]


@pytest.fixture(scope="module")
def cohort(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("cohort")
    data = write_msd_dataset(tmp / "data", n=6)
    run = tmp / "run"
    run_cli("train", data, "--out", run, "--split", "66/17/17", *FAST)
    studies = tmp / "studies"
    studies.mkdir()
    for i, f in enumerate(sorted((data / "imagesTr").glob("*.nii.gz"))):
        shutil.copy(f, studies / f"s{i}.nii.gz")
    reference = tmp / "reference"
    run_cli("predict", run, studies, "--out", reference, "--no-qc")
    return run, studies, reference


def _manifest(path, studies, names):
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["path", "id", "site"])
        for n in names:
            w.writerow([str(studies / f"{n}.nii.gz"), f"id_{n}", f"site_{n}"])
    return path


def _same_as_reference(out, reference, names):
    for n in names:
        got = read_image(out / f"id_{n}.nii.gz")
        want = read_image(reference / f"{n}.nii.gz")
        assert np.array_equal(got.array, want.array) and got.geometry == want.geometry, n


def test_a_corrupt_study_fails_alone_and_a_rerun_finishes(cohort, tmp_path):
    run, studies, reference = cohort
    names = [f"s{i}" for i in range(6)]
    bad = tmp_path / "bad.nii.gz"
    raw = (studies / "s0.nii.gz").read_bytes()
    bad.write_bytes(raw[: len(raw) // 2])
    manifest = _manifest(tmp_path / "cohort.csv", studies, names[1:])
    with manifest.open("a") as f:
        f.write(f"{bad},id_bad,site_x\n")
    out = tmp_path / "out"
    run_cli("predict", run, "--manifest", manifest, "--out", out, code=1)
    failures = list(csv.DictReader((out / FAILURES_CSV).open()))
    assert [r["id"] for r in failures] == ["id_bad"] and ("truncated" in failures[0]["error"] or "corrupt" in failures[0]["error"])
    status = list(csv.DictReader((out / STATUS_CSV).open()))
    assert sorted(r["id"] for r in status) == [f"id_{n}" for n in names[1:]]
    assert all(r["site"] == "site_" + r["id"][3:] and len(r["sha256"]) == 64 for r in status)
    _same_as_reference(out, reference, names[1:])
    assert "studies/min" in (out / "cohort.log").read_text()
    # the study is repaired: a rerun predicts it alone and clears failures.csv
    shutil.copy(studies / "s0.nii.gz", bad)
    before = {p.name: p.stat().st_mtime_ns for p in out.glob("id_s*.nii.gz")}
    run_cli("predict", run, "--manifest", manifest, "--out", out)
    assert {p.name: p.stat().st_mtime_ns for p in out.glob("id_s*.nii.gz")} == before  # finished ones not redone
    assert (out / "id_bad.nii.gz").is_file() and not (out / FAILURES_CSV).exists()


def test_an_interrupted_driver_resumes_and_a_tampered_output_is_redone(cohort, tmp_path):
    run, studies, reference = cohort
    names = [f"s{i}" for i in range(6)]
    manifest = _manifest(tmp_path / "cohort.csv", studies, names)
    predictor = Predictor.from_run(run)
    out = tmp_path / "out"

    def stop_after_two(name, done, total):
        if done == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_cohort(predictor, read_manifest(manifest, 3), out, on_study=stop_after_two)
    assert len(list(csv.DictReader((out / STATUS_CSV).open()))) == 2
    (out / "id_s0.nii.gz").write_bytes(b"tampered")
    result = run_cohort(predictor, read_manifest(manifest, 3), out)
    assert (result.skipped, result.done, result.failed) == (1, 5, [])
    _same_as_reference(out, reference, names)


def test_missing_files_are_reported_up_front_and_max_failures_stops(cohort, tmp_path, capsys):
    run, studies, _ = cohort
    manifest = _manifest(tmp_path / "cohort.csv", studies, ["s1", "nope1", "s2", "nope2"])
    run_cli("predict", run, "--manifest", manifest, "--out", tmp_path / "out", code=2)
    said = capsys.readouterr().err
    assert "2 of 4 studies" in said and "nope1" in said and "nope2" in said and not (tmp_path / "out").exists()
    for name in ("b1", "b2"):
        (tmp_path / f"{name}.nii.gz").write_bytes(b"not a volume")
    with (tmp_path / "bad.csv").open("w") as f:
        f.write(f"path\n{tmp_path / 'b1.nii.gz'}\n{tmp_path / 'b2.nii.gz'}\n{studies / 's1.nii.gz'}\n")
    run_cli("predict", run, "--manifest", tmp_path / "bad.csv", "--out", tmp_path / "o2", "--max-failures", "0", code=1)
    assert len(list(csv.DictReader((tmp_path / "o2" / FAILURES_CSV).open()))) == 1
    assert not (tmp_path / "o2" / "s1.nii.gz").exists()


def test_manifests_and_folders_that_would_misplace_outputs_are_refused(cohort, tmp_path):
    run, studies, _ = cohort
    s1 = studies / "s1.nii.gz"
    cases = {
        "escape.csv": f"path,id\n{s1},../escaped\n",
        "reserved.csv": f"path,sha256\n{s1},abc\n",
        "ragged.csv": f"path,site\n{s1},Boston, MA\n",
        "case.csv": f"path,id\n{s1},Case1\n{studies / 's2.nii.gz'},case1\n",
    }
    for name, text in cases.items():
        (tmp_path / name).write_text(text)
        run_cli("predict", run, "--manifest", tmp_path / name, "--out", tmp_path / ("o_" + name), code=2)
        assert not (tmp_path / ("o_" + name)).exists(), name
    assert not (studies.parent / "escaped.nii.gz").exists()
    # a format the studies cannot take is refused before anything is predicted
    run_cli("predict", run, "--manifest", _manifest(tmp_path / "m.csv", studies, ["s1"]), "--out", tmp_path / "seg",
            "--format", "dicom-seg", code=2)
    assert not (tmp_path / "seg").exists()
    # a folder of studies whose outputs would share a name
    two = tmp_path / "two"
    two.mkdir()
    shutil.copy(s1, two / "a.nii.gz")
    shutil.copy(s1, two / "a.nii")
    run_cli("predict", run, "--manifest", two, "--out", tmp_path / "o_two", code=2)
    # resuming with other settings would mix outputs
    manifest = _manifest(tmp_path / "ok.csv", studies, ["s1"])
    run_cli("predict", run, "--manifest", manifest, "--out", tmp_path / "ok")
    run_cli("predict", run, "--manifest", manifest, "--out", tmp_path / "ok", "--tta", code=2)
