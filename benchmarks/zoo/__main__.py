"""The dataset zoo: `medseg train` with no flags but a time budget (and each dataset's split) on every
dataset in a list, `medseg evaluate` on its test split or held-out part, one table.

The point is a planner that generalises: nothing here tunes medseg to a dataset. Each row shows
what the plan chose (working resolution, patch, batch), how many epochs ran, the share of the
training time spent validating, and the test Dice with its 95% CI beside the published reference.

    python -m benchmarks.zoo [--datasets kvasir_seg,monuseg,...] [--budget-scale 1.0] [--out benchmarks/out/zoo] [--append]

Runs one dataset at a time (measure on a quiet machine); ``--budget-scale 0.1`` gives a quick smoke run.
"""

from __future__ import annotations

import argparse
import csv
import json
import shutil
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from benchmarks.common import describe, run_medseg  # noqa: E402
from benchmarks.zoo.datasets import DATASETS, ROOT  # noqa: E402
from medseg.units import parse_duration  # noqa: E402


def _plan_text(run: Path) -> str:
    plan = json.loads((run / "plan.json").read_text())
    sp = plan["spacing"]
    res = (f"scale {sp['scale']:.3g}" if sp.get("scale") else f"long side {sp['long_side']}" if sp.get("long_side")
           else "x".join(f"{v:g}" for v in sp["target"]) + " mm" if sp.get("target") else "own pixels")
    patch = "x".join(map(str, plan["patch"]["size"]))
    val = plan["training"].get("val_max_cases")
    every = plan["training"].get("val_every", 1)
    return (f"{res}; patch {patch}, batch {plan['batch']['size']}"
            + (f"; val subset {val}" if val else "") + (f" every {every}" if every > 1 else ""))


def _history(run: Path) -> tuple[int, float, float]:
    """(epochs, seconds trained, share of them spent validating, the final choice on the whole split included)."""
    with open(run / "history.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    val = sum(float(r["val_seconds"]) for r in rows if r.get("val_seconds"))
    total = float(rows[-1]["time"]) if rows else 0.0
    choice = run / "validation.json"
    if choice.exists():
        final = float(json.loads(choice.read_text()).get("seconds", 0.0))
        val, total = val + final, total + final
    return len(rows), total, val / total if total else 0.0


def run_one(name: str, out: Path, cache: Path, scale: float) -> dict:
    ds = DATASETS[name]
    prepared = ds.prepare(cache)
    run = out / name / "run"
    if run.exists():
        shutil.rmtree(run)
    budget = f"{parse_duration(ds.budget) * scale:.0f}s"
    train_s = run_medseg("train", str(prepared.data), "--out", str(run), "--time-budget", budget, *prepared.flags)
    evaluation = out / name / "evaluation"
    t = time.perf_counter()
    run_medseg("evaluate", str(run), *(["--data", str(prepared.test)] if prepared.test else []), "--out", str(evaluation))
    eval_s = time.perf_counter() - t
    summary = json.loads((evaluation / "summary.json").read_text())
    dice = summary["mean_dice"]
    epochs, trained, val_share = _history(run)
    choice = run / "validation.json"
    return {"dataset": name, "kind": ds.kind, "budget": budget, "plan": _plan_text(run), "epochs": epochs,
            "val_share": val_share, "train_s": train_s, "eval_s": eval_s, "n": dice["n"], "dice": dice["mean"],
            "ci": dice["ci95"], "reference": ds.reference, "target": ds.target, "protocol": prepared.protocol,
            "final_choice": json.loads(choice.read_text())["kept"] if choice.exists() else "-"}


def table(rows: list[dict]) -> str:
    lines = ["| dataset | budget | plan (working resolution; patch, batch; validation) | epochs | validating | "
             "test cases | Dice mean [95% CI] | reference | train / eval wall s |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        bar = "" if r["target"] is None else (" (meets" if r["dice"] >= r["target"] else " (below") + f" {r['target']:.2f})"
        lines.append(f"| {r['dataset']} | {r['budget']} | {r['plan']} | {r['epochs']} | {r['val_share']:.0%} | {r['n']} | "
                     f"{r['dice']:.4f} [{r['ci'][0]:.3f}-{r['ci'][1]:.3f}]{bar} | {r['reference']} | "
                     f"{r['train_s']:.0f} / {r['eval_s']:.0f} |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--datasets", default=",".join(DATASETS), help=f"comma-separated, from: {', '.join(DATASETS)}")
    ap.add_argument("--budget-scale", type=float, default=1.0, help="multiply every dataset's budget (0.1: a smoke run)")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "out" / "zoo"))
    ap.add_argument("--cache", default=None, help="where prepared files go (default OUT/cache)")
    ap.add_argument("--append", action="store_true", help="append the table to BENCHMARKS.md")
    a = ap.parse_args()
    names = [n.strip() for n in a.datasets.split(",") if n.strip()]
    unknown = [n for n in names if n not in DATASETS]
    if unknown:
        sys.exit(f"unknown dataset(s) {', '.join(unknown)}; choose from {', '.join(DATASETS)}")
    out = Path(a.out)
    cache = Path(a.cache) if a.cache else out / "cache"
    rows = []
    for name in names:
        print(f"== {name}", flush=True)
        rows.append(run_one(name, out, cache, a.budget_scale))
        (out / "results.json").write_text(json.dumps(rows, indent=1))
    text = "\n".join([f"machine: {describe()}", "", table(rows), "",
                      *[f"- {r['dataset']}: {r['protocol']}; final model: {r['final_choice']}" for r in rows]])
    print(text)
    if a.append:
        with open(ROOT / "BENCHMARKS.md", "a") as f:
            f.write(f"\n### Dataset zoo ({time.strftime('%Y-%m-%d')}, `python -m benchmarks.zoo`)\n\n{text}\n")


if __name__ == "__main__":
    main()
