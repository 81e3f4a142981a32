"""Cohort prediction on Ray (issue 21): on one local Ray instance for the module (`ray start --head` on the
loopback address, 2 CPUs), every study predicted exactly as `medseg predict` does in-process, a corrupt study
recorded while the rest finish, a network actor killed mid-run restarted and its studies retried, a driver killed
mid-run resumed without redoing finished studies, and a missing file or a cluster too small refused up front."""

from __future__ import annotations

import csv
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

ray = pytest.importorskip("ray")

from medseg.inference.cohort import FAILURES_CSV, STATUS_CSV, read_manifest, run_cohort  # noqa: E402
from medseg.inference.cohort_ray import RayEngine  # noqa: E402
from medseg.inference.predictor import Predictor  # noqa: E402
from medseg.io import read_image  # noqa: E402
from tests.conftest import free_port, run_cli  # noqa: E402
from tests.test_cohort import _manifest, _same_as_reference, cohort  # noqa: E402,F401  (the module's trained run)

NAMES = [f"s{i}" for i in range(6)]
RAY = str(Path(sys.executable).with_name("ray"))


@pytest.fixture(scope="module")
def ray_address(tmp_path_factory):
    """One local Ray instance for the module, connected to from this process and from the CLI's drivers."""
    port = free_port()
    temp = tmp_path_factory.mktemp("ray")
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0"}
    subprocess.run([RAY, "start", "--head", "--node-ip-address", "127.0.0.1", "--port", str(port), "--num-cpus", "2",
                    "--include-dashboard", "false", "--disable-usage-stats", "--temp-dir", str(temp)],
                   check=True, capture_output=True, env=env, timeout=120)
    address = f"127.0.0.1:{port}"
    RayEngine(address).connect()
    yield address
    ray.shutdown()
    subprocess.run([RAY, "stop", "--force"], capture_output=True, env=env, timeout=120)


def test_ray_predicts_as_inprocess_and_a_corrupt_study_fails_alone(cohort, ray_address, tmp_path):  # noqa: F811
    run, studies, reference = cohort
    bad = tmp_path / "bad.nii.gz"
    raw = (studies / "s0.nii.gz").read_bytes()
    bad.write_bytes(raw[: len(raw) // 2])
    manifest = _manifest(tmp_path / "cohort.csv", studies, NAMES)
    with manifest.open("a") as f:
        f.write(f"{bad},id_bad,site_x\n")
    out = tmp_path / "out"
    predictor = Predictor.from_run(run)
    result = run_cohort(predictor, read_manifest(manifest, 3), out, engine=RayEngine(ray_address, actors=2, cpus_per_actor=0.5))
    assert (result.done, [f[0] for f in result.failed]) == (6, ["id_bad"])
    failures = list(csv.DictReader((out / FAILURES_CSV).open()))
    assert [r["id"] for r in failures] == ["id_bad"] and ("truncated" in failures[0]["error"] or "corrupt" in failures[0]["error"])
    status = list(csv.DictReader((out / STATUS_CSV).open()))
    assert sorted(r["id"] for r in status) == sorted(f"id_{n}" for n in NAMES)
    assert all(r["site"] == "site_" + r["id"][3:] and len(r["sha256"]) == 64 for r in status)
    _same_as_reference(out, reference, NAMES)
    assert set(result.stage_seconds) == {"read", "network", "write"} and result.stage_seconds["network"] > 0
    assert "seconds per stage" in (out / "cohort.log").read_text()


def _copies(studies: Path, folder: Path, n: int) -> list[str]:
    """``n`` studies ``s0..`` in ``folder``, copies of the six studies in turn."""
    folder.mkdir()
    names = [f"s{i}" for i in range(n)]
    for i, name in enumerate(names):
        shutil.copy(studies / f"s{i % 6}.nii.gz", folder / f"{name}.nii.gz")
    return names


def _same_as_copies(out: Path, reference: Path, names: list[str]) -> None:
    for i, n in enumerate(names):
        got, want = read_image(out / f"id_{n}.nii.gz"), read_image(reference / f"s{i % 6}.nii.gz")
        assert (got.array == want.array).all() and got.geometry == want.geometry, n


def test_a_killed_actor_is_restarted_and_its_studies_retried(cohort, ray_address, tmp_path):  # noqa: F811
    run, studies, reference = cohort
    names = _copies(studies, tmp_path / "many", 18)
    manifest = _manifest(tmp_path / "cohort.csv", tmp_path / "many", names)
    engine = RayEngine(ray_address, actors=1, in_flight=18)
    seen: dict = {}

    def kill_after_first(name, done, total):
        if done == 1:  # the other 17 studies are queued on the actor or on their way to it
            [seen["killed"]] = engine.actor_pids
            os.kill(seen["killed"], signal.SIGKILL)
        elif done == total:
            [seen["after"]] = engine.pids()

    result = run_cohort(Predictor.from_run(run), read_manifest(manifest, 3), tmp_path / "out", engine=engine,
                        on_study=kill_after_first)
    assert (result.done, result.failed) == (18, [])
    assert seen["after"] != seen["killed"]  # a new process: the actor was restarted, and every study still finished
    _same_as_copies(tmp_path / "out", reference, names)


def test_a_killed_driver_resumes_without_redoing_finished_studies(cohort, ray_address, tmp_path):  # noqa: F811
    run, studies, reference = cohort
    names = _copies(studies, tmp_path / "many", 18)
    manifest = _manifest(tmp_path / "cohort.csv", tmp_path / "many", names)
    out = tmp_path / "out"
    command = [sys.executable, "-m", "medseg", "predict", str(run), "--manifest", str(manifest), "--out", str(out),
               "--engine", "ray", "--address", ray_address, "--no-qc"]
    driver = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    status = out / STATUS_CSV
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and driver.poll() is None:
        if status.is_file() and len(status.read_text().splitlines()) >= 3:  # header and two studies
            break
        time.sleep(0.05)
    os.killpg(driver.pid, signal.SIGKILL)
    driver.wait()
    first = {r["id"]: r["sha256"] for r in csv.DictReader(status.open())}
    assert 2 <= len(first) < len(names), "the driver should be killed mid-run"
    kept = {i: (out / f"{i}.nii.gz").stat().st_mtime_ns for i in first}
    done = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    said = " ".join((done.stdout + done.stderr).split())
    assert f"{len(first)} already done" in said, said
    assert {i: (out / f"{i}.nii.gz").stat().st_mtime_ns for i in first} == kept  # finished studies not redone
    rows = list(csv.DictReader(status.open()))
    assert sorted(r["id"] for r in rows) == sorted(f"id_{n}" for n in names)
    _same_as_copies(out, reference, names)


def test_missing_files_and_a_cluster_too_small_are_refused_up_front(cohort, ray_address, tmp_path, capsys):  # noqa: F811
    run, studies, _ = cohort
    manifest = _manifest(tmp_path / "cohort.csv", studies, NAMES[:2])
    with manifest.open("a") as f:
        f.write(f"{tmp_path / 'gone.nii.gz'},id_gone,site_x\n")
    run_cli("predict", run, "--manifest", manifest, "--out", tmp_path / "out", "--engine", "ray", "--address", ray_address, code=2)
    assert "1 of 3 studies in the manifest are not found" in capsys.readouterr().err.replace("\n", " ")
    assert not (tmp_path / "out").exists()
    manifest = _manifest(tmp_path / "ok.csv", studies, NAMES[:2])
    run_cli("predict", run, "--manifest", manifest, "--out", tmp_path / "out", "--engine", "ray", "--address", ray_address,
            "--actors", "3", code=2)
    err = capsys.readouterr().err.replace("\n", " ")
    assert "leave no CPU for reading and writing" in err and "--cpus-per-actor" in err
    assert not (tmp_path / "out").exists()
    run_cli("predict", run, studies, "--out", tmp_path / "out", "--actors", "2", code=2)  # not a cohort
