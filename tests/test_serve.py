"""`medseg serve` (issue 20): the REST API with FastAPI's test client (every endpoint and its errors), jobs kept
across a restart, retention, the token rules of the command, and a bounded load test against a real loopback
server (every job done or refused with 503, none lost, each mask that of its own input)."""

from __future__ import annotations

import io
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest

from fastapi.testclient import TestClient  # noqa: E402  (medseg[test] installs FastAPI and its test client's httpx2)

from medseg.inference.predictor import Predictor  # noqa: E402
from medseg.io import read_image, write_image  # noqa: E402
from medseg.serving.app import ServeSettings, create_app  # noqa: E402
from tests.conftest import free_port, run_cli  # noqa: E402
from tests.test_cohort import cohort  # noqa: E402,F401  (a tiny trained 3D run and six studies)

TOKEN = "test-token-0123456789"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
POST = {**AUTH, "Content-Type": "application/octet-stream"}


def _client(run, data_dir, **settings):
    app = create_app(Predictor.from_run(run), ServeSettings(Path(data_dir), TOKEN, **settings))
    return TestClient(app), app


def _wait(client, job_id, timeout=60):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = client.get(f"/v1/jobs/{job_id}", headers=AUTH).json()
        if job["status"] in ("done", "failed"):
            return job
        time.sleep(0.05)
    raise AssertionError(f"job {job_id} did not finish")


def _nifti(path: Path, data: bytes) -> np.ndarray:
    path.write_bytes(data)
    return read_image(path).array


def test_every_endpoint_and_its_errors(cohort, tmp_path, shared):  # noqa: F811
    run, studies, reference = cohort
    client, app = _client(run, tmp_path / "data", max_upload_bytes=2_000_000)
    assert client.get("/healthz").json() == {"status": "ok", "queued": 0, "token_required": True}
    assert client.get("/healthz", headers={"Host": "evil.example"}).status_code == 200  # (no host rule given here)
    assert "medseg" in client.get("/").text and client.get("/openapi.json").json()["info"]["version"] == "1"
    # the token: missing, wrong, right
    assert client.get("/v1/models").status_code == 401
    assert client.get("/v1/models", headers={"Authorization": "Bearer wrong-token-000000000"}).status_code == 401
    model = client.get("/v1/models", headers=AUTH).json()["models"][0]
    assert model["dims"] == 3 and model["channels"] == 1 and [c["id"] for c in model["classes"]] == [0, 1, 2]
    # a job: 202, then done, with its files
    scan = (studies / "s1.nii.gz").read_bytes()
    posted = client.post("/v1/jobs", content=scan, headers=POST)
    assert posted.status_code == 202 and posted.json()["status"] in ("queued", "running")
    job = _wait(client, posted.json()["id"])
    assert job["status"] == "done" and job["downloads"] == ["mask", "probabilities", "uncertainty"] and job["error"] is None
    mask = client.get(f"/v1/jobs/{job['id']}/mask", headers=AUTH)
    assert mask.status_code == 200 and 'filename="mask.nii.gz"' in mask.headers["content-disposition"]
    got = _nifti(tmp_path / "mask.nii.gz", mask.content)
    assert np.array_equal(got, read_image(reference / "s1.nii.gz").array)  # what `medseg predict` wrote
    probs = _nifti(tmp_path / "p.nii.gz", client.get(f"/v1/jobs/{job['id']}/probabilities", headers=AUTH).content)
    assert probs.shape[0] == 3 and np.allclose(probs.sum(0), 1, atol=1e-3)
    entropy = _nifti(tmp_path / "e.nii.gz", client.get(f"/v1/jobs/{job['id']}/uncertainty", headers=AUTH).content)
    assert entropy.shape[1:] == got.shape[1:] and 0 <= entropy.min() and entropy.max() <= 1
    assert client.get(f"/v1/jobs/{job['id']}/seg.dcm", headers=AUTH).status_code == 404  # not a DICOM input
    for plane in ("axial", "coronal", "sagittal"):
        view = client.get(f"/v1/jobs/{job['id']}/view", params={"plane": plane, "index": 2, "opacity": 0.5, "hide": "2"}, headers=AUTH)
        assert view.status_code == 200 and view.content[:4] == b"\x89PNG"
    assert client.get(f"/v1/jobs/{job['id']}/view", params={"plane": "oblique"}, headers=AUTH).status_code == 422
    assert client.get(f"/v1/jobs/{job['id']}/view", params={"hide": "../1"}, headers=AUTH).status_code == 422
    # errors: unknown job, not a scan, oversize, a 2D image to a 3D model, an empty body, a corrupt volume
    assert client.get("/v1/jobs/AAAAAAAAAAAAAAAAAAAAAA", headers=AUTH).status_code == 404
    assert client.get("/v1/jobs/..%2F..%2Fetc", headers=AUTH).status_code == 404
    refused = client.post("/v1/jobs", content=b"%PDF-1.4 not a scan" * 40, headers=POST)
    assert refused.status_code == 415 and "read from the content" in refused.json()["detail"]
    assert client.post("/v1/jobs", content=b"\0" * 2_000_001, headers=POST).status_code == 413
    png = next((shared("datasets", "drive") / "training" / "images").iterdir()).read_bytes()
    wrong = client.post("/v1/jobs", content=png, headers=POST)
    assert wrong.status_code == 422 and "2D image" in wrong.json()["detail"]
    assert client.post("/v1/jobs", content=b"", headers=POST).status_code == 422
    corrupt = client.post("/v1/jobs", content=scan[: len(scan) // 2], headers=POST)
    assert corrupt.status_code == 202  # the header is readable: the job fails, with its reason
    failed = _wait(client, corrupt.json()["id"])
    assert failed["status"] == "failed" and ("truncated" in failed["error"] or "corrupt" in failed["error"]), failed
    assert str(tmp_path) not in failed["error"]  # no server path in what clients see
    assert client.get(f"/v1/jobs/{failed['id']}/mask", headers=AUTH).status_code == 409
    assert client.post("/v1/jobs", content=scan, headers={**AUTH, "Content-Type": "text/plain"}).status_code == 415

    def chunks():  # no Content-Length: the limit holds while the body streams in
        for _ in range(3):
            yield b"\0" * 1_000_000

    assert client.post("/v1/jobs", content=chunks(), headers=POST).status_code == 413
    assert client.get(f"/v1/jobs/{job['id']}/view", params={"hide": "1" * 5000}, headers=AUTH).status_code == 422
    zipped = io.BytesIO()
    with zipfile.ZipFile(zipped, "w") as z:
        z.writestr("notes.txt", b"not dicom")
    bad_zip = client.post("/v1/jobs", content=zipped.getvalue(), headers=POST)
    assert bad_zip.status_code == 422 and "not DICOM" in bad_zip.json()["detail"]
    # DICOM files under names that climb out of any folder: unpacked under numbered names, never at those names
    from medseg.io.dicom import write_dicom_series

    files = write_dicom_series(tmp_path / "dcm", np.rint(read_image(studies / "s2.nii.gz").array).astype(np.int16),
                               read_image(studies / "s2.nii.gz").geometry, modality="MR")
    zipped = io.BytesIO()
    with zipfile.ZipFile(zipped, "w") as z:
        for i, f in enumerate(files):
            z.writestr(f"../../../evil{i}.dcm", f.read_bytes())
    climbing = client.post("/v1/jobs", content=zipped.getvalue(), headers=POST)
    assert climbing.status_code == 202
    assert _wait(client, climbing.json()["id"])["status"] == "done"
    assert not list(tmp_path.rglob("evil*")) and not list(tmp_path.parent.glob("evil*"))
    bomb = io.BytesIO()
    with zipfile.ZipFile(bomb, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("a.dcm", b"\0" * 128 + b"DICM" + b"\0" * 200_000_000)
    refused_bomb = client.post("/v1/jobs", content=bomb.getvalue(), headers=POST)
    assert refused_bomb.status_code == 422 and "zip bomb" in refused_bomb.json()["detail"]
    # nothing the requests named was written outside the jobs' folders
    assert {p.name for p in (tmp_path / "data").iterdir()} - {".medseg_owner"} == {"jobs", "incoming"}
    app.state.worker.stopping.set()


def test_a_full_queue_refuses_and_a_restart_keeps_results(cohort, tmp_path):  # noqa: F811
    run, studies, _ = cohort
    data = tmp_path / "data"
    client, app = _client(run, data, queue_size=2)
    done = _wait(client, client.post("/v1/jobs", content=(studies / "s0.nii.gz").read_bytes(), headers=POST).json()["id"])
    app.state.worker.stopping.set()  # the worker stops taking jobs: the queue fills
    app.state.worker.join(5)
    assert client.get("/healthz").status_code == 503
    scan = (studies / "s2.nii.gz").read_bytes()
    queued = [client.post("/v1/jobs", content=scan, headers=POST) for _ in range(3)]
    assert [r.status_code for r in queued] == [202, 202, 503] and queued[2].headers["retry-after"]
    # a new server on the same folder: the finished job and its files are there, the unfinished ones failed
    client2, app2 = _client(run, data)
    assert client2.get(f"/v1/jobs/{done['id']}", headers=AUTH).json()["status"] == "done"
    assert client2.get(f"/v1/jobs/{done['id']}/mask", headers=AUTH).status_code == 200
    for r in queued[:2]:
        job = client2.get(f"/v1/jobs/{r.json()['id']}", headers=AUTH).json()
        assert job["status"] == "failed" and "submit the scan again" in job["error"]
    app2.state.worker.stopping.set()
    # retention: at most one finished job kept
    client3, app3 = _client(run, tmp_path / "data3", max_jobs=1)
    first = _wait(client3, client3.post("/v1/jobs", content=scan, headers=POST).json()["id"])
    second = _wait(client3, client3.post("/v1/jobs", content=scan, headers=POST).json()["id"])
    deadline = time.monotonic() + 10
    while client3.get(f"/v1/jobs/{first['id']}", headers=AUTH).status_code != 404 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert client3.get(f"/v1/jobs/{first['id']}", headers=AUTH).status_code == 404
    assert client3.get(f"/v1/jobs/{second['id']}", headers=AUTH).status_code == 200
    assert not (tmp_path / "data3" / "jobs" / first["id"]).exists()
    app3.state.worker.stopping.set()


def test_the_command_binds_to_loopback_and_needs_a_token_elsewhere(cohort, tmp_path, capsys):  # noqa: F811
    run = cohort[0]
    run_cli("serve", run, "--host", "0.0.0.0", "--data-dir", tmp_path / "d", code=2)
    assert "a token is required" in capsys.readouterr().err
    run_cli("serve", run, "--token", "short", "--data-dir", tmp_path / "d", code=2)
    (tmp_path / "token").write_text("")
    run_cli("serve", run, "--token-file", tmp_path / "token", "--data-dir", tmp_path / "d", code=2)
    assert not (tmp_path / "d").exists()
    mine = tmp_path / "mine"  # a folder of the user's is not taken over
    (mine / "incoming").mkdir(parents=True)
    (mine / "incoming" / "notes.txt").write_text("keep")
    run_cli("serve", run, "--data-dir", mine, code=2)
    assert (mine / "incoming" / "notes.txt").read_text() == "keep"


def start_server(run: Path, data_dir: Path, *extra: str) -> tuple[subprocess.Popen, str]:
    """`medseg serve` on a free loopback port; (the process, its base URL) once /healthz answers."""
    import urllib.request

    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "medseg", "serve", str(run), "--port", str(port), "--data-dir", str(data_dir),
                               "--token", TOKEN, *extra], stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(url + "/healthz", timeout=1).read()
            return server, url
        except OSError:
            if server.poll() is not None:
                raise AssertionError(server.stdout.read().decode(errors="replace")) from None
            time.sleep(0.2)
    server.kill()
    raise AssertionError("the server did not start")


def test_a_bounded_load_from_eight_clients(cohort, tmp_path):  # noqa: F811
    from benchmarks.serve_load import load_test

    run, studies, reference = cohort
    inputs = [((studies / f"s{i}.nii.gz").read_bytes(), read_image(reference / f"s{i}.nii.gz").array) for i in range(6)]
    server, url = start_server(run, tmp_path / "data", "--queue", "4")
    try:
        import urllib.error
        import urllib.request

        with pytest.raises(urllib.error.HTTPError) as refused:  # a loopback server answers its own names only
            urllib.request.urlopen(urllib.request.Request(url + "/healthz", headers={"Host": "evil.example"}), timeout=10)
        assert refused.value.code == 400
        result = load_test(url, TOKEN, inputs, jobs=32, clients=8, timeout=120, pid=server.pid)
    finally:
        server.terminate()
        server.wait(10)
    assert result["lost"] == 0 and result["wrong_mask"] == 0 and result["other_errors"] == 0, result
    assert result["done"] + result["refused"] == 32 and result["done"] >= 4, result
    assert result["server_peak_mib"] < 1024  # one model and the jobs on disk: about 500 MiB measured


def test_a_2d_model_serves_images_with_their_overlay(tmp_path):
    from PIL import Image

    from tests.helpers2d import write_disc_dataset
    from tests.test_report import build_run_2d

    run = build_run_2d(tmp_path)
    image = next((write_disc_dataset(tmp_path / "more", n=1, size=40, seed=5) / "images").iterdir())
    client, app = _client(run, tmp_path / "data")
    model = client.get("/v1/models", headers=AUTH).json()["models"][0]
    assert model["dims"] == 2
    job = _wait(client, client.post("/v1/jobs", content=image.read_bytes(), headers=POST).json()["id"])
    assert job["status"] == "done" and job["shape"] == [40, 40]
    run_cli("predict", run, image, "--out", tmp_path / "reference")
    mask = client.get(f"/v1/jobs/{job['id']}/mask", headers=AUTH)
    assert 'filename="mask.png"' in mask.headers["content-disposition"]
    reference = tmp_path / "reference" / f"{image.stem}.png"
    assert np.array_equal(np.asarray(Image.open(io.BytesIO(mask.content))), np.asarray(Image.open(reference)))
    view = Image.open(io.BytesIO(client.get(f"/v1/jobs/{job['id']}/view", headers=AUTH).content))
    assert view.size == (512, 512) and view.mode == "RGB"
    volume = tmp_path / "v.nii.gz"
    write_image(volume, np.zeros((1, 8, 8, 8), np.float32))
    wrong = client.post("/v1/jobs", content=volume.read_bytes(), headers=POST)
    assert wrong.status_code == 422 and "3D volume" in wrong.json()["detail"]
    app.state.worker.stopping.set()


def test_a_zipped_dicom_series_gets_its_mask_and_a_dicom_seg(cohort, tmp_path):  # noqa: F811
    pytest.importorskip("highdicom")
    from medseg.io.dicom import write_dicom_series

    run, studies, _ = cohort
    image = read_image(studies / "s3.nii.gz")
    series = tmp_path / "series"
    files = write_dicom_series(series, np.rint(image.array).astype(np.int16), image.geometry, modality="MR")
    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w") as z:
        for f in files:
            z.write(f, f"some folder/{f.name}")
    run_cli("predict", run, series, "--out", tmp_path / "reference", "--no-qc")
    client, app = _client(run, tmp_path / "data")
    job = _wait(client, client.post("/v1/jobs", content=archive.getvalue(), headers=POST).json()["id"])
    assert job["status"] == "done" and job["kind"] == "dicom-zip", job
    got = _nifti(tmp_path / "m.nii.gz", client.get(f"/v1/jobs/{job['id']}/mask", headers=AUTH).content)
    assert np.array_equal(got, read_image(tmp_path / "reference" / "series.nii.gz").array)
    if job["classes"]:  # a SEG needs a predicted segment
        import highdicom as hd

        seg = client.get(f"/v1/jobs/{job['id']}/seg.dcm", headers=AUTH)
        assert seg.status_code == 200 and seg.headers["content-type"] == "application/dicom"
        (tmp_path / "seg.dcm").write_bytes(seg.content)
        assert hd.seg.segread(str(tmp_path / "seg.dcm")).SeriesInstanceUID
    else:
        assert "seg.dcm" not in job["downloads"]
    app.state.worker.stopping.set()
