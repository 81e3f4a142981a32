"""A bounded load test of ``medseg serve`` (issue 20): ``--jobs`` jobs from ``--clients`` concurrent clients
against a loopback server, stopping by itself (a deadline per job).

Every job must end done, or be refused with 503/429 when the queue is full (a client then tries again every 0.2 s
until the deadline: "refusals" counts those answers, "refused" the jobs never accepted); none may be lost (accepted
and never finished) and each mask must be the one of its own input (compared with the in-process prediction of that
input). Reports throughput, latency percentiles (submission to mask downloaded) and the server's peak memory.

    python -m benchmarks.serve_load --run RUN --inputs ../shared/datasets/hippocampus/imagesTr [--jobs 200]
        [--clients 8] [--append]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np


def _request(url: str, token: str, data: bytes | None = None, timeout: float = 60) -> tuple[int, bytes]:
    req = urllib.request.Request(url, data=data, headers={"Authorization": f"Bearer {token}",
                                                         "Content-Type": "application/octet-stream"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def _rss_mib(pid: int | None) -> float:
    if pid is None:
        return float("nan")
    try:
        with open(f"/proc/{pid}/status") as f:
            return next(int(line.split()[1]) / 1024 for line in f if line.startswith("VmRSS:"))
    except (OSError, StopIteration):
        return float("nan")


def load_test(url: str, token: str, inputs: list[tuple[bytes, np.ndarray]], jobs: int = 200, clients: int = 8,
              timeout: float = 600, pid: int | None = None) -> dict:
    """Run the load (see the module doc); ``inputs``: (the scan's bytes, its expected label array)."""
    from medseg.io import read_image

    counts = {"done": 0, "refused": 0, "lost": 0, "wrong_mask": 0, "other_errors": 0, "refusals": 0}
    latencies: list[float] = []
    lock = threading.Lock()
    next_job = iter(range(jobs))
    peak = [_rss_mib(pid)]
    stop = threading.Event()
    deadline = time.monotonic() + timeout

    def sample():
        while not stop.wait(0.2):
            peak[0] = max(peak[0], _rss_mib(pid))

    def client(tmp: Path):
        while True:
            with lock:
                i = next(next_job, None)
            if i is None:
                return
            scan, expected = inputs[i % len(inputs)]
            t0 = time.monotonic()
            status, body = _request(url + "/v1/jobs", token, scan)
            while status in (429, 503) and time.monotonic() < deadline:  # the queue is full: try again shortly
                with lock:
                    counts["refusals"] += 1
                time.sleep(0.2)
                status, body = _request(url + "/v1/jobs", token, scan)
            if status in (429, 503):
                with lock:
                    counts["refused"] += 1
                continue
            if status != 202:
                with lock:
                    counts["other_errors"] += 1
                continue
            job_id = json.loads(body)["id"]
            outcome = "lost"
            while time.monotonic() < deadline:
                status, body = _request(f"{url}/v1/jobs/{job_id}", token)
                job = json.loads(body) if status == 200 else {}
                if job.get("status") == "done":
                    status, mask = _request(f"{url}/v1/jobs/{job_id}/mask", token)
                    path = tmp / f"{job_id}.nii.gz"
                    path.write_bytes(mask)
                    same = status == 200 and np.array_equal(read_image(path).array, expected)
                    outcome = "done" if same else "wrong_mask"
                    break
                if job.get("status") == "failed" or status != 200:
                    outcome = "other_errors"
                    break
                time.sleep(0.05)
            with lock:
                counts[outcome] += 1
                if outcome == "done":
                    latencies.append(time.monotonic() - t0)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    started = time.monotonic()
    with tempfile.TemporaryDirectory() as tmp:
        threads = [threading.Thread(target=client, args=(Path(tmp),)) for _ in range(clients)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    wall = time.monotonic() - started
    stop.set()
    lat = np.array(latencies) if latencies else np.array([np.nan])
    return {**counts, "jobs": jobs, "clients": clients, "wall_s": wall, "done_per_min": 60 * counts["done"] / wall,
            "p50_s": float(np.percentile(lat, 50)), "p90_s": float(np.percentile(lat, 90)), "p99_s": float(np.percentile(lat, 99)),
            "server_peak_mib": peak[0]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--run", type=Path, required=True)
    parser.add_argument("--inputs", type=Path, required=True, help="a folder of scans the run segments")
    parser.add_argument("--jobs", type=int, default=200)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--queue", type=int, default=16)
    parser.add_argument("--append", action="store_true", help="add the table to BENCHMARKS.md")
    args = parser.parse_args()
    from benchmarks.common import describe, publish
    from medseg.inference.predictor import Predictor
    from medseg.io import read_image
    from tests.test_serve import TOKEN, start_server

    files = sorted(p for p in args.inputs.iterdir() if not p.name.startswith("."))[: args.jobs]
    predictor = Predictor.from_run(args.run)
    inputs = []
    for f in files:  # the expected masks: the in-process prediction of each input, written as the server writes it
        pred = predictor.predict(read_image(f))
        inputs.append((f.read_bytes(), predictor.scheme.encode(pred.labels)))  # (1, x, y, z), as read back
    with tempfile.TemporaryDirectory() as tmp:
        server, url = start_server(args.run, Path(tmp) / "data", "--queue", str(args.queue))
        try:
            r = load_test(url, TOKEN, inputs, args.jobs, args.clients, pid=server.pid)
        finally:
            server.terminate()
            server.wait(10)
    lines = ["", f"## `medseg serve` under load (issue 20): {args.jobs} jobs from {args.clients} clients", "", describe(), "",
             f"Run: {args.run.name}; {len(files)} different scans from {args.inputs.name}, each job's mask compared with the "
             f"in-process prediction of its own input; queue {args.queue}; server and clients on this machine (loopback).", "",
             "| jobs | done | 503 answers (retried) | never accepted | lost | wrong mask | other errors | wall s | done/min | "
             "latency p50 / p90 / p99 s (submission to mask, retries included) | server peak MiB |", "|---|---|---|---|---|---|---|---|---|---|---|",
             f"| {r['jobs']} | {r['done']} | {r['refusals']} | {r['refused']} | {r['lost']} | {r['wrong_mask']} | {r['other_errors']} | {r['wall_s']:.0f} | "
             f"{r['done_per_min']:.0f} | {r['p50_s']:.2f} / {r['p90_s']:.2f} / {r['p99_s']:.2f} | {r['server_peak_mib']:.0f} |"]
    publish("\n".join(lines), args.append)


if __name__ == "__main__":
    main()
