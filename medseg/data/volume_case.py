"""One 3D case: its channel files and label, and reading them (:func:`load_case`), checked to lie on one grid."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from medseg.errors import DataError
from medseg.io.base import Geometry, ImageData, file_suffix
from medseg.io.volume import check_finite, read_volume, read_volume_header

logger = logging.getLogger(__name__)

GRID_TOLERANCE = 1e-3


@dataclass(frozen=True)
class VolumeCase:
    """One case: its image file(s) (one per channel, or one DICOM folder per channel) and label.

    ``label_values`` are the label values the dataset declares (``None``: not
    declared); ``num_channels`` the channel count the dataset declares (a single
    4D image file then holds the channels in its 4th axis).
    """

    key: str
    images: tuple[Path, ...]
    label: Path | None = None
    label_values: tuple[int, ...] | None = None
    num_channels: int | None = None


def grid_differences(
    shape_a: tuple[int, ...],
    geom_a: Geometry,
    shape_b: tuple[int, ...],
    geom_b: Geometry,
    tol: float = GRID_TOLERANCE,
) -> list[str]:
    """What differs between two grids (empty when they match within ``tol``).

    Size must match exactly; spacing and origin within ``tol`` relative (origin:
    relative to ``max(1, |a|, |b|)`` mm); direction cosines within ``tol``.
    """

    def fmt(t) -> str:
        return "(" + ", ".join(f"{v:.6g}" for v in t) + ")"

    diffs = []
    if tuple(shape_a) != tuple(shape_b):
        diffs.append(f"size {'x'.join(map(str, shape_a))} vs {'x'.join(map(str, shape_b))}")
        if len(shape_a) != len(shape_b):
            return diffs
    sa, sb = np.asarray(geom_a.spacing, float), np.asarray(geom_b.spacing, float)
    if sa.shape != sb.shape or np.any(np.abs(sa - sb) > tol * np.maximum(np.abs(sa), np.abs(sb))):
        diffs.append(f"spacing {fmt(sa)} vs {fmt(sb)}")
    oa, ob = np.asarray(geom_a.origin, float), np.asarray(geom_b.origin, float)
    if oa.shape != ob.shape or np.any(np.abs(oa - ob) > tol * np.maximum(1.0, np.maximum(np.abs(oa), np.abs(ob)))):
        diffs.append(f"origin {fmt(oa)} vs {fmt(ob)}")
    da, db = np.asarray(geom_a.direction, float), np.asarray(geom_b.direction, float)
    if da.shape != db.shape or np.any(np.abs(da - db) > tol):
        diffs.append(f"direction {fmt(da)} vs {fmt(db)}")
    return diffs


def label_values_present(arr: np.ndarray) -> np.ndarray:
    """Sorted distinct values of an integer array (fast path for small non-negative ranges)."""
    if arr.size == 0:
        return np.zeros(0, dtype=np.int64)
    if arr.dtype.kind in "ui":
        lo, hi = int(arr.min()), int(arr.max())
        if lo >= 0 and hi < (1 << 16):
            return np.flatnonzero(np.bincount(arr.ravel(), minlength=hi + 1))
    return np.unique(arr)


def _read_channel(path: Path, key: str, fourth_dim_as_channels: bool) -> ImageData:
    image = read_volume(path, 3, fourth_dim_as_channels=fourth_dim_as_channels)
    check_finite(image, key)
    return image


def load_case(case: VolumeCase, *, labels: dict[int, str] | tuple[int, ...] | None = None) -> tuple[ImageData, ImageData | None]:
    """Read a case: channels stacked ``(C, x, y, z)``, and the label ``(1, x, y, z)`` (uint8).

    Checks: every channel and the label lie on the same grid (see
    :func:`grid_differences`); no NaN/inf voxels; label values are integers and
    among ``labels`` (default: the values the dataset declares; ``None`` declared
    means any value >= 0). Float labels with integral values are accepted. The
    image keeps its file dtype (mixed channel dtypes are promoted).
    """
    if not case.images:
        raise DataError(f"case '{case.key}' has no image files")
    single_4d = len(case.images) == 1 and (case.num_channels or 1) > 1
    parts = [_read_channel(p, case.key, single_4d) for p in case.images]
    ref = parts[0]
    for p, part in zip(case.images[1:], parts[1:]):
        diffs = grid_differences(ref.spatial_shape, ref.geometry, part.spatial_shape, part.geometry)
        if diffs:
            raise DataError(
                f"case '{case.key}': channel files {case.images[0].name} and {p.name} are on different grids: "
                + "; ".join(diffs),
                path=p,
                hint="resample the channels onto one grid (co-register them) before training",
            )
    array = parts[0].array if len(parts) == 1 else np.concatenate([x.array for x in parts], axis=0)
    if case.num_channels is not None and array.shape[0] != case.num_channels:
        raise DataError(
            f"case '{case.key}' has {array.shape[0]} channel(s), the dataset declares {case.num_channels}",
            path=case.images[0],
        )
    image = ImageData(
        array,
        ref.geometry,
        path=case.images[0],
        meta={"case": case.key, "files": [str(p) for p in case.images], "dtype": str(array.dtype)},
    )
    if case.label is None:
        return image, None

    if case.label.suffix.lower() == ".dcm" or not file_suffix(case.label):
        from medseg.io.dicom_seg_read import is_seg_file, read_seg_label

        lab = read_seg_label(case.label, image) if is_seg_file(case.label) else read_volume(case.label, 3)
    else:
        lab = read_volume(case.label, 3)
    if lab.array.shape[0] != 1:
        raise DataError(f"case '{case.key}': a label map must have one channel, got {lab.array.shape[0]}", path=case.label)
    diffs = grid_differences(image.spatial_shape, image.geometry, lab.spatial_shape, lab.geometry)
    if diffs:
        raise DataError(
            f"case '{case.key}': label and image are on different grids: " + "; ".join(diffs),
            path=case.label,
            hint="the label must be drawn on the image's own grid (same size, spacing, origin, direction)",
        )
    arr = lab.array
    if arr.dtype.kind == "f":
        check_finite(lab, case.key)
        if not np.array_equal(arr, np.round(arr)):
            frac = arr[arr != np.round(arr)]
            examples = ", ".join(f"{v:g}" for v in np.unique(frac)[:5])
            raise DataError(
                f"case '{case.key}': label has non-integer values ({examples}, ...)",
                path=case.label,
                hint="a label map holds integer class values; was an image saved as label, or the label interpolated?",
            )
        lo, hi = float(arr.min()), float(arr.max())
        arr = arr.astype(np.uint8 if lo >= 0 and hi <= 255 else np.uint16 if lo >= 0 and hi <= 65535 else np.int64)
    elif arr.dtype.kind not in "ui":
        raise DataError(f"case '{case.key}': label dtype {arr.dtype} is not numeric", path=case.label)
    present = label_values_present(arr)
    allowed = case.label_values if labels is None else tuple(labels)
    if allowed is not None:
        unexpected = sorted(set(present.tolist()) - set(int(v) for v in allowed))
        if unexpected:
            shown = ", ".join(map(str, unexpected[:10])) + (" ..." if len(unexpected) > 10 else "")
            raise DataError(
                f"case '{case.key}': label has values not declared in the dataset labels: {shown} "
                f"(declared: {', '.join(map(str, sorted(allowed)))})",
                path=case.label,
                hint="fix the label map, or declare the values in dataset.json \"labels\"",
            )
    elif present.size and present[0] < 0:
        raise DataError(f"case '{case.key}': label has negative values ({int(present[0])})", path=case.label)
    if present.size and present[-1] > 65535:
        raise DataError(f"case '{case.key}': label value {int(present[-1])} is too large (max 65535)", path=case.label)
    out_dtype = np.uint8 if (not present.size or present[-1] <= 255) else np.uint16
    label = ImageData(
        arr.astype(out_dtype, copy=False),
        lab.geometry,
        path=case.label,
        meta={"case": case.key, "values": present.tolist()},
    )
    return image, label


def check_label_grid(case: VolumeCase) -> None:
    """Refuse a case whose label is not on its image's grid, reading the headers only (the whole case when a
    header cannot be read, so that its own error is reported). Training checks every case so, the test cases
    included, before it starts."""
    if case.label is None or not case.images or case.images[0].is_dir() or case.label.is_dir():
        return
    try:
        shape, geom = read_volume_header(case.images[0])
        lab_shape, lab_geom = read_volume_header(case.label)
    except (RuntimeError, ValueError):  # a header ITK reads but medseg's Geometry cannot hold: the full read says why
        load_case(case)
        return
    diffs = grid_differences(shape, geom, lab_shape, lab_geom)
    if diffs:
        raise DataError(f"case '{case.key}': label and image are on different grids: " + "; ".join(diffs), path=case.label,
                        hint="the label must be drawn on the image's own grid (same size, spacing, origin, direction)")
