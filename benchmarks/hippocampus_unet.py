"""Hippocampus (MSD Task04): `medseg train` on the shared 160/40 split for a fixed
time budget, `medseg evaluate` on the 40 validation cases (without and with
mirroring TTA), and the in-process prediction time of one volume. Reads
../shared in place; prints one table.

    python benchmarks/hippocampus_unet.py [--budget 30m] [--out benchmarks/out/hippocampus] [-- extra train flags]
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.common import describe, run_medseg as medseg  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
HIPPO = ROOT.parent / "shared" / "datasets" / "hippocampus"



def predict_seconds(run: Path, mirror: bool, repeats: int = 5) -> float:
    from medseg.inference.predictor import Predictor
    from medseg.io import read_image

    predictor = Predictor.from_run(run, mirror=mirror)
    image = read_image(HIPPO / "imagesTr" / "hippocampus_015.nii.gz")
    predictor.predict(image)  # warm-up
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        predictor.predict(image)
        times.append(time.perf_counter() - t)
    return sorted(times)[len(times) // 2]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--budget", default="30m")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "out" / "hippocampus"))
    ap.add_argument("extra", nargs="*", help="extra `medseg train` flags (after --)")
    a = ap.parse_args()
    if not HIPPO.is_dir():
        sys.exit(f"Hippocampus not found at {HIPPO}")
    out = Path(a.out)
    run = out / "run"
    if run.exists():
        shutil.rmtree(run)
    train_s = medseg("train", str(HIPPO), "--out", str(run), "--split-file", str(HIPPO / "split_160_40.json"),
                     "--time-budget", a.budget, *a.extra)
    medseg("evaluate", str(run), "--out", str(out / "eval"))
    medseg("evaluate", str(run), "--tta", "--out", str(out / "eval_tta"))
    rows = [r.split(",") for r in (run / "history.csv").read_text().strip().splitlines()]
    head, body = rows[0], rows[1:]
    t_idx, d_idx = head.index("time"), head.index("val_dice")
    reach = next((float(r[t_idx]) for r in body if r[d_idx] and float(r[d_idx]) >= 0.85), float("nan"))
    print()
    print(f"machine: {describe()}")
    print(f"train flags: --time-budget {a.budget} {' '.join(a.extra)}; epochs {len(body)}, train wall {train_s:.0f} s, "
          f"validation mean Dice first >= 0.85 after {reach:.0f} s")
    print("| TTA | Anterior Dice | Posterior Dice | mean | predict one volume (s, in process) |")
    print("|---|---|---|---|---|")
    for tag, folder, mirror in (("off", "eval", False), ("mirror", "eval_tta", True)):
        s = json.loads((out / folder / "summary.json").read_text())
        dice = [c["dice"] for c in s["classes"].values()]
        print(f"| {tag} | {dice[0]['mean']:.4f} ± {dice[0]['std']:.4f} | {dice[1]['mean']:.4f} ± {dice[1]['std']:.4f} | "
              f"{s['mean_dice']['mean']:.4f} | {predict_seconds(run, mirror):.2f} |")


if __name__ == "__main__":
    main()
