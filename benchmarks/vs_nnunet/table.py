"""The side-by-side table from ``WORK/results.json``: one row per tool, markdown, plus the machine and set-up;
optionally appended to ``BENCHMARKS.md`` under a dated heading.

Columns: Dice per class and HD95 (mean over the classes) of the TTA predictions; mean Dice with TTA / without;
train wall time; inference seconds per case with TTA / without (the whole ``predict`` command divided by the
number of cases, start-up included, for both tools alike); peak RAM of training / inference (the process
tree's summed RSS, the larger of the two predict runs).
"""

from __future__ import annotations

import datetime as _dt
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
TOOLS = (("nnunet", "nnU-Net"), ("medseg", "medseg"))


def _f(v, digits: int = 4) -> str:
    return "n/a" if v is None else f"{v:.{digits}f}"


def _s(m: dict | None) -> str:
    return "n/a" if not m else f"{m['seconds']:,.0f} s"


def _gib(m: dict | None) -> str:
    return "n/a" if not m else f"{m['peak_tree_mib'] / 1024:.1f}"


def _per_case(m: dict | None, n: int) -> str:
    return "n/a" if not m or not n else f"{m['seconds'] / n:.2f}"


def row(tool: str, r: dict, n_cases: int) -> str:
    ev, pr = r.get("eval", {}), r.get("predict", {})
    tta, notta = ev.get("tta") or {}, ev.get("notta") or {}
    dice = ", ".join(f"{name} {v:.4f}" for name, v in (tta.get("per_class") or {}).items()) or "n/a"
    train = _s(r.get("train"))
    if r.get("epoch_seconds") is not None:
        train += f" (epochs {r['epoch_seconds']:,.0f} s)"
    if r.get("epochs") is not None:
        train += f" ({r['epochs']} epoch{'' if r['epochs'] == 1 else 's'})"
    if r.get("plan_and_preprocess"):
        train += f" + plan/preprocess {_s(r['plan_and_preprocess'])}"
    infer = max((pr.get(k) for k in ("tta", "notta") if pr.get(k)), key=lambda m: m["peak_tree_mib"], default=None)
    return (f"| {tool} | {dice} | {_f(tta.get('mean_dice'))} / {_f(notta.get('mean_dice'))} | {_f(tta.get('hd95_mean'), 2)} "
            f"| {train} | {_per_case(pr.get('tta'), n_cases)} / {_per_case(pr.get('notta'), n_cases)} "
            f"| {_gib(r.get('train'))} / {_gib(infer)} |")


def markdown(results: dict) -> str:
    """The table and its notes, as markdown."""
    n = results["cases"]["test"]
    unit = "mm" if results["dim"] == 3 else "px"
    lines = [
        f"Dataset {results['dataset']} ({results['dim']}D): {results['cases']['train']} training / "
        f"{results['cases']['val']} validation cases (nnU-Net fold 0 = medseg's split), {n} evaluated"
        + (" inside the field-of-view masks" if results.get("fov") else "") + f". Device {results['device']}; "
        f"medseg budget {results['budget']}; nnU-Net {results['nnunet'].get('version', '?')} "
        f"`{results['nnunet'].get('trainer', '?')}` ({results['nnunet'].get('configuration', '?')}).",
        "",
        f"| tool | Dice per class (TTA) | mean Dice TTA / no TTA | HD95 {unit} (TTA, mean of classes) | train wall time "
        "| inference s/case TTA / no TTA | peak RAM GiB train / inference |",
        "|---|---|---|---|---|---|---|",
    ]
    lines += [row(label, results[key], n) for key, label in TOOLS if key in results]
    lines += ["", f"Machine: {results['machine']}."]
    cross = results["nnunet"].get("nnunet_eval")
    if cross:
        ours = results["nnunet"].get("eval_whole_image_tta") or (results["nnunet"].get("eval") or {}).get("tta") or {}
        per = ", ".join(f"{k} {v:.4f}" for k, v in cross["per_class"].items())
        lines.append(f"Cross-check, nnU-Net's TTA predictions scored by nnU-Net's own evaluator: {per}; mean {cross['mean_dice']:.4f} "
                     f"(`medseg evaluate`{' on whole images, without the FOV' if results.get('fov') else ''}: "
                     f"mean {_f(ours.get('mean_dice'))}).")
    lines.append(f"Command: `{results['command']}`")
    if results.get("smoke"):
        lines.append("SMOKE RUN (a few cases, a few iterations): the numbers mean nothing.")
    return "\n".join(lines) + "\n"


def append_to_benchmarks(text: str, results: dict, path: Path = ROOT / "BENCHMARKS.md") -> Path:
    """Append ``text`` under ``## medseg vs nnU-Net: DATASET, BUDGET (DATE)`` to ``path``."""
    if results.get("smoke"):
        raise ValueError("a smoke run is not appended to BENCHMARKS.md")
    date = results.get("date") or _dt.date.today().isoformat()
    heading = f"## medseg vs nnU-Net: {results['dataset']}, {results['budget']} budget, {results['device']} ({date})"
    old = path.read_text() if path.exists() else "# Benchmarks\n"
    path.write_text(old.rstrip("\n") + f"\n\n{heading}\n\n{text}")
    return path
