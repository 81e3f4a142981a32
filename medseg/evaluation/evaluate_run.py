"""Evaluate a trained run on its held-out test split or on another labelled folder.

Per image and class: Dice and IoU; per image: pixel accuracy. A field-of-view
mask, when the data has one, restricts every metric to the pixels inside it.
Writes ``evaluation/per_image.csv`` and ``evaluation/summary.json`` in the run
folder (or ``out``), and overlays of the best and worst images. 3D runs are
evaluated by :mod:`medseg.evaluation.evaluate_run3d` (chosen by the run's task).
"""

from __future__ import annotations

import csv
import io
import logging
import math
from collections.abc import Callable
from pathlib import Path

import numpy as np

from medseg.data.dataset2d import DataOptions2D, read_fov
from medseg.data.discovery import Case2D, discover_cases
from medseg.data.labels import read_mask
from medseg.errors import ConfigError, DataError, RunFolderError
from medseg.evaluation.overlap import confusion_matrix, mean_foreground, scores_from_confusion
from medseg.inference.predictor import Predictor2D
from medseg.io import read_image
from medseg.io.atomic import write_json, write_text
from medseg.runfolder import read_run_info

log = logging.getLogger(__name__)


def _test_cases(run_dir: Path) -> list[Case2D]:
    import json

    split = json.loads((run_dir / "split.json").read_text())
    cases = [Case2D(e["key"], Path(e["image"]), tuple(Path(m) for m in e["masks"]),
                    Path(e["fov"]) if e.get("fov") else None, e.get("group")) for e in split.get("test", [])]
    if not cases:
        raise RunFolderError("the run's split has no test images", path=run_dir,
                             hint="evaluate on a labelled folder with --data DIR")
    return cases


def _stats(values: list[float]) -> dict[str, float | int]:
    v = np.array([x for x in values if not math.isnan(x)], dtype=np.float64)
    if not v.size:
        return {"mean": float("nan"), "std": float("nan"), "n": 0}
    return {"mean": float(v.mean()), "std": float(v.std()), "n": int(v.size)}


def write_rows_csv(path: Path, rows: list[dict]) -> None:
    """One row per image or case; floats with 6 decimals."""
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=list(rows[0]))
    w.writeheader()
    for r in rows:
        w.writerow({kk: (f"{v:.6f}" if isinstance(v, float) else v) for kk, v in r.items()})
    write_text(path, buf.getvalue())


def summarize(rows: list[dict], pooled: np.ndarray, names: list[str], source: str, mirror: bool) -> dict:
    """Mean/std per class of the rows' ``dice_<name>``/``iou_<name>``, plus pooled scores."""
    pooled_scores = scores_from_confusion(pooled)
    return {
        "source": source,
        "images": len(rows),
        "fov_restricted": sum(r.get("fov", 0) for r in rows),
        "mirror_tta": mirror,
        "accuracy": _stats([r["accuracy"] for r in rows]),
        "mean_dice": _stats([r["mean_dice"] for r in rows]),
        "classes": {
            names[c]: {
                "dice": _stats([r[f"dice_{names[c]}"] for r in rows]),
                "iou": _stats([r[f"iou_{names[c]}"] for r in rows]),
                "dice_pooled": float(pooled_scores["dice"][c]),
                "iou_pooled": float(pooled_scores["iou"][c]),
            }
            for c in range(1, len(names))
        },
    }


def evaluate_run(
    run_dir: str | Path,
    data: str | Path | None = None,
    *,
    fov: str | None = None,
    out: str | Path | None = None,
    mirror: bool = False,
    overlays: int = 3,
    on_case: Callable[[str], None] | None = None,
) -> dict:
    """Evaluate and write the CSV/JSON; returns the summary dict."""
    run_dir = Path(run_dir)
    info = read_run_info(run_dir)
    if info.get("task") == "segmentation3d":
        from medseg.evaluation.evaluate_run3d import evaluate_run_3d

        if fov:
            raise ConfigError("--fov applies to 2D runs only", path=run_dir)
        return evaluate_run_3d(run_dir, data, out=out, mirror=mirror, on_case=on_case)
    predictor = Predictor2D.from_run(run_dir, mirror=mirror)
    scheme, k = predictor.scheme, predictor.scheme.num_classes
    if data is None:
        cases = _test_cases(run_dir)
        source = "test split"
    else:
        opts = DataOptions2D(**info["data_options"])
        cases = discover_cases(Path(data), fov=fov, pair_pattern=opts.pair_pattern, require_masks=True)
        source = str(data)
    out_dir = Path(out) if out else run_dir / "evaluation"
    rows: list[dict] = []
    pooled = np.zeros((k, k), dtype=np.int64)
    kept: list[tuple[float, str, np.ndarray, np.ndarray]] = []
    for case in cases:
        img = read_image(case.image)
        truth = read_mask(case.masks, scheme)
        if truth.shape != img.spatial_shape:
            raise DataError(f"mask size {truth.shape[::-1]} differs from image size {img.spatial_shape[::-1]}", path=case.masks[0])
        region = None
        if case.fov is not None:
            region = read_fov(case.fov, img.spatial_shape)
        pred = predictor.predict(img).labels
        cm = confusion_matrix(pred, truth, k, region)
        pooled += cm
        s = scores_from_confusion(cm)
        row = {"case": case.key, "image": case.image.name, "fov": int(region is not None), "accuracy": s["accuracy"],
               "mean_dice": mean_foreground(s["dice"])}
        for c in range(1, k):
            row[f"dice_{scheme.names[c]}"] = float(s["dice"][c])
            row[f"iou_{scheme.names[c]}"] = float(s["iou"][c])
        rows.append(row)
        kept.append((row["mean_dice"], case.key, img.array, pred))
        if on_case:
            on_case(case.key)

    write_rows_csv(out_dir / "per_image.csv", rows)
    summary = summarize(rows, pooled, scheme.names, source, mirror)
    write_json(out_dir / "summary.json", summary)
    if overlays:
        _write_overlays(out_dir / "overlays", kept, predictor.colors, overlays)
    return summary


def _write_overlays(folder: Path, kept: list, colors: list, n: int) -> None:
    from medseg.evaluation.plots import save_overlay

    ranked = sorted((x for x in kept if not math.isnan(x[0])), key=lambda x: x[0])
    chosen = {("worst", i): x for i, x in enumerate(ranked[:n])}
    chosen.update({("best", i): x for i, x in enumerate(reversed(ranked[-n:]))})
    for (tag, i), (score, key, image, pred) in chosen.items():
        save_overlay(folder / f"{tag}{i + 1}_{key}_dice{score:.3f}.png", image, pred, colors)
