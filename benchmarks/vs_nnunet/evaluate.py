"""Score every prediction folder with the same code: ``medseg evaluate PRED_DIR GT_DIR`` (a subprocess, as a
user would run it), against the conversion's ``labelsTs`` (and ``fovTs`` in 2D), reading its ``summary.json``.

The ground truth folder holds the evaluated cases only, named ``CASE.<ending>``; nnU-Net writes
``CASE.<ending>``, medseg ``CASE.nii.gz`` (3D) or ``CASE_0000.png`` (2D), which ``medseg evaluate`` pairs
by name (it drops a ``_0000`` suffix that every file of a folder has). The label values are passed
explicitly (``--labels 1=Anterior,2=Posterior``).
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

from benchmarks.vs_nnunet.convert import Converted
from benchmarks.vs_nnunet.measure import run_measured


def labels_arg(labels: dict[str, int]) -> str:
    """``{"background": 0, "Anterior": 1}`` -> ``"1=Anterior"`` (foreground only)."""
    return ",".join(f"{v}={n}" for n, v in sorted(labels.items(), key=lambda kv: kv[1]) if v != 0)


def _mean(values) -> float | None:
    finite = [v for v in values if isinstance(v, (int, float)) and math.isfinite(v)]
    return sum(finite) / len(finite) if finite else None


def scores_from_summary(summary: dict) -> dict:
    """medseg's ``summary.json`` -> ``{"per_class": {name: Dice}, "mean_dice", "hd95": {name: mm}, "hd95_mean", "cases"}``.

    Means over cases; ``mean_dice`` is medseg's per-case mean over the foreground classes, averaged over
    cases; ``hd95_mean`` the mean of the classes' HD95 (``None`` where no HD95 was computed)."""
    classes = summary["classes"]
    hd95 = {name: (c.get("hd95") or {}).get("mean") for name, c in classes.items()}
    return {"per_class": {name: c["dice"]["mean"] for name, c in classes.items()},
            "mean_dice": summary["mean_dice"]["mean"], "hd95": hd95, "hd95_mean": _mean(hd95.values()),
            "cases": summary.get("images")}


def medseg_evaluate(conv: Converted, pred: Path, out: Path, use_fov: bool = True) -> dict:
    """``medseg evaluate PRED labelsTs --out OUT --labels ... [--fov fovTs]`` -> :func:`scores_from_summary`.

    ``use_fov=False`` scores whole images, as nnU-Net's evaluator does (for the cross-check)."""
    cmd = [sys.executable, "-m", "medseg", "evaluate", str(pred), str(conv.labels_test), "--out", str(out),
           "--labels", labels_arg(conv.dataset.labels)]
    if use_fov and conv.fov_test is not None:
        cmd += ["--fov", str(conv.fov_test)]
    run_measured(cmd, conv.work / "logs" / f"medseg_evaluate_{out.name}.log")
    return scores_from_summary(json.loads((out / "summary.json").read_text()))
