"""The files an evaluation writes: per-case CSV, ``summary.json`` and ``cases.json``.

Shared by run evaluation (2D and 3D) and the standalone ``medseg evaluate PRED GT``.

``summary.json`` (strict JSON: NaN and infinities are written as ``null``)::

    {"source": ..., "images": N, ...,                  # who and what was evaluated
     "tolerance": 1.0, "units": {"hd95": "mm", "vol_diff": "mm³", ...},
     "bootstrap": {"samples": 2000, "seed": 0, "confidence": 0.95},
     "mean_dice": STATS,                                # per case: mean Dice over its classes
     "classes": {NAME: {"label": VALUE, "dice": STATS, "iou": STATS, ..., "nsd": STATS,
                        "dice_pooled": .., "iou_pooled": ..}},
     ...extra}                                          # e.g. calibration, merged last

with ``STATS = {"mean", "std", "median", "ci95": [lo, hi], "ci_unit", "n", "n_nan"}`` (``ci_note`` when there is no interval)
(:mod:`medseg.evaluation.aggregate`). The dict returned to Python callers keeps
NaN as ``float("nan")``.
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from medseg.evaluation.aggregate import BOOTSTRAP_SAMPLES, BOOTSTRAP_SEED, CONFIDENCE, describe, summarize_classes
from medseg.evaluation.metrics import METRICS, mean_over_classes, units
from medseg.io.atomic import write_json, write_text


def json_safe(obj: Any) -> Any:
    """``obj`` with NaN/inf floats as ``None`` and NumPy scalars, arrays and paths as plain JSON values."""
    if isinstance(obj, Mapping):
        return {str(k): json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return json_safe(obj.tolist())
    if isinstance(obj, np.generic):
        obj = obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, Path):
        return str(obj)
    return obj


def spacing_text(spacing) -> str:
    """``(0.8, 0.8, 2.5)`` → ``"0.8x0.8x2.5"``."""
    return "x".join(f"{float(s):.6g}" for s in spacing)


def write_rows_csv(path: Path, rows: Sequence[Mapping[str, Any]]) -> None:
    """One row per image or case (columns of the first row; the first is the case name); floats with 6 decimals."""
    if not rows:
        raise ValueError(f"no rows to write to {path}")
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=list(rows[0]), extrasaction="ignore")
    w.writeheader()
    for r in rows:
        w.writerow({k: (f"{v:.6f}" if isinstance(v, float) else v) for k, v in r.items()})
    write_text(path, buf.getvalue())


def summarize(
    metric_rows: Sequence[Mapping[str, Any]],
    class_names: Sequence[str],
    *,
    header: Mapping[str, Any],
    tolerance: float,
    spacing_unit: str,
    ndim: int,
    per_case: Mapping[str, Sequence[float]] | None = None,
    extra: Mapping[str, Any] | None = None,
    groups: Mapping[Any, Any] | None = None,
    **bootstrap,
) -> dict[str, Any]:
    """The summary dict of the module docs.

    ``metric_rows`` are the long rows (one per case and class, with ``case``);
    ``per_case`` adds case-level statistics such as ``{"accuracy": [...]}``;
    ``mean_dice`` is computed from the rows. ``extra`` is merged last. ``groups`` maps a case to its patient:
    intervals then resample patients (:func:`~medseg.evaluation.aggregate.describe`).
    """
    by_case: dict[Any, list] = {}
    for r in metric_rows:
        by_case.setdefault(r["case"], []).append(r)
    boot = {"samples": bootstrap.get("samples", BOOTSTRAP_SAMPLES), "seed": bootstrap.get("seed", BOOTSTRAP_SEED),
            "confidence": bootstrap.get("confidence", CONFIDENCE)}
    summary: dict[str, Any] = dict(header)
    summary.update({
        "tolerance": float(tolerance),
        "units": {m: u for m, u in units(spacing_unit, ndim).items() if u},
        "bootstrap": boot,
    })
    patients = [groups.get(case, case) for case in by_case] if groups else None
    for key, values in (per_case or {}).items():  # in the order of the cases
        summary[key] = describe(values, patients if patients and len(patients) == len(values) else None, **bootstrap)
    summary["mean_dice"] = describe([mean_over_classes(rows) for rows in by_case.values()], patients, **bootstrap)
    summary["classes"] = summarize_classes(metric_rows, class_names, METRICS, groups, **bootstrap)
    summary.update(extra or {})
    return summary


def write_summary(path: Path, summary: Mapping[str, Any]) -> None:
    write_json(path, json_safe(summary))


def write_cases_json(path: Path, cases: Mapping[str, Mapping[str, Any]]) -> None:
    """``{case: {"image": path or [paths], "label": path or [paths], "prediction": path, "fov": path or null}}``."""
    write_json(path, json_safe(cases))
