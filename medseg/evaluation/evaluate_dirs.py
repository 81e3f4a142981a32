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
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from medseg.data.files import IMAGE_SUFFIXES
from medseg.data.naming import pairing_key
from medseg.data.labels import LabelScheme, canonical
from medseg.data.mask_reading import detect_scheme
from medseg.errors import ConfigError, DataError
from medseg.evaluation.metrics import DEFAULT_TOLERANCE, case_metrics, class_metrics, mean_over_classes, wide_row
from medseg.evaluation.outputs import spacing_text, summarize, write_cases_json, write_rows_csv, write_summary
from medseg.io import read_image
from medseg.io.base import file_suffix
from medseg.io.volume import VOLUME_SUFFIXES

log = logging.getLogger(__name__)

LABEL_SUFFIXES = (*VOLUME_SUFFIXES, *IMAGE_SUFFIXES)
_SKIP_NAMES = frozenset({"dataset.json", "labels.json", "thumbs.db", "desktop.ini", "splits_final.json", "plans.json"})
_SKIP_STEM = re.compile(r"(?i)_(probabilities|overlay)$")
_EXTRA_ROLE_WORDS = frozenset({"pred", "preds", "prediction", "predictions", "predicted", "output"})
_READ_HINT = "check the file, or remove it from the folder"


@dataclass
class LabelMap:
    """One decoded label map: ``array`` ``(*spatial)`` integer values, its spacing and length unit."""

    array: np.ndarray
    spacing: tuple[float, ...]
    unit: str  #: "mm" (volumes) or "px" (2D image files)
    geometry: Any = None  #: the volume's Geometry (None for 2D image files)


# --------------------------------------------------------------------------- files and pairing


def _stem(path: Path) -> str:
    s = file_suffix(path)
    return path.name[: len(path.name) - len(s)] if s else path.name


def list_label_files(folder: Path, what: str) -> list[Path]:
    """The label files directly in ``folder`` (sorted); :class:`DataError` when there are none."""
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(f"{what} folder not found", path=folder)
    files, skipped = [], []
    for p in sorted(folder.iterdir(), key=lambda p: p.name):
        if p.name.startswith(".") or p.is_dir() or p.name.lower() in _SKIP_NAMES:
            continue
        suffix = file_suffix(p)
        if suffix in (".raw", ".zraw"):  # MetaImage data files
            continue
        if suffix not in LABEL_SUFFIXES:
            skipped.append(p.name)
        elif _SKIP_STEM.search(_stem(p)):
            log.debug("%s: skipped (not a label map)", p)
        else:
            files.append(p)
    if skipped:
        log.warning("%s: skipping %d file(s) that are not label maps: %s", folder, len(skipped), ", ".join(skipped[:10]))
    if not files:
        raise DataError(f"the {what} folder holds no label files", path=folder,
                        hint=f"put the {what} label maps ({', '.join(LABEL_SUFFIXES)}) directly in this folder")
    return files


def _exact_keys(files: list[Path]) -> list[str]:
    stems = [_stem(p) for p in files]
    if all(s.endswith("_0000") and len(s) > 5 for s in stems):
        stems = [s[:-5] for s in stems]
    return stems


def _role_key(key: str) -> str:
    k = pairing_key(key, is_mask=True)
    kept = [t for t in k.split("_") if t not in _EXTRA_ROLE_WORDS]
    return "_".join(kept) if kept else k


def _keyed(files: list[Path], keys: list[str]) -> tuple[dict[str, Path], list[tuple[Path, Path]]]:
    out: dict[str, Path] = {}
    dups = []
    for p, k in zip(files, keys):
        if k in out:
            dups.append((out[k], p))
        else:
            out[k] = p
    return out, dups


def _names(items, limit: int = 10) -> str:
    items = sorted(items)
    return ", ".join(items[:limit]) + (f" ... ({len(items)} in all)" if len(items) > limit else "")


def pair_files(pred_files: list[Path], gt_files: list[Path]) -> list[tuple[str, Path, Path]]:
    """``[(case, prediction, truth)]`` paired by name (see the module docs); unmatched names are a :class:`DataError`."""
    candidates = []
    for keyer in (lambda ks: ks, lambda ks: [_role_key(k) for k in ks]):
        pred, pdup = _keyed(pred_files, keyer(_exact_keys(pred_files)))
        gt, gdup = _keyed(gt_files, keyer(_exact_keys(gt_files)))
        if not pdup and not gdup and set(pred) == set(gt):
            return [(k, pred[k], gt[k]) for k in sorted(gt)]
        candidates.append((pred, gt, pdup, gdup))
    pred, gt, pdup, gdup = min(candidates, key=lambda c: len(set(c[0]) ^ set(c[1])) + len(c[2]) + len(c[3]))
    if pdup or gdup:
        a, b = (pdup or gdup)[0]
        raise DataError(f"{a.name} and {b.name} have the same case name", path=b,
                        hint="give every case one file per folder (same name in both folders)")
    only_pred, only_gt = set(pred) - set(gt), set(gt) - set(pred)
    if only_pred:
        first = pred[sorted(only_pred)[0]]
        raise DataError(f"{len(only_pred)} prediction(s) without a ground truth of the same name: "
                        f"{_names(pred[k].name for k in only_pred)}", path=first.parent,
                        hint=f"add their truth to {next(iter(gt.values())).parent}, or remove them from the predictions")
    first = gt[sorted(only_gt)[0]]
    raise DataError(f"{len(only_gt)} ground truth file(s) without a prediction of the same name: "
                    f"{_names(gt[k].name for k in only_gt)}", path=first.parent,
                    hint="predict them too, or evaluate on a truth folder holding only the predicted cases")


# --------------------------------------------------------------------------- reading


def _is_volume(path: Path) -> bool:
    return file_suffix(path) in VOLUME_SUFFIXES


def _read_volume_labels(path: Path) -> LabelMap:
    img = read_image(path)
    if img.array.shape[0] != 1:
        raise DataError(f"a label map must have one channel, this file has {img.array.shape[0]}", path=path,
                        hint="save the label map as a scalar volume of label values")
    arr = img.array[0]
    spacing = tuple(img.geometry.spacing)
    while arr.ndim > 2 and arr.shape[-1] == 1:  # a 2D map stored as a 1-slice volume
        arr, spacing = arr[..., 0], spacing[:-1]
    if arr.dtype.kind == "f":
        if not np.all(np.isfinite(arr)) or not np.array_equal(arr, np.round(arr)):
            raise DataError("label map holds non-integer values", path=path,
                            hint="a label map holds integer label values; was a probability or image map saved here?")
        arr = arr.astype(np.int64)
    elif arr.dtype.kind not in "ui":
        raise DataError(f"label map dtype {arr.dtype} is not numeric", path=path)
    if arr.size and arr.min() < 0:
        raise DataError(f"label map holds negative values ({int(arr.min())})", path=path)
    return LabelMap(arr, spacing, "mm", img.geometry)


def _gray_ids(arr: np.ndarray, scheme: LabelScheme, index_fallback: bool) -> np.ndarray | None:
    """Fast path: class ids of a gray mask ``(1 or 3 equal channels, H, W)`` through a lookup table.

    ``None`` when the mask is not plain gray or holds a value outside the scheme (and, with
    ``index_fallback``, is not a map of class indices either); the caller then decodes it
    with :meth:`LabelScheme.decode`, which explains the problem.
    """
    if arr.ndim != 3 or arr.dtype.kind not in "ui" or arr.dtype.itemsize > 2 or scheme.kind == "color":
        return None
    if arr.shape[0] == 3 and np.array_equal(arr[0], arr[1]) and np.array_equal(arr[1], arr[2]):
        arr = arr[:1]
    if arr.shape[0] != 1:
        return None
    codes = arr[0]
    top = int(codes.max()) if codes.size else 0
    lut = np.full(max(top, *scheme.codes) + 1, -1, dtype=np.int32)
    lut[[c for c in scheme.codes if c >= 0]] = [i for i, c in enumerate(scheme.codes) if c >= 0]
    ids = lut[codes]
    if not ids.size or ids.min() >= 0:
        return ids.astype(np.uint8)
    if index_fallback and top < scheme.num_classes:
        return codes.astype(np.uint8)
    return None


def _read_mask_2d(path: Path, scheme: LabelScheme, prediction: bool) -> np.ndarray:
    """A 2D mask as class ids in the truth's scheme; a prediction may also hold class indices 0..K-1."""
    arr = read_image(path).array
    ids = _gray_ids(arr, scheme, index_fallback=prediction)
    if ids is not None:
        return ids
    try:
        return scheme.decode(arr, path)
    except DataError:
        if not prediction:
            raise
        kind, codes, transparent = canonical(arr, path)
        if transparent is not None:
            codes = np.where(transparent, 0, codes)
        if kind == "gray" and (not codes.size or codes.max() < scheme.num_classes):
            return codes.astype(np.uint8)
        found = np.unique(codes)
        shown = ", ".join(str(int(v)) for v in found[:8]) + (" ..." if found.size > 8 else "")
        raise DataError(
            f"unexpected label values in the prediction: {shown}; the truth's classes are "
            f"{scheme._describe_codes()} (or class indices 0..{scheme.num_classes - 1})",
            path=path, hint="write predictions as class indices or in the truth's encoding (e.g. 0/255)",
        ) from None


def _read_pair(pred_path: Path, gt_path: Path, scheme: LabelScheme | None) -> tuple[LabelMap, LabelMap]:
    if _is_volume(pred_path) != _is_volume(gt_path):
        raise DataError(f"the prediction is a {'volume' if _is_volume(pred_path) else '2D image'} file but its truth "
                        f"{gt_path.name} is not", path=pred_path, hint="give predictions in the truth's kind of format")
    if _is_volume(gt_path):
        return _read_volume_labels(pred_path), _read_volume_labels(gt_path)
    gt = _read_mask_2d(gt_path, scheme, prediction=False)
    pred = _read_mask_2d(pred_path, scheme, prediction=True)
    return LabelMap(pred, (1.0,) * pred.ndim, "px"), LabelMap(gt, (1.0,) * gt.ndim, "px")


def _check_grids(pred: LabelMap, gt: LabelMap, pred_path: Path, gt_path: Path) -> None:
    if pred.array.shape != gt.array.shape:
        size = lambda a: "x".join(map(str, a.shape))  # noqa: E731
        raise DataError(f"prediction size {size(pred.array)} differs from the truth's {size(gt.array)} ({gt_path.name})",
                        path=pred_path, hint="predictions must lie on the truth's grid: resample them onto it first")
    if pred.geometry is None or gt.geometry is None:
        return
    sp, sg = np.asarray(pred.spacing), np.asarray(gt.spacing)
    if np.any(np.abs(sp - sg) > 1e-3 * np.maximum(sp, sg)):
        raise DataError(f"prediction spacing {spacing_text(sp)} differs from the truth's {spacing_text(sg)} ({gt_path.name})",
                        path=pred_path, hint="predictions must lie on the truth's grid: resample them onto it first")
    o1, o2 = np.asarray(pred.geometry.origin), np.asarray(gt.geometry.origin)
    d1, d2 = np.asarray(pred.geometry.direction), np.asarray(gt.geometry.direction)
    if o1.shape != o2.shape or np.any(np.abs(o1 - o2) > 1e-3 * np.maximum(1.0, np.abs(o2))) or \
            d1.shape != d2.shape or np.any(np.abs(d1 - d2) > 1e-3):
        log.warning("%s: origin or direction differ from the truth's (%s); evaluated voxel by voxel", pred_path, gt_path.name)


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
    on_case: Callable[[str], None] | None = None,
    extra: Mapping[str, Any] | None = None,
) -> dict:
    """Evaluate the predictions in ``pred_dir`` against ``gt_dir`` (see the module docs); returns the summary."""
    pred_dir, gt_dir = Path(pred_dir), Path(gt_dir)
    if not (math.isfinite(tolerance) and tolerance >= 0):
        raise ConfigError(f"the NSD tolerance must be a finite number >= 0, got {tolerance}")
    declared = parse_labels(labels) if isinstance(labels, str) else ({int(k): str(v) for k, v in labels.items()} if labels else None)
    pairs = pair_files(list_label_files(pred_dir, "prediction"), list_label_files(gt_dir, "ground truth"))
    kinds = {_is_volume(g) for _, _, g in pairs}
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
        scheme = detect_scheme([g for _, _, g in pairs])
        known = _labels_2d(declared, scheme)
    fovs = _pair_fov(fov_dir, [k for k, _, _ in pairs]) if fov_dir is not None else {}

    results: list[tuple[str, Path, Path, LabelMap, list[dict], set[int]]] = []
    gt_values: set[int] = set()
    for key, pred_path, gt_path in pairs:
        pred, gt = _read_pair(pred_path, gt_path, scheme)
        _check_grids(pred, gt, pred_path, gt_path)
        mask = _read_fov(fovs[key], gt.array.shape) if key in fovs else None
        p_vals, g_vals = _present(pred.array) - {0}, _present(gt.array) - {0}
        if known is not None and declared is None:
            _check_values(g_vals, known, gt_path, "truth")
        gt_values |= g_vals
        score = known if known is not None else {v: f"class_{v}" for v in sorted(p_vals | g_vals)}
        rows = case_metrics(pred.array, gt.array, score, gt.spacing, tolerance, mask) if score else []
        results.append((key, pred_path, gt_path, gt, rows, p_vals))
        if on_case:
            on_case(key)

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


def _read_fov(path: Path, shape: tuple[int, ...]) -> np.ndarray:
    """A field-of-view mask: non-zero pixels (of any of the first three channels) are inside.

    Reads as :func:`medseg.data.dataset2d.read_fov` does, without importing the training stack (torch).
    """
    arr = read_image(path).array
    fov = arr[: 3 if arr.shape[0] >= 3 else 1].max(0) > 0
    if fov.shape != tuple(shape):
        raise DataError(f"field-of-view mask is {fov.shape[1]}x{fov.shape[0]} but its case is {shape[1]}x{shape[0]}", path=path)
    return fov


def _pair_fov(fov_dir: str | Path, keys: list[str]) -> dict[str, Path]:
    files = [p for p in list_label_files(Path(fov_dir), "field-of-view") if not _is_volume(p)]
    by_role = {_role_key(k): p for k, p in zip(_exact_keys(files), files)}
    by_exact = dict(zip(_exact_keys(files), files))
    out, missing = {}, []
    for k in keys:
        p = by_exact.get(k) or by_role.get(_role_key(k))
        if p is None:
            missing.append(k)
        else:
            out[k] = p
    if missing:
        raise DataError(f"no field-of-view mask for {len(missing)} case(s): {_names(missing)}", path=fov_dir,
                        hint="give every case a FOV mask of the same name, or leave out --fov")
    return out
