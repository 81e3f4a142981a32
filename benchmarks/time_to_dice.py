"""Time to a validation Dice level on Hippocampus (MSD Task04, the shared 160/40 split):
`medseg train` with a time budget, then the training time at which the mean validation
Dice (foreground classes, per case) first reached each level, read from ``history.csv``
(its ``time`` column: seconds of training, validation included, since training began).

    python benchmarks/time_to_dice.py [--budget 30m] [--levels 0.85,0.88] [--out DIR] [-- extra `medseg train` flags]

Prints one table: time to each level (training time and wall time since the command
started, which adds planning and preprocessing), the final and best validation Dice.
"""

from __future__ import annotations

import argparse
import csv
import math
import shutil
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.common import describe, run_medseg  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
HIPPO = ROOT.parent / "shared" / "datasets" / "hippocampus"


def first_reach(rows: list[dict], level: float) -> float:
    """Training seconds at the end of the first epoch whose ``val_dice`` is >= ``level`` (NaN: never)."""
    for r in rows:
        if r.get("val_dice") not in (None, "") and float(r["val_dice"]) >= level:
            return float(r["time"])
    return float("nan")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--budget", default="30m")
    ap.add_argument("--levels", default="0.85,0.88")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "out" / "time_to_dice"))
    ap.add_argument("--cache", default=str(ROOT / "benchmarks" / "out" / "cache" / "hippocampus"),
                    help="preprocessed-case cache (kept between runs; preprocessing time then drops out of the wall time)")
    ap.add_argument("extra", nargs="*", help="extra `medseg train` flags (after --), e.g. --monitor val_dice")
    a = ap.parse_args()
    if not HIPPO.is_dir():
        sys.exit(f"Hippocampus not found at {HIPPO}")
    run = Path(a.out) / "run"
    if run.exists():
        shutil.rmtree(run)
    start = time.perf_counter()
    wall = run_medseg("train", str(HIPPO), "--out", str(run), "--split-file", str(HIPPO / "split_160_40.json"),
                      "--cache-dir", a.cache, "--time-budget", a.budget, *a.extra)
    with (run / "history.csv").open(newline="") as f:
        rows = list(csv.DictReader(f))
    if not rows:
        sys.exit(f"no epoch finished within {a.budget}")
    train_s = float(rows[-1]["time"])
    setup_s = wall - train_s  # planning, preprocessing (or cache reads), start-up, final writes
    scored = [r for r in rows if r.get("val_dice")]
    print()
    print(f"machine: {describe()}")
    print(f"train flags: --time-budget {a.budget} {' '.join(a.extra)}; {len(rows)} epochs, training {train_s:.0f} s, "
          f"command wall {time.perf_counter() - start:.0f} s (of which ~{setup_s:.0f} s outside training)")
    print("| mean val Dice level | training time to reach it | wall time since the command started |")
    print("|---|---|---|")
    for level in (float(v) for v in a.levels.split(",")):
        t = first_reach(rows, level)
        reached = not math.isnan(t)
        print(f"| {level:.2f} | {f'{t:.0f} s ({t / 60:.1f} min)' if reached else 'not reached'} | "
              f"{f'{t + setup_s:.0f} s' if reached else '-'} |")
    if scored:
        best = max(scored, key=lambda r: float(r["val_dice"]))
        print(f"final mean val Dice {float(scored[-1]['val_dice']):.4f}; best {float(best['val_dice']):.4f} "
              f"(epoch {best['epoch']}, {float(best['time']):.0f} s)")


if __name__ == "__main__":
    main()
