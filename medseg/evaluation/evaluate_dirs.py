"""Standalone evaluation of any tool's predictions: ``medseg evaluate PRED_DIR GT_DIR``.

Files
-----
Both folders hold label maps: volumes (``.nii.gz``, ``.nii``, ``.nrrd``, ``.mha``,
``.mhd``; label values as stored) or 2D masks (PNG/TIF/GIF/BMP/JPG), decoded by
meaning with :func:`medseg.data.labels.read_mask` (so 0/255 masks, index masks and
colour masks work; a prediction written as class indices 0..K-1 is accepted against
0/255 or gray-level truth). Hidden files, ``dataset.json``/``labels.json``,
``*_probabilities.*`` and ``*_overlay.*`` files and subfolders are skipped.

Pairing is by name, never by position: the name without its format ending
(``.nii.gz`` counts as one) and, when every file of a folder ends in ``_0000``,
without that nnU-Net channel suffix. When those names differ between the
folders, role words are dropped as for training data
(:func:`medseg.data.discovery.pairing_key`, plus ``pred``/``prediction``):
``01_test.png`` pairs with ``01_manual1.gif``. Every prediction needs a truth and
every truth a prediction; the unmatched names are listed otherwise.

Geometry: a prediction must have its truth's size; volumes must also have its
spacing (origin/direction differences are warned about). Metrics use the truth's
spacing (mm) for volumes, pixels for 2D image files. ``fov_dir`` (2D) holds a
field-of-view mask per case, paired by name; outside it both maps count as background.

Labels: ``labels`` (``{value: name}``; 2D values are class ids, or the gray codes
of the truth files) or else the ``"labels"`` of a ``dataset.json`` in ``gt_dir`` or
its parent, or else every non-zero value found in the truth (``class_<value>``; 2D:
the classes of the detected mask scheme). ``labels`` may name a subset: the truth's
other values are then left unscored. A value that is neither evaluated nor in the
truth is an error in a prediction; with ``dataset.json`` labels, an undeclared value
in the truth is one too.

Outputs in ``out`` (default ``PRED_DIR/evaluation``): ``per_case.csv`` (first column
``case``), ``summary.json`` (:mod:`medseg.evaluation.outputs`) and ``cases.json``.
"""

from __future__ import annotations

import json
import logging
import math
import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from medseg.data.labels import LabelScheme
from medseg.data.mask_reading import detect_scheme
from medseg.errors import ConfigError, DataError
from medseg.evaluation.metrics import DEFAULT_TOLERANCE, case_metrics, class_metrics, mean_over_classes, wide_row
from medseg.evaluation.outputs import spacing_text, summarize, write_cases_json, write_rows_csv, write_summary
from medseg.evaluation.file_pairing import list_label_files, pair_files, pair_fov_files
from medseg.evaluation.label_reading import LabelMap, check_grids, is_volume_file, read_fov, read_pair

log = logging.getLogger(__name__)

_READ_HINT = "check the file, or remove it from the folder"


# --------------------------------------------------------------------------- labels


def parse_labels(spec: str | None) -> dict[int, str] | None:
    """``"1=anterior,2=posterior"`` (or ``"1,2"``) → ``{1: "anterior", 2: "posterior"}``."""
    if spec is None or not spec.strip():
        return None
    out: dict[int, str] = {}
    for part in spec.split(","):
        part = part.strip()
        if not part:
            continue
        value, _, name = part.partition("=")
        try:
            v = int(value.strip())
        except ValueError:
            raise ConfigError(f"cannot read label {part!r}: expected VALUE=NAME with an integer value",
                              hint="e.g. --labels 1=anterior,2=posterior") from None
        if v <= 0:
            raise ConfigError(f"label value {v} is background or negative; list the foreground labels only")
        if v in out:
            raise ConfigError(f"label value {v} is given twice")
        out[v] = name.strip() or f"class_{v}"
    if len(set(out.values())) != len(out):
        raise ConfigError(f"label names must be unique, got {', '.join(out.values())}")
    return out or None


def dataset_json_labels(gt_dir: Path) -> dict[int, str] | None:
    """Foreground labels of a ``dataset.json`` in ``gt_dir`` or its parent (Decathlon or nnU-Net v2), if any."""
    for folder in (gt_dir, gt_dir.parent):
        path = folder / "dataset.json"
        if not path.is_file():
            continue
        try:
            raw = json.loads(path.read_text(encoding="utf-8")).get("labels")
        except (OSError, UnicodeDecodeError, json.JSONDecodeError, AttributeError) as e:
            log.warning("%s: not used for label names (%s)", path, e)
            return None
        if not isinstance(raw, dict) or not raw:
            return None
        try:
            if all(re.fullmatch(r"-?\d+", str(k)) for k in raw):  # Decathlon: {"1": "Anterior"}
                labels = {int(k): str(v) for k, v in raw.items()}
            else:  # nnU-Net v2: {"Anterior": 1}
                labels = {int(v): str(k) for k, v in raw.items()}
        except (TypeError, ValueError):
            log.warning("%s: \"labels\" not understood; label names not used", path)
            return None
        log.info("label names from %s", path)
        return {v: n for v, n in sorted(labels.items()) if v != 0}
    return None


def _labels_2d(labels: dict[int, str] | None, scheme: LabelScheme) -> dict[int, str]:
    """2D labels as class ids; values given as gray codes of the truth files are mapped to their ids."""
    ids = range(1, scheme.num_classes)
    if labels is None:
        return {i: scheme.names[i] for i in ids}
    out = {}
    for v, name in labels.items():
        if v not in ids and scheme.kind != "color" and v in scheme.codes:
            v = scheme.codes.index(v)
        if v not in ids:
            raise ConfigError(f"label {v} is not a class of the truth masks ({scheme._describe_codes()})",
                              hint="give class ids 1..K-1 or the masks' gray values")
        out[v] = name
    return out


# --------------------------------------------------------------------------- evaluation


def _present(arr: np.ndarray) -> set[int]:
    if arr.dtype.kind in "ui" and arr.size and int(arr.max()) < (1 << 16):
        return set(np.flatnonzero(np.bincount(arr.ravel())).tolist())
    return set(np.unique(arr).tolist())


def evaluate_dirs(
    pred_dir: str | Path,
    gt_dir: str | Path,
    *,
    labels: Mapping[int, str] | str | None = None,
    tolerance: float = DEFAULT_TOLERANCE,
    out: str | Path | None = None,
    fov_dir: str | Path | None = None,
    on_case: Callable[[str, int, int], None] | None = None,
    extra: Mapping[str, Any] | None = None,
) -> dict:
    """Evaluate the predictions in ``pred_dir`` against ``gt_dir`` (see the module docs); returns the summary."""
    pred_dir, gt_dir = Path(pred_dir), Path(gt_dir)
    if not (math.isfinite(tolerance) and tolerance >= 0):
        raise ConfigError(f"the NSD tolerance must be a finite number >= 0, got {tolerance}")
    declared = parse_labels(labels) if isinstance(labels, str) else ({int(k): str(v) for k, v in labels.items()} if labels else None)
    pairs = pair_files(list_label_files(pred_dir, "prediction"), list_label_files(gt_dir, "ground truth"))
    kinds = {is_volume_file(g) for _, _, g in pairs}
    if len(kinds) > 1:
        raise DataError("the ground truth folder mixes volumes and 2D image files", path=gt_dir,
                        hint="evaluate 2D and 3D cases separately")
    volumes = kinds == {True}
    scheme = None
    if volumes:
        if fov_dir is not None:
            raise ConfigError("--fov applies to 2D masks only")
        known = declared or dataset_json_labels(gt_dir)
    else:
        scheme = detect_scheme([g for _, _, g in pairs], allow_rare=True)  # the truth is what it is
        known = _labels_2d(declared, scheme)
    fovs = pair_fov_files(fov_dir, [k for k, _, _ in pairs]) if fov_dir is not None else {}

    results: list[tuple[str, Path, Path, LabelMap, list[dict], set[int]]] = []
    gt_values: set[int] = set()
    for done, (key, pred_path, gt_path) in enumerate(pairs, 1):
        pred, gt = read_pair(pred_path, gt_path, scheme)
        check_grids(pred, gt, pred_path, gt_path)
        mask = read_fov(fovs[key], gt.array.shape) if key in fovs else None
        p_vals, g_vals = _present(pred.array) - {0}, _present(gt.array) - {0}
        if known is not None and declared is None:
            _check_values(g_vals, known, gt_path, "truth")
        gt_values |= g_vals
        score = known if known is not None else {v: f"class_{v}" for v in sorted(p_vals | g_vals)}
        rows = case_metrics(pred.array, gt.array, score, gt.spacing, tolerance, mask) if score else []
        results.append((key, pred_path, gt_path, gt, rows, p_vals))
        if on_case:
            on_case(key, done, len(pairs))

    if known is None:
        if not gt_values:
            raise DataError("every ground truth map is empty (only 0), so there are no labels to evaluate", path=gt_dir,
                            hint="name the labels with --labels, e.g. --labels 1=lesion")
        known = {v: f"class_{v}" for v in sorted(gt_values)}
    # --labels may score a subset: the truth's other values are then known but not scored
    allowed = set(known) | (gt_values if declared is not None else set())
    for _key, pred_path, _, _, _, p_vals in results:
        _check_values(p_vals, allowed, pred_path, "prediction", known)
    empty = class_metrics(np.zeros(1, bool), np.zeros(1, bool))
    long_rows, wide, listing = [], [], {}
    for key, pred_path, gt_path, gt, rows, _ in results:
        by_value = {r["label"]: r for r in rows}
        rows = [{"case": key, **by_value.get(v, {"label": v, "class": n, **empty})} for v, n in known.items()]
        long_rows += rows
        wide.append({"case": key, "prediction": pred_path.name, "truth": gt_path.name, "spacing": spacing_text(gt.spacing),
                     "mean_dice": mean_over_classes(rows), **wide_row(rows)})
        listing[key] = {"image": None, "label": str(gt_path.resolve()), "prediction": str(pred_path.resolve()),
                        "fov": str(fovs[key].resolve()) if key in fovs else None}

    out_dir = Path(out) if out else pred_dir / "evaluation"
    unit = results[0][3].unit
    summary = summarize(
        long_rows, list(known.values()), tolerance=tolerance, spacing_unit=unit, ndim=results[0][3].array.ndim, extra=extra,
        header={"task": "evaluation", "source": f"{pred_dir} vs {gt_dir}", "predictions": str(pred_dir),
                "ground_truth": str(gt_dir), "images": len(wide), "fov_restricted": len(fovs),
                "labels": {str(v): n for v, n in known.items()}},
    )
    write_rows_csv(out_dir / "per_case.csv", wide)
    write_summary(out_dir / "summary.json", summary)
    write_cases_json(out_dir / "cases.json", listing)
    return summary


def _check_values(found: set[int], allowed, path: Path, what: str, known: Mapping[int, str] | None = None) -> None:
    extra = sorted(found - set(allowed))
    if extra:
        known = known if known is not None else allowed
        raise DataError(
            f"unexpected label values in the {what}: {', '.join(map(str, extra[:10]))} "
            f"(evaluated labels: {', '.join(f'{v}={n}' for v, n in known.items())})",
            path=path, hint="fix the file, or list every label with --labels VALUE=NAME,...",
        )
