"""Peak memory of planning a large CT: fingerprint + plan + preprocessing of one
512x512x300 int16 volume (spacing 0.7 x 0.7 x 1.5 mm, a body in air) must stay under 8 GiB.

The volume is written as NIfTI into a temporary folder (``--tmp``, default /tmp). Each
measured chain runs in a fresh subprocess, which reports its peak resident memory
(``VmHWM`` from /proc/self/status, after each step); the parent's own memory does not count.
Two chains: at the planned spacing (the case's own: no resampling), and resampled to
1 x 1 x 1 mm (the worst of the likely plans: in-plane down, through-plane up).

    python benchmarks/plan_memory.py [--tmp /tmp] [--keep]
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.common import describe  # noqa: E402

SHAPE = (512, 512, 300)
SPACING = (0.7, 0.7, 1.5)
LIMIT_GIB = 8.0


def write_ct(root: Path) -> Path:
    """An MSD-style dataset with one synthetic CT: air -1000 HU, an elliptic body (soft tissue ~40 HU),
    two lungs (-850), a spine (700), a liver-like organ (label 1, ~60) with a tumour (label 2, ~100)."""
    import numpy as np

    from medseg.io import Geometry, write_image

    rng = np.random.default_rng(0)
    nx, ny, nz = SHAPE
    x = (np.arange(nx)[:, None] - nx / 2) * SPACING[0]
    y = (np.arange(ny)[None, :] - ny / 2) * SPACING[1]
    image = np.empty(SHAPE, np.int16)
    label = np.zeros(SHAPE, np.uint8)
    body = (x / 160) ** 2 + (y / 115) ** 2 < 1
    lungs = (((x - 70) / 50) ** 2 + ((y + 10) / 60) ** 2 < 1) | (((x + 70) / 50) ** 2 + ((y + 10) / 60) ** 2 < 1)
    spine = (x / 18) ** 2 + ((y + 85) / 18) ** 2 < 1
    for k in range(nz):
        z = (k - nz / 2) * SPACING[2]
        sl = np.where(body, 40, -1000).astype(np.float32) + rng.normal(0, 15, (nx, ny)).astype(np.float32)
        if z > 20:
            sl[lungs] = -850 + rng.normal(0, 20, int(lungs.sum()))
        sl[spine] = 700
        organ = ((x + 50) / 90) ** 2 + ((y - 20) / 70) ** 2 + (z / 120) ** 2 < 1
        tumour = ((x + 40) / 20) ** 2 + ((y - 30) / 20) ** 2 + ((z + 10) / 20) ** 2 < 1
        sl[organ] = 60 + rng.normal(0, 10, int(organ.sum()))
        sl[tumour] = 100
        label[:, :, k] = np.where(tumour, 2, np.where(organ, 1, 0))
        image[:, :, k] = np.clip(sl, -1024, 3071).astype(np.int16)
    geom = Geometry(SPACING, (0.0, 0.0, 0.0), (1.0, 0, 0, 0, 1.0, 0, 0, 0, 1.0))
    write_image(root / "imagesTr" / "ct_000.nii.gz", image[None], geom)
    write_image(root / "labelsTr" / "ct_000.nii.gz", label[None], geom)
    (root / "dataset.json").write_text(json.dumps({
        "name": "BigCT", "modality": {"0": "CT"}, "labels": {"0": "background", "1": "organ", "2": "tumour"},
        "numTraining": 1, "training": [{"image": "./imagesTr/ct_000.nii.gz", "label": "./labelsTr/ct_000.nii.gz"}]}))
    return root


#: runs in the subprocess: argv = data folder, cache folder, target spacing ("plan" or "x,y,z")
CHILD = r"""
import json, sys, time
from pathlib import Path

def peak():
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    return 0

data, cache_dir, target = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3]
steps = []
t = time.perf_counter()
from medseg.data.cache import PreprocessedCache
from medseg.data.dataset3d import foreground_stats, preprocess_cases
from medseg.data.layouts import discover_volume_cases
from medseg.data.preprocess3d import Preprocess3D
from medseg.planning.fingerprint import compute_fingerprint
from medseg.planning.planner import make_plan
steps.append(("imports", time.perf_counter() - t, peak())); t = time.perf_counter()
fp = compute_fingerprint(data, workers=1)
steps.append(("fingerprint", time.perf_counter() - t, peak())); t = time.perf_counter()
plan = make_plan(fp, device="cpu", memory_budget="8GiB")
steps.append(("plan", time.perf_counter() - t, peak())); t = time.perf_counter()
cases, ds = discover_volume_cases(data)
cache = PreprocessedCache(cache_dir)
spacing = plan["spacing"]["target"] if target == "plan" else [float(v) for v in target.split(",")]
scheme = plan["normalization"]["scheme"][0]
stats = foreground_stats(cases, cache.folder) if scheme == "ct" else None
steps.append(("ct statistics", time.perf_counter() - t, peak())); t = time.perf_counter()
pre = Preprocess3D(spacing, scheme, stats, plan["crop_to_nonzero"]["value"])
out = preprocess_cases(cases, pre, cache, sorted(ds["labels"]))
steps.append(("preprocess", time.perf_counter() - t, peak()))
print(json.dumps({"steps": steps, "spacing": list(spacing), "shape": out[0].meta["shape"],
                  "patch": plan["patch"]["size"], "batch": plan["batch"]["size"]}))
"""


def run_chain(data: Path, cache: Path, target: str) -> dict:
    proc = subprocess.run([sys.executable, "-c", CHILD, str(data), str(cache), target], capture_output=True, text=True)
    if proc.returncode != 0:
        sys.exit(f"the measured chain failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tmp", default=tempfile.gettempdir(), help="where to write the synthetic CT (about 200 MB)")
    ap.add_argument("--keep", action="store_true", help="keep the files")
    a = ap.parse_args()
    root = Path(tempfile.mkdtemp(prefix="medseg_plan_memory_", dir=a.tmp))
    try:
        t = time.perf_counter()
        data = write_ct(root / "data")
        print(f"wrote a {'x'.join(map(str, SHAPE))} int16 CT at {SPACING} mm in {time.perf_counter() - t:.0f} s: {data}")
        results = [(label, run_chain(data, root / f"cache_{i}", target))
                   for i, (label, target) in enumerate((("planned spacing", "plan"), ("resampled to 1 mm", "1,1,1")))]
    finally:
        if not a.keep:
            shutil.rmtree(root, ignore_errors=True)
    print(f"\nmachine: {describe()}")
    print("| chain | step | seconds | peak RSS so far (GiB) |")
    print("|---|---|---|---|")
    worst = 0.0
    for label, r in results:
        for name, sec, peak in r["steps"]:
            print(f"| {label} (-> {'x'.join(f'{v:g}' for v in r['spacing'])} mm, {'x'.join(map(str, r['shape']))}) | "
                  f"{name} | {sec:.1f} | {peak / 2**30:.2f} |")
            worst = max(worst, peak / 2**30)
    plan = results[0][1]
    print(f"\nplanned patch {plan['patch']}, batch {plan['batch']}; peak {worst:.2f} GiB "
          f"({'under' if worst < LIMIT_GIB else 'OVER'} the {LIMIT_GIB:g} GiB limit)")
    if worst >= LIMIT_GIB:
        sys.exit(1)


if __name__ == "__main__":
    main()
