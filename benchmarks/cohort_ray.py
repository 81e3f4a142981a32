"""Cohort prediction, measured (issue 21): the in-process engine against Ray with 1 and 2 network actors on a
local Ray cluster (``ray start --head`` on the loopback address with this machine's CPUs), on a cohort of
``--studies`` studies made from a folder of inputs, each used again under new ids until the count is reached.

For each engine: the wall time of the whole cohort (start-up included) and the steady throughput (studies per
minute from the first study's end to the last's); the mean seconds per study of each stage (read + preprocess,
network, restore + write), summed over the studies in the workers; the largest resident memory of the driver, of
each network actor and of each task worker (sampled every 0.2 s from /proc); and whether every engine wrote the
same label files (SHA-256 of the status file per id).

    python -m benchmarks.cohort_ray --run RUN --inputs ../shared/datasets/hippocampus/imagesTr [--studies 400]
        [--engines inprocess,ray1,ray2] [--append]
"""

from __future__ import annotations

import argparse
import csv
import os
import resource
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

RAY = str(Path(sys.executable).with_name("ray"))
#: engine name -> RayEngine options (None: in-process)
ENGINES = {"inprocess": None, "ray1": {"actors": 1, "cpus_per_actor": 1.0}, "ray1x2": {"actors": 1, "cpus_per_actor": 1.5},
           "ray2": {"actors": 2, "cpus_per_actor": 0.75}}


def _rss_mib(pid: int) -> float:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def _title(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().split(b"\0")[0].decode(errors="replace")
    except OSError:
        return ""


class MemorySampler(threading.Thread):
    """The largest RSS of every Ray worker process (``ray::...``), by pid, and whether it ever ran the actor."""

    def __init__(self):
        super().__init__(daemon=True)
        self.peak: dict[int, float] = {}
        self.actor: set[int] = set()
        self.stop = threading.Event()

    def run(self):
        while not self.stop.wait(0.2):
            for name in os.listdir("/proc"):
                if name.isdigit():
                    title = _title(int(name))
                    if title.startswith("ray::"):
                        pid = int(name)
                        self.peak[pid] = max(self.peak.get(pid, 0.0), _rss_mib(pid))
                        if "NetworkActor" in title:
                            self.actor.add(pid)


def _manifest(inputs: Path, n: int, path: Path) -> Path:
    files = sorted(p for p in inputs.iterdir() if not p.name.startswith("."))
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["path", "id"])
        for i in range(n):
            src = files[i % len(files)]
            w.writerow([str(src), f"study{i:05d}"])
    return path


def _run(run: Path, manifest: Path, out: Path, options: dict | None, address: str | None) -> dict:
    from medseg.inference.cohort import read_manifest, run_cohort
    from medseg.inference.cohort_ray import RayEngine
    from medseg.inference.predictor import Predictor

    t0 = time.perf_counter()
    predictor = Predictor.from_run(run)
    studies = read_manifest(manifest, predictor.dims)
    ends: list[float] = []
    sampler = MemorySampler()
    if options is not None:  # (the idle workers of the cluster are not the in-process engine's)
        sampler.start()
    engine = RayEngine(address, **options) if options is not None else None
    result = run_cohort(predictor, studies, out, engine=engine, on_study=lambda *_: ends.append(time.perf_counter()))
    sampler.stop.set()
    if sampler.is_alive():
        sampler.join()
    wall = time.perf_counter() - t0
    steady = 60 * (len(ends) - 1) / (ends[-1] - ends[0]) if len(ends) > 1 else float("nan")
    n = max(result.done, 1)
    actors = [sampler.peak[p] for p in sampler.actor if p in sampler.peak]
    tasks = [v for p, v in sampler.peak.items() if p not in sampler.actor]
    with (out / "manifest_status.csv").open(newline="") as f:
        sha = {r["id"]: r["sha256"] for r in csv.DictReader(f)}
    return {"done": result.done, "failed": len(result.failed), "wall": wall, "per_min": 60 * result.done / wall, "steady": steady,
            "stages": {k: v / n for k, v in result.stage_seconds.items()},
            "driver_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "actor_mib": max(actors, default=float("nan")), "task_mib": max(tasks, default=float("nan")), "workers": len(tasks),
            "sha": sha}


def _ct_stages(run: Path, tmp: Path, shape=(512, 512, 300), spacing=(0.8, 0.8, 1.5)) -> dict:
    """The CPU stages for one full-size CT (a synthetic int16 volume of ``shape`` voxels at ``spacing`` mm, NIfTI),
    with the run's preprocessing: read + preprocess, and restore + write of class probabilities of the working grid's
    size (random: the network is not run, its cost is counted in windows), and the sliding-window count."""
    import math

    import numpy as np
    import SimpleITK as sitk

    from medseg.inference.cohort_stages import Study, finish_study, prepare_study
    from medseg.inference.inputs import InputCase
    from medseg.inference.predictor import Predictor

    rng = np.random.default_rng(0)
    vol = rng.normal(0, 300, size=shape[::-1]).astype(np.int16)
    img = sitk.GetImageFromArray(vol)
    img.SetSpacing(spacing)
    path = tmp / "ct.nii.gz"
    sitk.WriteImage(img, str(path), useCompression=True)
    predictor = Predictor.from_run(run).without_network()
    study = Study("ct", InputCase("ct", (path,)), {})
    x, meta = prepare_study(predictor, study, None)
    k = predictor.scheme.num_classes
    probs = rng.random((k, *x.shape[1:]), dtype=np.float32)
    probs /= probs.sum(0, keepdims=True)
    (tmp / "ct_out").mkdir()
    row, timings = finish_study(predictor, predictor.make_writer(overlays=False), study, tmp / "ct_out", (probs, 0.0), meta, True)
    def windows(size):
        return int(np.prod([math.ceil((n - p) / (p * 0.5)) + 1 if n > p else 1 for n, p in zip(size, predictor.patch_size)]))

    full = Predictor.from_run(run)  # the network's seconds per window here: a crop of 2 patches per axis (27 windows)
    crop = np.ascontiguousarray(x[(slice(None), *(slice(0, 2 * p) for p in full.patch_size))])
    full.network(crop)  # warm-up
    t0 = time.perf_counter()
    full.network(crop)
    per_window = (time.perf_counter() - t0) / windows(crop.shape[1:])
    return {"shape": shape, "working": list(x.shape[1:]), "read": timings["read"], "write": timings["write"],
            "windows": windows(x.shape[1:]), "patch": list(predictor.patch_size), "per_window": per_window}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--run", type=Path, required=True)
    parser.add_argument("--inputs", type=Path, required=True, help="a folder of studies (files)")
    parser.add_argument("--studies", type=int, default=400)
    parser.add_argument("--engines", default="inprocess,ray1,ray2", help=f"of {', '.join(ENGINES)}")
    parser.add_argument("--append", action="store_true", help="add the table to BENCHMARKS.md")
    parser.add_argument("--ct", action="store_true", help="also time the CPU stages on one synthetic full-size CT")
    parser.add_argument("--single", nargs=4, metavar=("ENGINE", "MANIFEST", "OUT", "ADDRESS"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.single:  # one engine in its own process, so that the driver's peak memory is its own
        import json

        name, manifest, out, address = args.single
        r = _run(args.run, Path(manifest), Path(out), ENGINES[name], None if address == "-" else address)
        print("RESULT " + json.dumps(r))
        return
    from benchmarks.common import describe, publish

    engines = args.engines.split(",")
    unknown = [e for e in engines if e not in ENGINES]
    if unknown:
        parser.error(f"unknown engine(s) {unknown}; choose from {list(ENGINES)}")
    rows, results = [], {}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        manifest = _manifest(args.inputs, args.studies, tmp / "cohort.csv")
        address = None
        if any(ENGINES[e] is not None for e in engines):
            port = 6379 + os.getpid() % 1000
            subprocess.run([RAY, "start", "--head", "--node-ip-address", "127.0.0.1", "--port", str(port), "--num-cpus",
                            str(os.cpu_count()), "--include-dashboard", "false", "--disable-usage-stats"],
                           check=True, capture_output=True)
            address = f"127.0.0.1:{port}"
        try:
            for name in engines:
                import json

                done = subprocess.run([sys.executable, "-m", "benchmarks.cohort_ray", "--run", str(args.run), "--inputs",
                                       str(args.inputs), "--single", name, str(manifest), str(tmp / name), address or "-"],
                                      check=True, capture_output=True, text=True)
                r = json.loads(next(line for line in done.stdout.splitlines() if line.startswith("RESULT "))[7:])
                results[name] = r
                opts = ENGINES[name]
                label = "in-process (torch threads 2)" if opts is None else \
                    f"Ray, {opts['actors']} actor(s) x {opts['cpus_per_actor']:g} CPU ({max(1, round(opts['cpus_per_actor']))} torch thread(s) each)"
                s = r["stages"]
                rows.append(f"| {label} | {r['done']} / {r['failed']} | {r['wall']:.0f} | {r['per_min']:.0f} | {r['steady']:.0f} | "
                            f"{s.get('read', 0):.3f} / {s.get('network', 0):.3f} / {s.get('write', 0):.3f} | "
                            f"{r['driver_mib']:.0f} | " + ("- | - |" if opts is None else f"{r['actor_mib']:.0f} | {r['task_mib']:.0f} ({r['workers']}) |"))
                print(rows[-1], flush=True)
        finally:
            if address:
                subprocess.run([RAY, "stop", "--force"], capture_output=True)
        ct = _ct_stages(args.run, tmp) if args.ct else None
    first = next(iter(results.values()))["sha"]
    same = {n: sum(r["sha"].get(k) == v for k, v in first.items()) for n, r in results.items()}
    lines = ["", f"## Cohort prediction: in-process and Ray (issue 21), {args.studies} studies from {args.inputs.name}",
             "", describe(), "",
             f"Run: {args.run.name}; cohort {args.studies} studies from {len(list(args.inputs.iterdir()))} files "
             f"(`python -m benchmarks.cohort_ray`), no TTA, quality control on. One engine at a time; Ray: a local "
             "cluster (`ray start --head`, all CPUs), 2 + 2 x actors studies in flight.", "",
             "| engine | done / failed | wall s (start-up incl.) | studies/min overall | studies/min steady | "
             "s per study: read / network / write | driver peak MiB | actor peak MiB | task worker peak MiB (workers) |",
             "|---|---|---|---|---|---|---|---|---|", *rows, "",
             "Identical label files (SHA-256) to the first engine's: " + ", ".join(f"{n} {c}/{len(first)}" for n, c in same.items()) + "."]
    if ct:
        lines += ["", f"One synthetic full-size CT, {'x'.join(map(str, ct['shape']))} voxels (int16, .nii.gz), with this run's "
                  f"preprocessing (working grid {'x'.join(map(str, ct['working']))}, patch {'x'.join(map(str, ct['patch']))}): "
                  f"read + preprocess {ct['read']:.1f} s, restore + write {ct['write']:.1f} s on one CPU process; "
                  f"{ct['windows']} sliding windows at 50% overlap, {ct['per_window'] * 1000:.0f} ms per window on this CPU "
                  f"(torch threads 2), i.e. {ct['windows'] * ct['per_window']:.0f} s of network per CT here."]
    publish("\n".join(lines), args.append)


if __name__ == "__main__":
    main()
