"""How coarse a grid the labels survive: the measurement behind a 2D working resolution.

:func:`roundtrip_fidelity` resamples a label map to a coarser grid the way training and prediction
would (area fractions per class, then back up by linear interpolation and argmax, as an ideal
network's probabilities would be) and scores the result against the original with Dice, per
foreground class. The lowest class score at a scale says what the coarser grid costs at best:
thin vessels fall apart at half resolution, a polyp keeps 0.99 at a quarter.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from medseg.data.preprocess2d import area_fractions

#: candidate resampling factors of the working resolution (1 = the image's own pixels)
SCALES = (1.0, 2 / 3, 1 / 2, 1 / 3, 1 / 4, 1 / 6, 1 / 8)


def roundtrip_fidelity(label: np.ndarray, values: Sequence[int], scales: Sequence[float] = SCALES) -> list[float | None]:
    """Per scale: the lowest Dice, over the foreground ``values`` present, of ``label`` (2D) after a
    round trip to that scale and back; ``None`` where no foreground value is present."""
    present = [v for v in values if np.any(label == v)]
    if not present:
        return [None] * len(scales)
    h, w = label.shape
    t = torch.from_numpy(np.asarray(label).astype(np.int64))
    codes = torch.tensor([0, *present])
    index = torch.zeros_like(t)
    for i, v in enumerate(present, start=1):
        index[t == v] = i
    out: list[float | None] = []
    for s in scales:
        size = (max(1, round(h * s)), max(1, round(w * s)))
        if size == (h, w):
            out.append(1.0)
            continue
        low = area_fractions(index, len(codes), size)
        back = F.interpolate(low[None], size=(h, w), mode="bilinear", align_corners=False).argmax(1)[0]
        dices = []
        for i in range(1, len(codes)):
            a, b = index == i, back == i
            dices.append(2 * float((a & b).sum()) / max(1.0, float(a.sum() + b.sum())))
        out.append(round(min(dices), 4))
    return out


def fidelity_at(curve: Sequence[float | None], factor: float, scales: Sequence[float] = SCALES) -> float | None:
    """A case's fidelity at any ``factor``, interpolated (in log scale) between the measured ``scales``."""
    points = [(np.log(s), f) for s, f in zip(scales, curve) if f is not None]
    if not points:
        return None
    xs, ys = zip(*sorted(points))
    return float(np.interp(np.log(min(1.0, factor)), xs, ys))


# --------------------------------------------------------------------------- the plan's decision

#: a grid is fine enough when 90 % of the cases keep at least this Dice after a round trip to it
FIDELITY = 0.98
#: a patch side should hold the median object's extent this many times (the object with context)
CONTEXT = 2.0
#: image sizes that vary more than this (p90/p10 of the long side) may be fitted per image
SIZE_SPREAD = 1.25


def _spread(values: Sequence[float]) -> float:
    v = np.asarray(values, dtype=np.float64)
    v = v[v > 0]
    return float(np.percentile(v, 90) / np.percentile(v, 10)) if v.size >= 2 else 1.0


def plan_resolution(fp: dict, patch_side: int) -> dict:
    """The 2D working resolution: ``{"scale", "long_side", "reason"}`` (both ``None``: the images' own pixels).

    Rules, in order (see :func:`roundtrip_fidelity` for the measurement):

    1. the coarsest grid the labels survive: 90 % of the cases keep a Dice of :data:`FIDELITY`
       after a round trip to it (thin vessels: full resolution);
    2. the finest grid at which the median object, with context, fits a ``patch_side`` patch
       (:data:`CONTEXT` times its extent); never finer than the images' own pixels;
    3. the resolution is the grid of rule 2, unless rule 1 forbids it (then rule 1's);
    4. one factor for every image, or, where image sizes vary and the objects scale with the
       frame (their size relative to the image varies less than in pixels), each image resampled
       to a common long side.
    """
    res = fp.get("resolution") or {}
    scales, fid = res.get("scales") or list(SCALES), res.get("fidelity_p10")
    cases = [c for c in fp.get("cases", []) if c.get("object_extent")]
    if not cases or not fid:
        return {"scale": None, "long_side": None, "reason": "no foreground objects measured: the images' own pixels"}
    coarsest = min(s for s, f in zip(scales, fid) if f is not None and f >= FIDELITY or s == 1.0)
    absolute = [max(c["object_extent"]) for c in cases]
    relative = [max(e / s for e, s in zip(c["object_extent"], c["shape"])) for c in cases]
    long_sides = [max(c["shape"]) for c in cases]
    per_image = _spread(long_sides) > SIZE_SPREAD and _spread(relative) < _spread(absolute)
    obj = float(np.median(relative) * np.median(long_sides) if per_image else np.median(absolute))
    fit = min(1.0, patch_side / (CONTEXT * obj))
    survive = (f"the labels keep Dice >= {FIDELITY} on 90% of the cases down to a scale of {coarsest:.3g} "
               f"(round trip, measured on {res.get('cases_measured', 0)} cases)")
    if fit >= 1.0:
        scale, why = 1.0, (f"the images' own pixels: the median object ({obj:.0f} px), with context ({CONTEXT:g}x), fits a "
                           f"{patch_side} px patch; {survive}")
    elif fit >= coarsest:
        scale, why = fit, (f"scale {fit:.3g}: the median object ({obj:.0f} px) with context ({CONTEXT:g}x) fills a {patch_side} px "
                           f"patch; {survive}, so the coarser grid keeps the labels")
    elif coarsest == 1.0:
        scale, why = 1.0, (f"thin or small structures keep full resolution: {survive}, so no coarser grid is used although "
                           f"the median object ({obj:.0f} px) with context is larger than a {patch_side} px patch")
    else:
        scale, why = coarsest, (f"scale {coarsest:.3g}: {survive}; a coarser grid would lose thin or small structures, so the "
                                f"median object ({obj:.0f} px) with context stays larger than a {patch_side} px patch")
    if scale >= 1.0:
        return {"scale": None, "long_side": None, "reason": why}
    if per_image:
        side = max(8, int(round(float(np.median(long_sides)) * scale)))
        return {"scale": None, "long_side": side, "reason": (
            f"{why}; image sizes vary (long side p90/p10 {_spread(long_sides):.2f}) and the objects scale with the frame "
            f"(spread {_spread(relative):.2f} relative against {_spread(absolute):.2f} in pixels), so each image is resampled "
            f"to a long side of {side} px")}
    return {"scale": round(scale, 4), "long_side": None, "reason": f"{why}; every image resampled by {scale:.3g}"}
