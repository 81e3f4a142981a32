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
  ``tiny`` when that typical largest component has fewer than :data:`~medseg.planning.fingerprint_summary.TINY_COMPONENT_VOXELS`
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
from medseg.data.preprocess3d import bbox_of
from medseg.data.split import evenly_spaced
from medseg.errors import DataError
from medseg.planning.fingerprint_summary import aggregate
from medseg.planning.resolution import roundtrip_fidelity

log = logging.getLogger(__name__)

#: foreground voxels sampled per case and channel for the pooled intensity statistics (as nnU-Net)
SAMPLES_PER_CASE = 10000
#: component sizes kept per case and class (a random subset beyond)
MAX_COMPONENTS_PER_CASE = 2000
#: a component smaller than this is a speck, not an object (see :func:`_components`)
MIN_OBJECT_VOXELS = 16
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
    from medseg.data.volume_case import load_case

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
    from medseg.data.mask_reading import read_mask
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
    from medseg.data.dataset_kind import is_volume_dataset

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


