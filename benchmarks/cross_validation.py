"""Cross-validation against one model, on the same total budget (issue 17): DRIVE's 20 training images in
``--folds`` folds, the ensemble evaluated on the 20 official test images inside their FOV masks, with and without
the post-processing, beside one model trained on the same images for the same budget (the `drive_unet.py`
benchmark's setup: 85/15 split, ``--monitor val_dice``). Also the out-of-fold Dice and the ensemble's prediction
time per image, with and without mirroring TTA, against one fold's.

    python -m benchmarks.cross_validation [--budget 15m] [--folds 5] [--single] [--append]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DRIVE = ROOT.parent / "shared" / "datasets" / "drive"


def _dice(summary: dict) -> tuple[float, list]:
    d = summary["classes"]["vessel"]["dice"] if "vessel" in summary["classes"] else next(iter(summary["classes"].values()))["dice"]
    return d["mean"], d["ci95"]


def _seconds_per_image(run: Path, images: list[Path], mirror: bool, **kw) -> float:
    from medseg.inference.predictor import Predictor
    from medseg.io import read_image

    predictor = Predictor.from_run(run, mirror=mirror, **kw)
    predictor.predict(read_image(images[0]))  # warm-up
    t0 = time.perf_counter()
    for f in images:
        predictor.predict(read_image(f))
    return (time.perf_counter() - t0) / len(images)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--budget", default="15m")
    ap.add_argument("--folds", type=int, default=5)
    ap.add_argument("--single", action="store_true", help="also train the single model on the same budget")
    ap.add_argument("--append", action="store_true", help="add the table to BENCHMARKS.md")
    a = ap.parse_args()
    from benchmarks.common import describe, publish, run_medseg
    from medseg.evaluation.evaluate_run import evaluate_run

    rows, notes = [], []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        cv = tmp / "cv"
        t0 = time.perf_counter()
        run_medseg("train", str(DRIVE / "training"), "--out", str(cv), "--folds", str(a.folds), "--time-budget", a.budget,
                   "--monitor", "val_dice")
        train_s = time.perf_counter() - t0
        oof = json.loads((cv / "cv" / "summary.json").read_text())
        decision = json.loads((cv / "postprocessing.json").read_text())
        chosen = [f"{n}: {s}" for n, e in decision["classes"].items() for s in ("min_size", "largest_component", "fill_holes")
                  if e[s].get("apply")]
        for post in (True, False):
            s = evaluate_run(cv, DRIVE / "testing", out=tmp / f"eval_{post}", postprocessing=post)
            mean, ci = _dice(s)
            rows.append(f"| {a.folds}-fold ensemble{'' if post else ', no post-processing'} | {a.budget} for all folds | "
                        f"{mean:.4f} [{ci[0]:.4f}-{ci[1]:.4f}] |")
            print(rows[-1], flush=True)
        oof_mean, oof_ci = _dice(oof)
        notes.append(f"Out-of-fold FOV Dice on the 20 training images: {oof_mean:.4f} [{oof_ci[0]:.4f}-{oof_ci[1]:.4f}]; "
                     f"post-processing chosen: {', '.join(chosen) or 'none'}; cross-validation wall time {train_s / 60:.1f} min "
                     "(training, out-of-fold prediction and the decision).")
        images = sorted((DRIVE / "testing" / "images").iterdir())
        timing = {name: _seconds_per_image(run, images, mirror) for name, run, mirror in
                  (("ensemble", cv, False), ("ensemble + TTA", cv, True), ("one fold", cv / "fold_0", False),
                   ("one fold + TTA", cv / "fold_0", True))}
        notes.append("Prediction seconds per test image (565x584, torch threads 2): "
                     + ", ".join(f"{k} {v:.2f}" for k, v in timing.items()) + ".")
        if a.single:
            single = tmp / "single"
            run_medseg("train", str(DRIVE / "training"), "--out", str(single), "--split", "85/15/0", "--time-budget", a.budget,
                       "--monitor", "val_dice")
            mean, ci = _dice(evaluate_run(single, DRIVE / "testing", out=tmp / "eval_single"))
            rows.append(f"| one model (85/15 split) | {a.budget} | {mean:.4f} [{ci[0]:.4f}-{ci[1]:.4f}] |")
            print(rows[-1], flush=True)
    lines = ["", f"## Cross-validation against one model on DRIVE (issue 17), {a.budget} in all", "", describe(), "",
             "| model | budget | FOV Dice on the 20 test images [95% CI] |", "|---|---|---|", *rows, "", *notes]
    publish("\n".join(lines), a.append)


if __name__ == "__main__":
    main()
