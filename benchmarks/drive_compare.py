"""DRIVE model zoo: `medseg compare` on the official split (20 training images, FOV Dice on
the 20 test images), the same CPU budget for every model.

The models are split into ``--parallel`` groups that run side by side, one CPU thread each
(on this 2-core machine: two models at a time, each with one core for its whole budget), so
every model gets the same compute. The groups' comparison tables are merged into one.

    python benchmarks/drive_compare.py [--budget 15m] [--models unet,fcn,...] [--parallel 2]
"""

from __future__ import annotations

import argparse
import csv
import os
import subprocess
import sys
import time
from pathlib import Path

from common import describe

DRIVE = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "drive"
MODELS = "unet,fcn,segnet,deeplabv3plus,resunet,transunet"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--budget", default="15m")
    ap.add_argument("--models", default=MODELS)
    ap.add_argument("--parallel", type=int, default=2, help="models trained side by side, one thread each")
    ap.add_argument("--out", default="benchmarks/out/drive_compare")
    ap.add_argument("extra", nargs="*", help="extra `medseg compare` flags (after --)")
    a = ap.parse_args()
    names = [m for m in a.models.split(",") if m]
    groups = [names[i :: a.parallel] for i in range(a.parallel) if names[i :: a.parallel]]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    t0 = time.perf_counter()
    procs = []
    Path(a.out).mkdir(parents=True, exist_ok=True)
    for i, group in enumerate(groups):
        out = Path(a.out) / f"group{i}"
        log = open(Path(a.out) / f"group{i}.log", "w")
        cmd = [sys.executable, "-m", "medseg", "compare", str(DRIVE / "training"), "--out", str(out), "--models",
               ",".join(group), "--budget", a.budget, "--split", "85/15/0", "--test-data", str(DRIVE / "testing"),
               "--threads", "1", *a.extra]
        procs.append((subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT), out, log))
    rows = []
    for proc, out, log in procs:
        if proc.wait() != 0:
            sys.exit(f"medseg compare failed (exit {proc.returncode}); see {out}.log")
        log.close()
        with open(out / "comparison.csv", newline="") as f:
            rows += list(csv.DictReader(f))
    wall = time.perf_counter() - t0
    order = {m: i for i, m in enumerate(names)}
    rows.sort(key=lambda r: order.get(r["model"], 99))

    def num(r, k, fmt):
        v = r.get(k, "")
        return "-" if v in ("", "nan") else format(float(v), fmt)

    print(f"machine: {describe()}")
    print(f"budget {a.budget} per model, {len(groups)} models at a time, 1 thread each; total wall {wall / 60:.1f} min")
    print("| model | params (M) | epochs | train s | FOV Dice vessel (mean over 20 test images) | IoU | HD95 (px) | inference ms/image |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        if r.get("error"):
            print(f"| {r['model']} | failed: {r['error']} |||||||")
            continue
        dice_cols = [k for k in r if k.startswith("dice_") and k != "dice_background"]
        dice = num(r, dice_cols[0], ".4f") if dice_cols else num(r, "mean_dice", ".4f")
        print(f"| {r['model']} | {int(r['params']) / 1e6:.2f} | {r['epochs']} | {num(r, 'train_seconds', '.0f')} | {dice} | "
              f"{num(r, 'iou_mean', '.4f')} | {num(r, 'hd95_mean', '.1f')} | {num(r, 'inference_ms', '.0f')} |")


if __name__ == "__main__":
    main()
