"""Calibration and uncertainty of a trained run: ECE before/after temperature scaling, and how well the
per-case uncertainty score ranks the cases by Dice. Prints one small table (and writes JSON with --json).

    python benchmarks/calibration_report.py RUN [--no-tta] [--max-voxels 100000] [--json out.json]

- Every case is predicted once with the run's uncalibrated predictor (mirroring TTA by default, the
  ensemble whose entropy `medseg predict --uncertainty` reports).
- The temperature is fitted on the validation split and the ECE/NLL are measured on the evaluation
  cases: the test split, or, when the run has none (e.g. Hippocampus 160/40), the validation cases
  themselves with 2-fold cross-fitting by case (each half is scaled by the T fitted on the other
  half), so no case is calibrated with a temperature fitted on its own voxels.
- ECE: 15 equal-width bins on the top-label confidence (see medseg.evaluation.calibration), over a
  uniform random sample of at most --max-voxels voxels per case (all voxels of a Hippocampus case).
- Spearman's rho between the per-case uncertainty score (mean normalised entropy over the predicted
  foreground and its one-voxel ring, medseg.inference.uncertainty) and the per-case mean foreground
  Dice; negative means uncertain cases are the bad ones. The whole-image mean entropy is given too.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy.stats import spearmanr

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from medseg.evaluation.calibrate_run import labelled_cases, load_predictor  # noqa: E402
from medseg.evaluation.calibration import ReliabilityAccumulator, fit_temperature, nll, sample_voxels  # noqa: E402


@dataclass
class CaseResult:
    key: str
    logits: np.ndarray  # (n, K) log-probabilities of the sampled voxels
    labels: np.ndarray  # (n,)
    dice: float         # mean over the foreground classes present in prediction or truth
    score: float        # per-case uncertainty score
    mean_entropy: float


def mean_dice(pred: np.ndarray, truth: np.ndarray, k: int, region: np.ndarray | None) -> float:
    if region is not None:
        pred, truth = np.where(region, pred, 0), np.where(region, truth, 0)
    scores = []
    for c in range(1, k):
        p, t = pred == c, truth == c
        denom = p.sum() + t.sum()
        if denom:
            scores.append(2.0 * np.logical_and(p, t).sum() / denom)
    return float(np.mean(scores)) if scores else float("nan")


def predict_cases(run: Path, subset: str, predictor, max_voxels: int, rng: np.random.Generator) -> list[CaseResult]:
    results = []
    k = predictor.scheme.num_classes
    for case in labelled_cases(run, subset):
        pred = predictor.predict(case.image, probabilities=True, uncertainty=True)
        lg, y = sample_voxels(pred.probabilities, case.truth, case.region, max_voxels, rng)
        d = mean_dice(pred.probabilities.argmax(0), case.truth, k, case.region)
        results.append(CaseResult(case.key, lg, y, d, pred.uncertainty.score, pred.uncertainty.mean_entropy))
        print(f"  {subset} {case.key}: Dice {d:.4f}, uncertainty {pred.uncertainty.score:.4f}", file=sys.stderr)
    return results


def stack(cases: list[CaseResult]) -> tuple[np.ndarray, np.ndarray]:
    return np.concatenate([c.logits for c in cases]), np.concatenate([c.labels for c in cases])


def measure(groups: list[tuple[list[CaseResult], float]], k: int) -> dict:
    """ECE and NLL over all groups' voxels, each group scaled by its own temperature, and before (T=1)."""
    from scipy.special import softmax

    before, after = ReliabilityAccumulator(k), ReliabilityAccumulator(k)
    nll_b = nll_a = 0.0
    n = 0
    for cases, t in groups:
        lg, y = stack(cases)
        before.update(softmax(lg.astype(np.float64), axis=1).T, y)
        after.update(softmax(lg.astype(np.float64) / t, axis=1).T, y)
        nll_b += nll(lg, y, 1.0) * y.size
        nll_a += nll(lg, y, t) * y.size
        n += y.size
    return {"ece_before": before.ece(), "ece_after": after.ece(), "classwise_ece_before": before.classwise_ece(),
            "classwise_ece_after": after.classwise_ece(), "nll_before": nll_b / n, "nll_after": nll_a / n, "voxels": n}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run", type=Path)
    ap.add_argument("--no-tta", action="store_true", help="predict without mirroring TTA")
    ap.add_argument("--max-voxels", type=int, default=100_000, help="sampled voxels per case")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", type=Path, help="also write the figures and per-case values here")
    a = ap.parse_args()

    split = json.loads((a.run / "split.json").read_text())
    predictor = load_predictor(a.run, mirror=not a.no_tta, calibration=False)
    k = predictor.scheme.num_classes
    rng = np.random.default_rng(a.seed)
    val = predict_cases(a.run, "val", predictor, a.max_voxels, rng)
    if split.get("test"):
        evaluated, how = predict_cases(a.run, "test", predictor, a.max_voxels, rng), "fit on val, measured on test"
        t = fit_temperature(*stack(val))
        groups, temps = [(evaluated, t)], [t]
    else:
        if len(val) < 2:
            sys.exit("cross-fitting needs at least 2 validation cases")
        evaluated, how = val, "2-fold cross-fitting on val"
        halves = [val[0::2], val[1::2]]
        temps = [fit_temperature(*stack(halves[1 - i])) for i in range(2)]
        groups = [(halves[i], temps[i]) for i in range(2)]
    figures = measure(groups, k)
    t_all = fit_temperature(*stack(val))
    dice = np.array([c.dice for c in evaluated])
    ok = ~np.isnan(dice)
    rho, p = spearmanr([c.score for c in evaluated if not math.isnan(c.dice)], dice[ok])
    rho_whole, p_whole = spearmanr([c.mean_entropy for c in evaluated if not math.isnan(c.dice)], dice[ok])

    rows = [
        ("run", str(a.run)),
        ("evaluated cases", f"{len(evaluated)} ({how}; TTA {'off' if a.no_tta else 'on'})"),
        ("temperature (all val cases)", f"{t_all:.4f}" + (f"  (folds: {', '.join(f'{t:.4f}' for t in temps)})" if len(temps) > 1 else "")),
        ("ECE top-label before -> after", f"{figures['ece_before']:.4f} -> {figures['ece_after']:.4f}"),
        ("ECE classwise (fg) before -> after", f"{figures['classwise_ece_before']:.4f} -> {figures['classwise_ece_after']:.4f}"),
        ("NLL before -> after", f"{figures['nll_before']:.4f} -> {figures['nll_after']:.4f}"),
        ("mean Dice", f"{np.nanmean(dice):.4f}"),
        ("Spearman(uncertainty score, Dice)", f"{rho:+.3f} (p={p:.2g}, n={int(ok.sum())})"),
        ("Spearman(whole-image entropy, Dice)", f"{rho_whole:+.3f} (p={p_whole:.2g})"),
        ("voxels measured", str(figures["voxels"])),
    ]
    width = max(len(r[0]) for r in rows)
    print("\n".join(f"| {name:<{width}} | {value} |" for name, value in rows))
    if a.json:
        a.json.write_text(json.dumps({
            **figures, "temperature": t_all, "fold_temperatures": temps, "how": how, "tta": not a.no_tta,
            "spearman_score_dice": rho, "spearman_p": p, "spearman_whole_entropy_dice": rho_whole,
            "cases": [{"case": c.key, "dice": c.dice, "uncertainty": c.score, "mean_entropy": c.mean_entropy} for c in evaluated],
        }, indent=1))


if __name__ == "__main__":
    main()
