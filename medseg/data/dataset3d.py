"""Preparing a 3D dataset for training: split, target spacing, intensity statistics,
label classes, and the preprocessed cases in a disk cache.

The cases come from :func:`medseg.data.layouts.discover_volume_cases`; each is read
with :func:`~medseg.data.layouts.load_case`, run through a
:class:`~medseg.data.preprocess3d.Preprocess3D` and stored in a
:class:`~medseg.data.cache.PreprocessedCache`, from which training reads
memory-mapped arrays.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from medseg.data.cache import CachedCase, PreprocessedCache, fingerprint
from medseg.data.labels import LabelScheme
from medseg.data.volume_case import VolumeCase, load_case
from medseg.data.preprocess3d import Preprocess3D, intensity_stats
from medseg.errors import DataError
from medseg.io.atomic import write_json
from medseg.io.volume import read_volume_header

log = logging.getLogger(__name__)

#: foreground voxels sampled per case and channel for ``ct`` statistics (as nnU-Net)
STATS_SAMPLES_PER_CASE = 10000


# --------------------------------------------------------------------------- dataset properties


def case_spacing(case: VolumeCase) -> tuple[float, float, float]:
    """Voxel spacing of a case's first image, from the file header (a DICOM folder is read)."""
    p = case.images[0]
    if p.is_dir():
        from medseg.io.dicom import read_dicom_series

        return tuple(read_dicom_series(p).geometry.spacing[:3])  # type: ignore[return-value]
    return tuple(read_volume_header(p)[1].spacing)  # type: ignore[return-value]


def median_spacing(cases: Sequence[VolumeCase]) -> tuple[float, float, float]:
    """Per-axis median spacing of ``cases`` (the default network grid, as nnU-Net's ``3d_fullres``)."""
    spacings = np.array([case_spacing(c) for c in cases], dtype=np.float64)
    # 6 significant digits: NIfTI stores float32 (1.2 reads as 1.2000000476837158)
    return tuple(float(f"{v:.6g}") for v in np.median(spacings, axis=0))  # type: ignore[return-value]


def foreground_stats(cases: Sequence[VolumeCase], cache_dir: Path | None = None, seed: int = 0) -> list[dict]:
    """Per-channel intensity statistics of label > 0 voxels of ``cases`` (for ``ct`` normalization).

    Up to :data:`STATS_SAMPLES_PER_CASE` voxels per case are sampled. The result is
    kept in ``cache_dir/intensity_stats.json``, reused while the cases are unchanged.
    """
    config = {"what": "foreground_stats", "samples": STATS_SAMPLES_PER_CASE, "seed": seed}
    inputs = [p for c in cases for p in (*c.images, c.label) if p is not None]
    fp = fingerprint(inputs, config)
    stored = cache_dir / "intensity_stats.json" if cache_dir is not None else None
    if stored is not None and stored.is_file():
        try:
            record = json.loads(stored.read_text())
            if record.get("fingerprint") == fp:
                return record["stats"]
        except (OSError, ValueError, KeyError):
            pass
    rng = np.random.default_rng(seed)
    samples: list[list[np.ndarray]] = []
    for case in cases:
        image, label = load_case(case)
        fg = label.array[0] > 0 if label is not None else np.ones(image.spatial_shape, bool)
        if not samples:
            samples = [[] for _ in range(image.array.shape[0])]
        for c in range(image.array.shape[0]):
            vals = image.array[c][fg]
            if vals.size > STATS_SAMPLES_PER_CASE:
                vals = rng.choice(vals, STATS_SAMPLES_PER_CASE, replace=False)
            samples[c].append(vals.astype(np.float64))
    try:
        stats = [intensity_stats(np.concatenate(ch)) for ch in samples]
    except ValueError:
        raise DataError("no foreground voxels in the training labels to compute CT statistics from",
                        hint="use --normalization zscore") from None
    if stored is not None:
        write_json(stored, {"fingerprint": fp, "stats": stats})
    return stats


def label_scheme(declared: dict[int, str] | None, cached: Sequence[CachedCase]) -> LabelScheme:
    """The classes: the values ``dataset.json`` declares, else those found in the labels (0 always).

    Class ``i`` is label value ``scheme.codes[i]``.
    """
    if declared:
        values = sorted(declared)
        names = [declared[v] for v in values]
    else:
        values = sorted({0, *(v for c in cached for v in c.meta.get("values", []))})
        names = ["background" if v == 0 else f"label_{v}" for v in values]
    if len(values) < 2:
        raise DataError("the labels hold a single class; segmentation needs background and at least one class")
    if values[0] != 0:
        raise DataError(f"the label values {values} do not include 0 (background)",
                        hint='declare the background as "0" in dataset.json "labels"')
    return LabelScheme("index", values, names)


def class_ids(label: np.ndarray, scheme: LabelScheme) -> np.ndarray:
    """Label values → class ids ``0..K-1`` (a view when the values already are ``0..K-1``)."""
    if scheme.codes == list(range(scheme.num_classes)):
        return label
    lut = np.zeros(max(scheme.codes) + 1, dtype=np.uint8)
    lut[scheme.codes] = np.arange(scheme.num_classes, dtype=np.uint8)
    return lut[np.asarray(label)]


# --------------------------------------------------------------------------- preprocessing


def preprocess_cases(
    cases: Sequence[VolumeCase],
    pre: Preprocess3D,
    cache: PreprocessedCache,
    label_values: Sequence[int] | None = None,
) -> list[CachedCase]:
    """Preprocess ``cases`` into ``cache`` (only those missing or out of date) and return them memory-mapped.

    Labels keep their values (``label_values``, when given, are the allowed ones);
    ``meta`` records the original spacing and shape, the crop box and the label values present.
    """
    config = {"preprocess": pre.to_json(), "label_values": list(label_values) if label_values else None}
    t0, made = time.perf_counter(), 0

    def make(case: VolumeCase):
        nonlocal made
        image, label = load_case(case, labels=tuple(label_values) if label_values else None)
        if label is None:
            raise DataError(f"case '{case.key}' has no label", path=case.images[0])
        x, y, ctx = pre.case(image.array, label.array, image.geometry.spacing)
        made += 1
        log.debug("%s: %s -> %s", case.key, image.spatial_shape, x.shape[1:])
        meta = {**ctx, "shape": list(x.shape[1:]), "values": label.meta.get("values", []),
                "geometry": image.geometry.to_json()}
        return x, y, meta

    out = []
    empty = []
    for case in cases:
        inputs = [*case.images, *([case.label] if case.label else [])]
        out.append(cache.get_or_make(case.key, inputs, config, lambda c=case: make(c)))
        if not any(v != 0 for v in out[-1].meta.get("values", [0])):
            empty.append(case.key)
    if empty:  # allowed (e.g. healthy controls), but worth knowing
        log.warning("%d case(s) with an empty label (background only): %s", len(empty),
                    ", ".join(empty[:10]) + (" ..." if len(empty) > 10 else ""))
    log.info("%d case(s) preprocessed in %.0f s (%d from the cache in %s)", len(out), time.perf_counter() - t0,
             len(out) - made, cache.folder)
    return out

