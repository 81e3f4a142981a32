"""Prediction backends on this machine (issue 19): PyTorch float32, PyTorch bf16 (the default) and ONNX Runtime.

For a trained Hippocampus run (the 40 validation cases of ``split_160_40.json``) and a trained DRIVE run (the 20
official test images), each backend predicts every case, with and without mirroring TTA. Printed per backend:
seconds per case (network, sliding window and restoration, the file already read), the whole ``predict_files``
call (loading the run or bundle, reading, predicting and writing every case; the interpreter's start is not
included), the share of voxels whose label equals PyTorch float32's, and the mean Dice (Hippocampus: both
labels; DRIVE: inside the field of view).

    python -m benchmarks.backends --hippocampus-run RUN --drive-run RUN [--append]

One run at a time on a quiet machine; ``--append`` adds the table to BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np

from benchmarks.common import describe, publish

SHARED = Path(__file__).resolve().parents[2] / "shared" / "datasets"


def _dice(pred: np.ndarray, truth: np.ndarray, labels, region: np.ndarray | None = None) -> float:
    if region is not None:
        pred, truth = pred[region], truth[region]
    scores = []
    for c in labels:
        p, t = pred == c, truth == c
        denominator = p.sum() + t.sum()
        scores.append(1.0 if denominator == 0 else 2 * np.logical_and(p, t).sum() / denominator)
    return float(np.mean(scores))


def hippocampus_cases() -> list[tuple[Path, np.ndarray, None, tuple[int, ...]]]:
    from medseg.io import read_image

    root = SHARED / "hippocampus"
    keys = json.loads((root / "split_160_40.json").read_text())["val"]
    return [(root / "imagesTr" / f"{k}.nii.gz", read_image(root / "labelsTr" / f"{k}.nii.gz").array[0], None, (1, 2))
            for k in keys]


def drive_cases() -> list[tuple[Path, np.ndarray, np.ndarray, tuple[int, ...]]]:
    from medseg.io import read_image

    root = SHARED / "drive" / "testing"
    cases = []
    for image in sorted((root / "images").glob("*_test.tif")):
        n = image.name.split("_")[0]
        truth = read_image(root / "1st_manual" / f"{n}_manual1.gif").array[0] > 0
        fov = read_image(root / "mask" / f"{n}_test_mask.gif").array[0] > 0
        cases.append((image, truth.astype(np.uint8), fov, (1,)))
    return cases


def measure(name: str, make_predictor, cases, reference: dict | None, out: Path) -> dict:
    from medseg.io import read_image

    start = time.perf_counter()
    predictor = make_predictor()
    predictor.predict_files([c[0] for c in cases], out, overlays=False, overwrite=True) if predictor.dims == 3 else \
        predictor.predict_files([c[0] for c in cases], out, fmt="index", overlays=False, overwrite=True)
    whole = time.perf_counter() - start
    per_case, labels, dice = [], {}, []
    for path, truth, fov, classes in cases:
        image = read_image(path)
        t = time.perf_counter()
        pred = predictor.predict(image)
        per_case.append(time.perf_counter() - t)
        labels[path.name] = pred.labels
        dice.append(_dice(pred.labels, truth, classes, fov))
    agree = None
    if reference is not None:
        same = sum(int((labels[k] == reference[k]).sum()) for k in labels)
        agree = same / sum(v.size for v in labels.values())
    return {"backend": name, "s_per_case": float(np.mean(per_case)), "whole_s": whole, "dice": float(np.mean(dice)),
            "agreement": agree, "labels": labels}


def run_dataset(title: str, run: Path, cases) -> list[dict]:
    from medseg.inference.bundle import export_bundle
    from medseg.inference.predictor import Predictor

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        t = time.perf_counter()
        export_bundle(run, Path(tmp) / "bundle")
        export_s = time.perf_counter() - t
        for tta in (False, True):
            configs = [("torch float32", lambda tta=tta: Predictor.from_run(run, mirror=tta, amp=False)),
                       ("torch bf16", lambda tta=tta: Predictor.from_run(run, mirror=tta, amp=True)),
                       ("onnxruntime float32", lambda tta=tta: Predictor.from_bundle(Path(tmp) / "bundle", mirror=tta))]
            reference = None
            for name, make in configs:
                r = measure(name, make, cases, reference, Path(tmp) / f"out_{len(rows)}")
                reference = reference or r["labels"]
                r.update(dataset=title, tta=tta, cases=len(cases), export_s=export_s)
                del r["labels"]
                rows.append(r)
                print(f"{title} tta={tta} {name}: {r['s_per_case']:.3f} s/case, whole {r['whole_s']:.1f} s, "
                      f"Dice {r['dice']:.4f}, agreement {r['agreement'] if r['agreement'] is None else round(r['agreement'], 6)}",
                      flush=True)
    return rows


def table(rows: list[dict]) -> str:
    lines = ["| data | TTA | backend | s / case | whole call (s) | labels equal to torch fp32 | mean Dice |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        agree = "reference" if r["agreement"] is None else f"{100 * r['agreement']:.4f}%"
        lines.append(f"| {r['dataset']} ({r['cases']}) | {'mirror' if r['tta'] else 'none'} | {r['backend']} | "
                     f"{r['s_per_case']:.3f} | {r['whole_s']:.1f} | {agree} | {r['dice']:.4f} |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--hippocampus-run", type=Path)
    ap.add_argument("--drive-run", type=Path)
    ap.add_argument("--append", action="store_true", help="append the table to BENCHMARKS.md")
    args = ap.parse_args()
    rows = []
    if args.hippocampus_run:
        rows += run_dataset("Hippocampus val", args.hippocampus_run, hippocampus_cases())
    if args.drive_run:
        rows += run_dataset("DRIVE test", args.drive_run, drive_cases())
    exports = ", ".join(f"{r['dataset']} {r['export_s']:.1f} s" for r in rows[::6])
    text = (f"\n## Prediction backends (issue 19)\n\nMachine: {describe()}.\n`python -m benchmarks.backends`; "
            f"export took {exports}.\n\n{table(rows)}\n")
    publish(text, args.append)


if __name__ == "__main__":
    main()
