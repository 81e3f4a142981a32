"""Dataset-level statistics of a fingerprint from its per-case records (:mod:`medseg.planning.fingerprint`)."""

from __future__ import annotations

from typing import Any

import numpy as np

from medseg.data.preprocess3d import intensity_stats
from medseg.errors import DataError
from medseg.planning.resolution import SCALES

FINGERPRINT_VERSION = 1
#: a class whose largest connected component is typically smaller than this (in voxels) is "tiny"
TINY_COMPONENT_VOXELS = 64
#: a case whose spacing differs from the median by more than this factor on an axis is an outlier
SPACING_OUTLIER_FACTOR = 2.0
#: a case with this many times more or fewer voxels than the median is an outlier
SIZE_OUTLIER_FACTOR = 8.0
#: per-case foreground means differing by more than this factor mean differently scaled intensities
INTENSITY_SCALE_FACTOR = 10.0


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
