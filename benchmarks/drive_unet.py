"""DRIVE retinal vessels: `medseg train` on the 20 official training images for a
fixed time budget, then `medseg evaluate` on the 20 official test images inside
their field-of-view masks. Prints one table; reads ../shared in place.

    python benchmarks/drive_unet.py [--budget 15m] [--out benchmarks/out/drive] [-- extra train flags]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.common import describe, run_medseg as medseg  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
DRIVE = ROOT.parent / "shared" / "datasets" / "drive"



def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--budget", default="15m")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "out" / "drive"))
    ap.add_argument("--split", default="85/15/0", help="train/val split of the 20 training images (no test: the official test set is used)")
    ap.add_argument("extra", nargs="*", help="extra `medseg train` flags (after --)")
    a = ap.parse_args()
    if not DRIVE.is_dir():
        sys.exit(f"DRIVE not found at {DRIVE}")
    run = Path(a.out) / "run"
    if run.exists():
        import shutil

        shutil.rmtree(run)
    train_s = medseg("train", str(DRIVE / "training"), "--out", str(run), "--split", a.split,
                     "--time-budget", a.budget, *a.extra)
    eval_s = medseg("evaluate", str(run), "--data", str(DRIVE / "testing"), "--out", str(Path(a.out) / "evaluation"))
    s = json.loads((Path(a.out) / "evaluation" / "summary.json").read_text())
    v = s["classes"]["foreground"]
    hist = (run / "history.csv").read_text().strip().splitlines()
    print()
    print(f"machine: {describe()}")
    print(f"train flags: --time-budget {a.budget} --split {a.split} {' '.join(a.extra)}")
    print("| budget | epochs | train wall s | eval wall s (20 images) | FOV Dice mean ± std (per image) | FOV Dice pooled | FOV accuracy |")
    print("|---|---|---|---|---|---|---|")
    print(f"| {a.budget} | {len(hist) - 1} | {train_s:.0f} | {eval_s:.1f} | {v['dice']['mean']:.4f} ± {v['dice']['std']:.4f} | "
          f"{v['dice_pooled']:.4f} | {s['accuracy']['mean']:.4f} |")


if __name__ == "__main__":
    main()
