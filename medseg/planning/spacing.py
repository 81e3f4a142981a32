"""The target spacing of the network grid (3D), from the fingerprint.

- **Default:** the per-axis median spacing of the cases.
- **Anisotropic data** (nnU-Net's rule): when the coarsest median axis is over
  :data:`ANISOTROPY_THRESHOLD` times the finest and the cases also have over that factor
  fewer voxels along it, that axis gets the 10th percentile of its spacings (but not finer
  than the other axes), so thick-slice cases are not interpolated into many thin slices
  and thin-slice cases keep most of their resolution.
- **Tiny structures:** when a class's typical (per case largest) connected component would shrink below
  :data:`MIN_COMPONENT_VOXELS` voxels at that spacing while finer cases exist, each axis
  takes the 10th percentile of its spacings instead, so the structure is not resampled away.

2D images carry no physical spacing: they are used on their pixel grid.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from medseg.data.resample import ANISOTROPY_THRESHOLD

#: a class's typical component should keep at least this many voxels at the target spacing
MIN_COMPONENT_VOXELS = 64


def _fmt(values) -> str:
    return " x ".join(f"{v:.3g}" for v in values)


def plan_target_spacing(fp: dict[str, Any]) -> tuple[list[float] | None, str]:
    """``(target spacing in mm, array axis order, or None for 2D; reason)``."""
    if fp["dims"] == 2:
        return None, "2D images carry no physical spacing: they are used on their own pixel grid"
    spacings = np.asarray([c["spacing"] for c in fp["cases"]], dtype=np.float64)
    shapes = np.asarray([c["cropped_shape"] for c in fp["cases"]], dtype=np.float64)
    median = np.median(spacings, axis=0)
    p10 = np.percentile(spacings, 10, axis=0)
    target = median.copy()
    reasons = [f"median spacing of {len(spacings)} cases ({_fmt(median)} mm)"]

    worst = int(np.argmax(target))
    others = [a for a in range(len(target)) if a != worst]
    median_shape = np.median(shapes * spacings / target, axis=0)
    ratio = target[worst] / target[others].min()
    if ratio > ANISOTROPY_THRESHOLD and median_shape[worst] * ANISOTROPY_THRESHOLD < median_shape[others].min():
        lowres = max(float(p10[worst]), float(target[others].max()))
        reasons.append(f"anisotropic (axis {worst} is {ratio:.1f}x coarser, > {ANISOTROPY_THRESHOLD:g}, with "
                       f"{median_shape[worst]:.0f} vs {median_shape[others].min():.0f} voxels): axis {worst} takes the "
                       f"10th percentile of its spacings, {lowres:.3g} mm, as nnU-Net does")
        target[worst] = lowres
    elif ratio > ANISOTROPY_THRESHOLD:
        reasons.append(f"axis {worst} is {ratio:.1f}x coarser, but not short in voxels: kept at the median")
    else:
        reasons.append(f"near-isotropic (max/min {ratio:.2f} <= {ANISOTROPY_THRESHOLD:g})")

    tiny = []
    for cl in fp["classes"]:
        mm3 = cl["components"].get("largest_mm3_median")
        if mm3 is None:
            continue
        at_target = mm3 / float(np.prod(target))
        if at_target < MIN_COMPONENT_VOXELS:
            tiny.append((cl["name"], mm3, at_target))
    if tiny:
        name, mm3, vox = min(tiny, key=lambda t: t[2])
        finer = np.minimum(target, p10)
        if np.any(finer < target * 0.99):
            reasons.append(f"class '{name}' is tiny (typical component {mm3:.3g} mm³, {vox:.0f} voxels at that spacing): "
                           f"each axis takes the 10th percentile of its spacings, {_fmt(finer)} mm, so it is not resampled away")
            target = finer
        else:
            reasons.append(f"class '{name}' is tiny (typical component {mm3:.3g} mm³, {vox:.0f} voxels); no case is finer, "
                           f"so the spacing is not made coarser than the data's")
    return [float(f"{v:.6g}") for v in target], "; ".join(reasons)
