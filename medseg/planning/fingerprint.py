"""The dataset fingerprint: what planning needs to know about a dataset, read once per case.

:func:`compute_fingerprint` reads every case once (3D through
:func:`medseg.data.layouts.load_case`, 2D through the image/mask readers), in a small
process pool, and returns a JSON-serialisable dict:

- ``dims`` (2 or 3), ``num_cases`` (found) and ``cases_used`` (read without error),
  ``channels``, ``modality`` (one entry per channel: ``dataset.json``'s names such as
  ``"CT"``/``"MRI"``, ``"rgb"``/``"gray"`` for 2D images, ``"unknown"`` otherwise) and
  ``looks_like_ct`` (volumes whose intensities span Hounsfield units: air at -500 or below and
  tissue at 0 or above);
- ``shape``, ``cropped_shape`` (after cropping to the non-zero box), ``spacing``: per axis
  ``median``, ``min``, ``max``, ``p10``, ``p90`` (array axis order; 2D images: spacing 1);
  ``anisotropy``: max/min of the median spacing; ``crop_fraction``: median share of voxels
  the non-zero crop keeps;
- ``intensity``: per channel, statistics of foreground (label > 0) voxels pooled over the
  cases (up to :data:`SAMPLES_PER_CASE` sampled per case): mean, std, median, min, max,
  p005, p995 (the 0.5 and 99.5 percentiles);
- ``classes``: per foreground class: name, value, ``voxel_fraction`` (of all voxels),
  ``cases_present``, and connected components (full connectivity: ``count_median`` per case,
  ``size_voxels`` and ``size_mm3`` with median/min/p10 over all components, and the median over
  cases of each case's largest component, ``largest_voxels_median``/``largest_mm3_median``);
  ``tiny`` when that typical largest component has fewer than :data:`TINY_COMPONENT_VOXELS`
  voxels (speckles beside a large structure do not make a class tiny);
- ``problems``: ``{"case", "kind", "detail"}`` for unreadable cases, image/mask size
  (2D) or grid (3D) mismatches, empty labels, constant images, spacing and size outliers, classes in no label and
  intensity scales that differ between cases (``case`` is ``null`` for dataset-wide ones);
- ``cases``: per case ``key``, ``shape``, ``cropped_shape``, ``spacing``, ``object_extent`` (per axis, the
  median bounding box of the case's objects: components of any class of at least :data:`MIN_OBJECT_VOXELS`
  voxels and 1 % of the largest) and, for 2D cases measured, ``fidelity`` (see :mod:`medseg.planning.resolution`);
- ``resolution`` (2D): the labels' fidelity on coarser grids and the objects' extents, summarised;
- ``data_hash``: a hash of the input files' paths, sizes and modification times.
"""

from __future__ import annotations

import logging
import math
import multiprocessing
import os
import time
import zlib
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path
from typing import Any

import numpy as np
from scipy import ndimage

from medseg.data.cache import fingerprint as files_hash
from medseg.data.preprocess3d import bbox_of, intensity_stats
from medseg.data.split import evenly_spaced
from medseg.errors import DataError
from medseg.planning.resolution import SCALES, roundtrip_fidelity

log = logging.getLogger(__name__)

FINGERPRINT_VERSION = 1
#: foreground voxels sampled per case and channel for the pooled intensity statistics (as nnU-Net)
SAMPLES_PER_CASE = 10000
#: component sizes kept per case and class (a random subset beyond)
MAX_COMPONENTS_PER_CASE = 2000
#: a component smaller than this is a speck, not an object (see :func:`_components`)
MIN_OBJECT_VOXELS = 16
#: a class whose largest connected component is typically smaller than this (in voxels) is "tiny"
TINY_COMPONENT_VOXELS = 64
#: a case whose spacing differs from the median by more than this factor on an axis is an outlier
SPACING_OUTLIER_FACTOR = 2.0
#: a case with this many times more or fewer voxels than the median is an outlier
SIZE_OUTLIER_FACTOR = 8.0
#: per-case foreground means differing by more than this factor mean differently scaled intensities
INTENSITY_SCALE_FACTOR = 10.0
#: 2D: cases (evenly spaced) whose labels are resampled to measure the fidelity of coarser grids
FIDELITY_CASES = 100

#: folder names that say little about a dataset: its parent's name is prefixed
GENERIC_FOLDER_NAMES = frozenset({"training", "train", "test", "testing", "data", "images", "val", "validation"})

Progress = Callable[[int, int], None]


# --------------------------------------------------------------------------- one case (in a worker)


def _rng(key: str, seed: int) -> np.random.Generator:
    return np.random.default_rng([seed, zlib.crc32(key.encode("utf-8"))])


def _components(mask: np.ndarray, rng: np.random.Generator) -> tuple[int, list[int], list[int], list[list[int]]]:
    """``(count, sizes in voxels, extent of the largest, extents of the objects)`` of the connected components
    of a boolean mask (full connectivity: diagonal neighbours connect, so thin oblique structures such as
    vessels stay one component). Extents are bounding boxes, voxels per axis; *objects* are the components
    of at least :data:`MIN_OBJECT_VOXELS` voxels and 1 % of the largest, so specks left by lossy masks do not
    count as objects (at most :data:`MAX_COMPONENTS_PER_CASE` of them). Beyond that many components, the
    largest and a random sample of the others are kept."""
    box = bbox_of(mask)
    sub = mask[tuple(slice(a, b) for a, b in box)]
    labelled, n = ndimage.label(sub, structure=ndimage.generate_binary_structure(sub.ndim, sub.ndim))
    if n == 0:
        return 0, [], [], []
    sizes = np.bincount(labelled.ravel())[1:]
    top = int(np.argmax(sizes))
    boxes = ndimage.find_objects(labelled)
    del labelled
    extent = [sl.stop - sl.start for sl in boxes[top]]
    floor = max(MIN_OBJECT_VOXELS, 0.01 * sizes[top])
    objects = [i for i in np.flatnonzero(sizes >= floor).tolist()]
    if len(objects) > MAX_COMPONENTS_PER_CASE:
        objects = rng.choice(objects, MAX_COMPONENTS_PER_CASE, replace=False).tolist()
    extents = [[sl.stop - sl.start for sl in boxes[i]] for i in objects]
    if sizes.size > MAX_COMPONENTS_PER_CASE:
        rest = np.delete(sizes, top)
        sizes = np.concatenate([[sizes[top]], rng.choice(rest, MAX_COMPONENTS_PER_CASE - 1, replace=False)])
    return int(n), [int(s) for s in sizes], [int(e) for e in extent], extents


def describe_case(key: str, image: np.ndarray, label: np.ndarray, spacing: Sequence[float],
                  values: Sequence[int], seed: int = 0) -> dict[str, Any]:
    """What the fingerprint keeps of one case: ``image`` ``(C, *S)``, ``label`` ``(*S)`` (label values).

    ``values`` are the foreground label values to describe. Returns a record with the
    shape, cropped shape, spacing, per-class voxel counts and component sizes, per-channel
    foreground samples (numpy arrays, pooled later) and image range.
    """
    rng = _rng(key, seed)
    shape = list(image.shape[1:])
    nonzero = np.any(image != 0, axis=0)
    box = bbox_of(nonzero)
    cropped = [b - a for a, b in box]
    del nonzero
    fg = label > 0
    samples, fg_mean = [], []
    for c in range(image.shape[0]):
        vals = image[c][fg]
        if vals.size > SAMPLES_PER_CASE:
            vals = rng.choice(vals, SAMPLES_PER_CASE, replace=False)
        samples.append(vals.astype(np.float32))
        fg_mean.append(float(vals.mean()) if vals.size else None)
    classes = {}
    objects: list[list[int]] = []  # extents of every class's objects
    for v in values:
        mask = label == v
        n = int(np.count_nonzero(mask))
        count, sizes, extent, extents = _components(mask, rng) if n else (0, [], [], [])
        classes[str(v)] = {"voxels": n, "count": count, "components": sizes, "largest_extent": extent}
        objects += extents
        del mask
    lo = [float(image[c].min()) for c in range(image.shape[0])]
    hi = [float(image[c].max()) for c in range(image.shape[0])]
    return {
        "key": key, "shape": shape, "cropped_shape": cropped, "spacing": [float(s) for s in spacing],
        "channels": int(image.shape[0]), "dtype": str(image.dtype), "voxels": int(label.size),
        "foreground_voxels": int(fg.sum()), "classes": classes, "samples": samples, "fg_mean": fg_mean,
        "min": lo, "max": hi, "constant": [a == b for a, b in zip(lo, hi)],
        "object_extent": [float(x) for x in np.median(np.asarray(objects), axis=0)] if objects else None,
    }


def _case_3d(task: tuple) -> dict[str, Any]:
    from medseg.data.layouts import load_case

    case, values, seed = task
    try:
        image, label = load_case(case)
    except (DataError, OSError, ValueError, RuntimeError) as e:
        message = getattr(e, "message", str(e))
        return {"key": case.key, "error": message, "kind": "grid_mismatch" if "different grids" in message else "unreadable"}
    if label is None:
        return {"key": case.key, "error": "no label file"}
    found = [int(v) for v in label.meta.get("values", []) if int(v) != 0]
    rec = describe_case(case.key, image.array, label.array[0], image.geometry.spacing, sorted(set(values) | set(found)), seed)
    rec["values"] = found
    return rec


def _case_2d(task: tuple) -> dict[str, Any]:
    from medseg.data.labels import read_mask
    from medseg.data.preprocess2d import to_channels
    from medseg.io import read_image

    case, scheme, channels, seed, measure = task
    try:
        img = read_image(case.image)
        mask = read_mask(case.masks, scheme)
    except (DataError, OSError, ValueError) as e:
        return {"key": case.key, "error": getattr(e, "message", str(e)), "file": str(case.image)}
    size = img.spatial_shape
    if tuple(mask.shape) != tuple(size):
        return {"key": case.key, "kind": "shape_mismatch", "file": str(case.masks[0]),
                "error": f"mask is {mask.shape[1]}x{mask.shape[0]} but its image {case.image.name} is {size[1]}x{size[0]}"}
    array = to_channels(img.array, channels)
    values = list(range(1, scheme.num_classes))
    rec = describe_case(case.key, array, mask, (1.0, 1.0), values, seed)
    rec["values"] = [int(v) for v in np.unique(mask) if v != 0]
    rec["fidelity"] = roundtrip_fidelity(mask, values) if measure else None
    return rec


# --------------------------------------------------------------------------- running over the cases


def default_workers(n_tasks: int) -> int:
    """A small pool: at most 4 processes, one per 4 cases, never more than the CPU cores."""
    return max(1, min(4, os.cpu_count() or 1, math.ceil(n_tasks / 4)))


def _run(fn: Callable[[tuple], dict], tasks: list[tuple], workers: int, progress: Progress | None) -> list[dict]:
    total = len(tasks)
    if progress:
        progress(0, total)
    if workers <= 1 or total <= 1:
        out = []
        for i, t in enumerate(tasks):
            out.append(fn(t))
            if progress:
                progress(i + 1, total)
        return out
    method = "fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn"
    results: list[dict | None] = [None] * total
    with ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context(method)) as pool:
        futures = {pool.submit(fn, t): i for i, t in enumerate(tasks)}
        for done, fut in enumerate(as_completed(futures), start=1):
            results[futures[fut]] = fut.result()
            if progress:
                progress(done, total)
    return results  # type: ignore[return-value]


def _subset(items: list, max_cases: int | None) -> list:
    return [items[i] for i in evenly_spaced(len(items), max_cases or None)]


def compute_fingerprint(
    data: str | Path,
    *,
    data_options: Any = None,
    workers: int | None = None,
    progress: Progress | None = None,
    max_cases: int | None = None,
    seed: int = 0,
) -> dict[str, Any]:
    """The fingerprint of the dataset folder ``data`` (2D image folder or 3D dataset).

    ``data_options`` (a :class:`~medseg.data.dataset2d.DataOptions2D`) tells 2D discovery where
    things are; ``max_cases`` reads an evenly spaced subset; ``progress(done, total)`` is
    called as cases finish; ``workers`` processes read the cases (default: :func:`default_workers`).
    """
    from medseg.data.layouts import is_volume_dataset

    t0 = time.perf_counter()
    data = Path(data)
    if is_volume_dataset(data):
        from medseg.data.layouts import discover_volume_cases

        cases, ds = discover_volume_cases(data)
        used = _subset(cases, max_cases)
        labels = ds["labels"]
        values = sorted(v for v in labels if v != 0) if labels else []
        tasks = [(c, values, seed) for c in used]
        records = _run(_case_3d, tasks, workers or default_workers(len(tasks)), progress)
        names = ds.get("channel_names") or []
        modality = [str(n) for n in names] if ds["layout"] != "folders" and names else ["unknown"] * ds["num_channels"]
        info = {"dims": 3, "name": ds.get("name") or data.name, "layout": ds["layout"], "channels": ds["num_channels"],
                "modality": modality, "labels": {str(k): v for k, v in labels.items()} if labels else None}
        inputs = [p for c in cases for p in (*c.images, c.label) if p is not None]
    else:
        from medseg.data.dataset2d import DataOptions2D, prepare_dataset

        ds2 = prepare_dataset(data, data_options or DataOptions2D())
        cases = ds2.cases
        used = _subset(cases, max_cases)
        measured = {c.key for c in _subset(used, FIDELITY_CASES)}
        tasks = [(c, ds2.scheme, ds2.channels, seed, c.key in measured) for c in used]
        records = _run(_case_2d, tasks, workers or default_workers(len(tasks)), progress)
        name = data.resolve().name
        if name.lower() in GENERIC_FOLDER_NAMES:  # drive/training rather than "training"
            name = f"{data.resolve().parent.name}/{name}"
        info = {"dims": 2, "name": name, "layout": "folders2d", "channels": ds2.channels,
                "modality": ["rgb"] * 3 if ds2.channels == 3 else ["gray"],
                "labels": {str(i): n for i, n in enumerate(ds2.scheme.names)},
                "discovery": ds2.discovery.summary() if ds2.discovery else None, "label_scheme": ds2.scheme.to_json()}
        inputs = [p for c in cases for p in (c.image, *c.masks)]
    fp = aggregate(records, info, len(cases))
    fp["data"] = str(data.resolve())
    fp["data_hash"] = files_hash(inputs, {"what": "dataset files"})
    fp["elapsed_s"] = round(time.perf_counter() - t0, 2)
    return fp


# --------------------------------------------------------------------------- aggregation


def _axis_stats(rows: list[list[float]]) -> dict[str, list[float]] | None:
    if not rows:
        return None
    a = np.asarray(rows, dtype=np.float64)

    def r(x) -> list[float]:
        return [float(f"{v:.6g}") for v in x]

    return {"median": r(np.median(a, 0)), "min": r(a.min(0)), "max": r(a.max(0)),
            "p10": r(np.percentile(a, 10, axis=0)), "p90": r(np.percentile(a, 90, axis=0))}


def _size_stats(sizes: np.ndarray, sizes_mm3: np.ndarray) -> dict[str, Any]:
    if sizes.size == 0:
        return {"size_voxels": None, "size_mm3": None}

    def summary(x: np.ndarray) -> dict[str, float]:
        return {"median": float(f"{np.median(x):.6g}"), "min": float(f"{x.min():.6g}"),
                "p10": float(f"{np.percentile(x, 10):.6g}")}

    return {"size_voxels": summary(sizes), "size_mm3": summary(sizes_mm3)}


def aggregate(records: list[dict], info: dict, num_cases: int) -> dict[str, Any]:
    """Dataset-level statistics from per-case records (see :func:`describe_case`)."""
    ok = [r for r in records if "error" not in r]
    problems = [{"case": r["key"], "kind": r.get("kind", "unreadable"), "detail": r["error"]}
                for r in records if "error" in r]
    if not ok:
        detail = f" (first: {problems[0]['case']}: {problems[0]['detail']})" if problems else ""
        raise DataError(f"no case of the dataset could be read{detail}", hint="fix or remove the cases named above")
    channels = info["channels"]
    spacing = _axis_stats([r["spacing"] for r in ok])
    shape = _axis_stats([r["shape"] for r in ok])
    med_sp = np.asarray(spacing["median"])  # type: ignore[index]

    for r in ok:  # per-case problems
        if r["foreground_voxels"] == 0:
            problems.append({"case": r["key"], "kind": "empty_label", "detail": "the label holds background only"})
        for c, const in enumerate(r["constant"]):
            if const:
                problems.append({"case": r["key"], "kind": "constant_image", "detail": f"channel {c} has one value ({r['min'][c]:g})"})
        sp = np.asarray(r["spacing"])
        if np.any(~np.isfinite(sp)) or np.any(sp <= 0):
            problems.append({"case": r["key"], "kind": "odd_spacing", "detail": f"spacing {r['spacing']}"})
        elif np.any(np.maximum(sp / med_sp, med_sp / sp) > SPACING_OUTLIER_FACTOR):
            problems.append({"case": r["key"], "kind": "odd_spacing",
                             "detail": f"spacing {r['spacing']} vs median {spacing['median']}"})  # type: ignore[index]
        ratio = r["voxels"] / float(np.prod(shape["median"]))  # type: ignore[index]
        if ratio > SIZE_OUTLIER_FACTOR or ratio < 1 / SIZE_OUTLIER_FACTOR:
            problems.append({"case": r["key"], "kind": "odd_size", "detail": f"shape {r['shape']} vs median {shape['median']}"})  # type: ignore[index]
    dtypes = sorted({r["dtype"] for r in ok})
    for c in range(channels):
        means = np.asarray([r["fg_mean"][c] for r in ok if r["fg_mean"][c] is not None], dtype=np.float64)
        means = means[means > 0]
        if means.size > 1 and means.max() / means.min() > INTENSITY_SCALE_FACTOR:
            problems.append({"case": None, "kind": "intensity_scale",
                             "detail": f"channel {c}: the foreground mean ranges from {means.min():.4g} to {means.max():.4g} "
                                       f"between cases (pixel types {', '.join(dtypes)}): normalise per case"})

    intensity = []
    for c in range(channels):
        pooled = [r["samples"][c] for r in ok if c < len(r["samples"]) and r["samples"][c].size]
        intensity.append(intensity_stats(np.concatenate(pooled)) if pooled else None)
    lo = min(min(r["min"]) for r in ok)
    hi = max(max(r["max"]) for r in ok)
    looks_like_ct = bool(info["dims"] == 3 and lo <= -500 and hi >= 0)  # air (-1000 HU) and tissue (0 HU and up)

    labels = info.get("labels") or {}
    values = sorted({int(v) for r in ok for v in r["classes"]} | {int(v) for v in labels if int(v) != 0})
    total = float(sum(r["voxels"] for r in ok))
    classes = []
    for v in values:
        per = [(r["classes"][str(v)], float(np.prod(r["spacing"]))) for r in ok if str(v) in r["classes"]]
        vox = sum(p["voxels"] for p, _ in per)
        present = [(p, mm3) for p, mm3 in per if p["voxels"] and p["components"]]
        sizes = np.asarray([s for p, _ in present for s in p["components"]], dtype=np.float64)
        sizes_mm3 = np.asarray([s * mm3 for p, mm3 in present for s in p["components"]], dtype=np.float64)
        largest = np.asarray([max(p["components"]) for p, _ in present], dtype=np.float64)
        largest_mm3 = np.asarray([max(p["components"]) * mm3 for p, mm3 in present], dtype=np.float64)
        components = {"count_median": float(np.median([p["count"] for p, _ in present])) if present else 0.0,
                      **_size_stats(sizes, sizes_mm3),
                      "largest_voxels_median": float(np.median(largest)) if largest.size else None,
                      "largest_mm3_median": float(f"{np.median(largest_mm3):.6g}") if largest.size else None}
        classes.append({
            "value": v, "name": labels.get(str(v), f"label_{v}"),
            "voxel_fraction": vox / total if total else 0.0,
            "cases_present": len([p for p, _ in per if p["voxels"]]),
            "components": components,
            "tiny": bool(largest.size and np.median(largest) < TINY_COMPONENT_VOXELS),
        })
    for cl in classes:
        if cl["cases_present"] == 0:
            problems.append({"case": None, "kind": "missing_class", "detail": f"class {cl['value']} ({cl['name']}) is in no label"})

    crop = [float(np.prod(r["cropped_shape"]) / max(1, np.prod(r["shape"]))) for r in ok]
    return {
        "fingerprint_version": FINGERPRINT_VERSION,
        **{k: info[k] for k in ("name", "layout", "dims", "channels", "modality", "labels")},
        "num_cases": num_cases,
        "cases_used": len(ok),
        "dtypes": dtypes,
        "looks_like_ct": looks_like_ct,
        "shape": shape,
        "cropped_shape": _axis_stats([r["cropped_shape"] for r in ok]),
        "crop_fraction": float(np.median(crop)),
        "spacing": spacing,
        "anisotropy": float(med_sp.max() / med_sp.min()),
        "intensity": intensity,
        "classes": classes,
        "problems": problems,
        "cases": [{"key": r["key"], "shape": r["shape"], "cropped_shape": r["cropped_shape"], "spacing": r["spacing"],
                   "object_extent": r.get("object_extent"), **({"fidelity": r["fidelity"]} if r.get("fidelity") else {})}
                  for r in ok],
        **({"resolution": _resolution_summary(ok)} if info["dims"] == 2 else {}),
        **{k: info[k] for k in ("discovery", "label_scheme") if info.get(k)},
    }


def _resolution_summary(records: list[dict]) -> dict[str, Any]:
    """2D: how coarse a grid the labels survive (median and 10th percentile over the measured cases of
    the lowest class Dice after a round trip, per scale) and how large the objects are, in pixels and
    as a share of their image's size (see :mod:`medseg.planning.resolution`)."""
    curves = np.asarray([[np.nan if f is None else f for f in r["fidelity"]] for r in records if r.get("fidelity")],
                        dtype=np.float64)
    extents = [(r.get("object_extent"), r["shape"]) for r in records]
    extents = [(e, sh) for e, sh in extents if e]
    out: dict[str, Any] = {"scales": [round(x, 4) for x in SCALES], "cases_measured": int(len(curves))}
    if len(curves) and not np.all(np.isnan(curves)):
        out["fidelity_median"] = [round(float(x), 4) for x in np.nanmedian(curves, axis=0)]
        out["fidelity_p10"] = [round(float(x), 4) for x in np.nanpercentile(curves, 10, axis=0)]
    if extents:
        out["object_extent"] = _axis_stats([e for e, _ in extents])
        out["relative_extent"] = _axis_stats([[a / b for a, b in zip(e, sh)] for e, sh in extents])
    return out
