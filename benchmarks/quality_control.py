"""Quality control, measured (issue 23): how well the per-case score finds the worst predictions, and whether the
out-of-distribution rules flag what they should.

For a trained Hippocampus run (its 40 validation cases of ``split_160_40.json``), with and without mirroring TTA:

- the AUROC of the QC score for the cases in the worst 20% by mean Dice, and its Spearman correlation with Dice,
  against the per-case entropy score of ``medseg predict --uncertainty`` (today's measure). The score has no
  fitted parameter, so these figures are out of sample; it was, however, chosen among a dozen candidates looked at
  on these same 40 cases (and Kvasir's validation cases), which biases them upwards;
- 5-fold out-of-fold flags: the threshold and the line to Dice fitted on 32 cases and applied to the other 8:
  how many of the worst 20% are flagged (sensitivity), how many flagged are among them (precision), and the mean
  absolute error of the predicted Dice;
- the out-of-distribution flags on up to 32 training volumes, each given as itself, flipped left-right, constant,
  and on a CT-like intensity scale (counts of flagged cases, and of cases flagged by the specific rule).

With ``--kvasir-run`` also a 2D run: fitted on its validation images and measured on its test images, and every
DRIVE image given to it.

    python -m benchmarks.quality_control --hippocampus-run RUN [--kvasir-run RUN] [--append]
"""

from __future__ import annotations

import argparse
import dataclasses
import tempfile
from pathlib import Path

import numpy as np

SHARED = Path(__file__).resolve().parents[2] / "shared" / "datasets"


def _cases(run: Path, mirror: bool, subset: str):
    """(features, mean Dice, entropy score) of every case of ``subset``, predicted by the run."""
    from medseg.evaluation.calibrate_run import labelled_cases
    from medseg.evaluation.quality_fit import _mean_dice
    from medseg.inference.predictor import Predictor

    predictor = Predictor.from_run(run, mirror=mirror, calibration=False)
    out = []
    for case in labelled_cases(run, subset):
        pred = predictor.predict(case.image, uncertainty=True, quality=True)
        out.append((pred.features, _mean_dice(pred.labels, case.truth, predictor.scheme.num_classes, case.region),
                    pred.uncertainty.score))
    return out, predictor


def _ranking(rows) -> dict:
    from scipy.stats import spearmanr

    from medseg.inference.quality import auroc, worst_share

    dice = np.array([d for _, d, _ in rows])
    score = np.array([f.score for f, _, _ in rows])
    entropy = np.array([e for _, _, e in rows])
    worst = worst_share(dice)
    return {"n": len(rows), "auroc": auroc(score, worst), "spearman": spearmanr(score, dice)[0],
            "auroc_entropy": auroc(entropy, worst), "spearman_entropy": spearmanr(entropy, dice)[0]}


def _out_of_fold(rows, class_names, folds: int = 5) -> dict:
    from medseg.evaluation.quality_fit import build_model
    from medseg.inference.quality import worst_share

    dice = np.array([d for _, d, _ in rows])
    worst = worst_share(dice)
    order = np.random.default_rng(0).permutation(len(rows))
    flagged = np.zeros(len(rows), bool)
    predicted = np.full(len(rows), np.nan)
    for part in np.array_split(order, folds):
        fit = [rows[i] for i in order if i not in set(part)]
        model = build_model([f for f, _, _ in fit], [d for _, d, _ in fit], [f.image for f, _, _ in fit], mirror=False,
                            class_names=class_names)
        for i in part:
            a = model.assess(rows[i][0])
            flagged[i] = any(r.startswith("uncertain") for r in a.reasons)
            predicted[i] = np.nan if a.predicted_dice is None else a.predicted_dice
    return {"flagged": int(flagged.sum()), "sensitivity": float((flagged & worst).sum() / worst.sum()),
            "precision": float((flagged & worst).sum() / max(flagged.sum(), 1)),
            "mae_predicted_dice": float(np.nanmean(np.abs(predicted - dice)))}


def _ood_3d(run: Path, n: int = 32) -> dict:
    from medseg.evaluation.calibrate_run import labelled_cases
    from medseg.inference.predictor import Predictor

    predictor = Predictor.from_run(run)
    counts: dict[str, list[int]] = {}
    cases = list(labelled_cases(run, "train"))[1::4][:n]
    for case in cases:
        a = case.image.array
        variants = {"as is": (a, None), "flipped left-right": (a[:, :, :, ::-1].copy(), "orientation"),
                    "constant": (np.full_like(a, a.mean()), "the image is constant"),
                    "CT-like scale": ((a / np.percentile(a, 99) * 1400 - 1000).astype(np.float32), "intensity scale")}
        for name, (array, rule) in variants.items():
            q = predictor.predict(dataclasses.replace(case.image, array=array), quality=True).quality
            c = counts.setdefault(name, [0, 0, 0])
            c[0] += 1
            c[1] += q.check
            c[2] += bool(rule) and any(r.startswith(rule) for r in q.reasons)
    return counts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--hippocampus-run", type=Path, required=True)
    parser.add_argument("--kvasir-run", type=Path)
    parser.add_argument("--append", action="store_true", help="add the tables to BENCHMARKS.md")
    args = parser.parse_args()
    import shutil

    import torch

    from benchmarks.common import describe, publish
    from medseg.data.labels import LabelScheme
    from medseg.evaluation.quality_fit import fit_quality
    from medseg.runfolder import read_run_info

    torch.set_num_threads(2)
    lines = ["", "## Quality control (issue 23)", "", describe(), "",
             "| run, cases | TTA | QC score AUROC (worst 20%) | Spearman with Dice | entropy AUROC | entropy Spearman | "
             "out-of-fold flags: sensitivity / precision | predicted Dice MAE |", "|---|---|---|---|---|---|---|---|"]
    names = list(LabelScheme.from_json(read_run_info(args.hippocampus_run)["labels"]).names)
    for mirror in (False, True):
        rows, _ = _cases(args.hippocampus_run, mirror, "val")
        r, o = _ranking(rows), _out_of_fold(rows, names)
        lines.append(f"| Hippocampus validation, {r['n']} | {'yes' if mirror else 'no'} | {r['auroc']:.3f} | {r['spearman']:+.3f} | "
                     f"{r['auroc_entropy']:.3f} | {r['spearman_entropy']:+.3f} | {o['sensitivity']:.2f} / {o['precision']:.2f} "
                     f"({o['flagged']} flagged) | {o['mae_predicted_dice']:.3f} |")
        print(lines[-1], flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        copy = Path(tmp) / "run"
        shutil.copytree(args.hippocampus_run, copy, ignore=shutil.ignore_patterns("preprocessed", "checkpoints"))
        fit_quality(copy)
        counts = _ood_3d(copy)
        if args.kvasir_run:
            kv = Path(tmp) / "kvasir"
            shutil.copytree(args.kvasir_run, kv, ignore=shutil.ignore_patterns("preprocessed", "checkpoints", "evaluation"))
            model = fit_quality(kv)
            rows, predictor = _cases(kv, False, "test")
            r = _ranking(rows)
            flagged = sum(model.assess(f).check for f, _, _ in rows)
            lines.append(f"| Kvasir test (fitted on its {model.cases} validation images), {r['n']} | no | {r['auroc']:.3f} | "
                         f"{r['spearman']:+.3f} | {r['auroc_entropy']:.3f} | {r['spearman_entropy']:+.3f} | {flagged} flagged | - |")
            print(lines[-1], flush=True)
            from medseg.io import read_image

            drive = sorted((SHARED / "drive").rglob("images/*.tif"))
            hits = sum(predictor.quality.assess(predictor.predict(read_image(f), quality=True).features).check for f in drive)
            counts["DRIVE images to the Kvasir model"] = [len(drive), hits, hits]
    lines += ["", "| given to the model | cases | flagged | flagged by its own rule |", "|---|---|---|---|"]
    for name, (n, flagged, by_rule) in counts.items():
        lines.append(f"| {name} | {n} | {flagged} | {by_rule if name != 'as is' else '-'} |")
    publish("\n".join(lines) + "\n", args.append)


if __name__ == "__main__":
    main()
