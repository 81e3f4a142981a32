"""The intensity normalisation scheme per channel, from the fingerprint.

- **CT** (``dataset.json`` modality ``CT``, or no modality and integer intensities spanning
  Hounsfield units): ``ct``: clip to the training foreground's 0.5–99.5 percentiles, then a
  global z-score with the foreground's mean and std (computed from the training cases when
  ``stats`` is left ``null`` in the plan).
- **MRI and other volumes, grayscale images:** ``zscore`` per case (per image).
- **RGB images:** ``rgb``: scaled to 0..1 by the pixel type's range.

Cropping to the non-zero box is decided here as well (3D: always, as nnU-Net does; the
fingerprint says how much it saves).
"""

from __future__ import annotations

from typing import Any

NORMALIZATIONS_3D = ("zscore", "ct", "minmax", "none")
NORMALIZATIONS_2D = ("zscore", "minmax", "none", "rgb")


def _is_ct(name: str) -> bool:
    return name.strip().upper() in ("CT", "CECT", "NCCT", "CT_SCAN") or name.strip().upper().startswith("CT ")


def plan_normalization(fp: dict[str, Any]) -> tuple[list[str], list[dict] | None, str]:
    """``(scheme per channel, stats or None, reason)``."""
    if fp["dims"] == 2:
        if fp["channels"] == 3:
            return ["rgb"] * 3, None, "RGB images: scaled to 0..1 by the pixel range"
        return ["zscore"], None, "grayscale images: z-score per image"
    schemes, reasons = [], []
    for c, name in enumerate(fp["modality"]):
        st = (fp.get("intensity") or [None] * (c + 1))[c]
        clip = f" (dataset foreground {st['p005']:.4g}..{st['p995']:.4g}, mean {st['mean']:.4g}, std {st['std']:.4g})" if st else ""
        if _is_ct(name):
            schemes.append("ct")
            reasons.append(f"channel {c} is CT: clip to the training foreground's 0.5-99.5 percentiles, then its mean/std{clip}")
        elif name == "unknown" and fp.get("looks_like_ct"):
            schemes.append("ct")
            reasons.append(f"channel {c}: no modality declared, but integer intensities span Hounsfield units: "
                           f"CT normalisation{clip}")
        else:
            schemes.append("zscore")
            what = "MRI" if "MR" in name.upper() or name.upper() in ("T1", "T2", "FLAIR", "T1W", "T2W", "ADC", "DWI") else f"'{name}'"
            reasons.append(f"channel {c} is {what}: z-score per case")
    return schemes, None, "; ".join(reasons)


def plan_crop(fp: dict[str, Any]) -> tuple[bool, str]:
    """``(crop to the non-zero box, reason)``."""
    if fp["dims"] == 2:
        return False, "the 2D pipeline trains on whole images and patches of them, without cropping"
    keep = fp.get("crop_fraction", 1.0)
    return True, (f"cropping to the non-zero box keeps a median {keep:.0%} of the voxels"
                  + ("; it costs nothing where there is no zero border" if keep > 0.99 else ""))
