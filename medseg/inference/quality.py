"""Automatic quality control of a prediction: a predicted-quality score and a "check this case" flag.

Every prediction gets :class:`QualityFeatures`, measured from the raw image and the network's
(uncalibrated) probabilities on its working grid, and a run that has ``RUN/quality.json``
(:class:`QualityModel`, fitted on its validation cases by :mod:`medseg.evaluation.quality_fit`)
turns them into a :class:`QualityAssessment`:

- **Score** (one transparent measure, no learned classifier): the *uncertain share* of the worst
  class, ``max_c U_c / (U_c + P_c)`` with ``U_c = #{v : 0.05 < p_c(v) < 0.95}`` (the band where the
  network is unsure of class ``c``, inside and outside its predicted region) and ``P_c = #{v : ŷ(v) = c}``
  (0 when both are empty; 1 when a class is hesitated over but nowhere predicted), so it lies in [0, 1]. Thin uncertain rims score low; a case where the network hesitates over much of a
  structure, or between two touching classes, scores high. It is computed on the working grid, so the
  input's size does not matter.
- **Predicted Dice**: a straight line fitted from the score to the validation cases' mean Dice (at
  least :data:`MIN_FIT_CASES` cases and a falling slope; otherwise none), clipped to [0, 1].
- **Flag** ``check`` with its reasons, any of:
  the score above the validation cases' 80th percentile (the run's worst 20%, as predicted);
  a constant image; intensities unlike the validation and training images (negative values where
  they had none; another channel count; p1/p50/p99 levels and the histogram's shape far from theirs,
  :class:`ImageReference`); a predicted volume far outside theirs, or
  none where they all had some; and an image whose intensity profile along an axis matches the
  training images' mirrored profile better than their own (a flipped orientation), on axes where the
  training images are asymmetric enough for that to tell.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from medseg.io.atomic import write_json
from medseg.io.json_file import read_json_object

QUALITY_FILE = "quality.json"
QUALITY_CSV = "quality.csv"
#: 2: the score is U/(U+P) (1 was U/P)
QUALITY_FORMAT = 2
#: probabilities inside this band count as uncertain
UNCERTAIN_BAND = (0.05, 0.95)
#: the flag's percentile of the validation scores (flags the predicted worst 20%)
FLAG_PERCENTILE = 80.0
#: fewer validation cases give no threshold, no fitted line and no ranges (only the constant-image rule)
MIN_FIT_CASES = 5
#: bins of an axis profile
PROFILE_BINS = 32
#: an image is unlike the references beyond this many times the largest reference distance (and at least the floor)
DISTANCE_MARGIN = 1.25
MIN_DISTANCE_LIMIT = 6.0
#: a predicted volume this many times above the largest (or below the smallest) validation volume is flagged
VOLUME_FACTOR = 4.0


def _axis_profile(channel: np.ndarray, axis: int) -> np.ndarray:
    """Mean intensity along ``axis`` (the others averaged), resampled to :data:`PROFILE_BINS`, centred, unit length."""
    other = tuple(a for a in range(channel.ndim) if a != axis)
    p = channel.mean(axis=other, dtype=np.float64)
    p = np.interp(np.linspace(0, len(p) - 1, PROFILE_BINS), np.arange(len(p)), p) if len(p) > 1 else np.zeros(PROFILE_BINS)
    p = p - p.mean()
    norm = float(np.linalg.norm(p))
    return p / norm if norm > 0 else p


@dataclass
class ImageStats:
    """What the quality rules know of an image: per channel p1/p50/p99, where p5..p95 lie between p1 and
    p99 (the histogram's shape, whatever its scale), the share of negative values, and the first
    channel's axis profiles."""

    p1: list[float]
    p50: list[float]
    p99: list[float]
    positions: list[list[float]]
    negative: list[float]
    profiles: list[list[float]]

    @classmethod
    def of(cls, array: np.ndarray) -> "ImageStats":
        """``array (C, *S)`` as read (before any normalisation)."""
        a = np.asarray(array, dtype=np.float32)
        flat = a.reshape(a.shape[0], -1)
        q = np.percentile(flat, [1, 5, 25, 50, 75, 95, 99], axis=1)
        positions = ((q[1:6] - q[0]) / np.maximum(q[6] - q[0], 1e-6)).T
        profiles = [_axis_profile(a[0], ax).tolist() for ax in range(a.ndim - 1)]
        return cls(q[0].tolist(), q[3].tolist(), q[6].tolist(), positions.tolist(), (flat < 0).mean(axis=1).tolist(), profiles)

    @property
    def constant(self) -> bool:
        return all(hi - lo <= 1e-6 * max(abs(mid), 1.0) for lo, mid, hi in zip(self.p1, self.p50, self.p99))

    def vector(self) -> np.ndarray:
        """The histogram shape and the p1/p50/p99 levels of every channel, as one vector."""
        return np.concatenate([np.ravel(self.positions), self.p1, self.p50, self.p99]).astype(np.float64)


@dataclass
class ImageReference:
    """The reference images' statistics: per entry of :meth:`ImageStats.vector` a median and a robust scale
    (1.4826 MAD, floored), and the largest distance of a reference image from them times :data:`DISTANCE_MARGIN`."""

    channels: int
    center: list[float]
    scale: list[float]
    limit: float

    @classmethod
    def of(cls, stats: list[ImageStats]) -> "ImageReference":
        vectors = np.array([s.vector() for s in stats])
        center = np.median(vectors, axis=0)
        scale = np.maximum(1.4826 * np.median(np.abs(vectors - center), axis=0), 1e-3 + 1e-3 * np.abs(center))
        ref = cls(len(stats[0].p1), center.tolist(), scale.tolist(), 0.0)
        ref.limit = max(DISTANCE_MARGIN * max(ref.distance(s) for s in stats), MIN_DISTANCE_LIMIT)
        return ref

    def distance(self, s: ImageStats) -> float:
        """Root-mean-square robust z-score of the image's vector against the references'."""
        z = (s.vector() - np.asarray(self.center)) / np.asarray(self.scale)
        return float(np.sqrt(np.mean(z * z)))


@dataclass
class QualityFeatures:
    """The per-prediction measures: ``score`` (see the module doc), the worst class, the predicted
    foreground share of the working grid, and the image statistics."""

    score: float
    worst_class: int
    foreground: float
    image: ImageStats

    @classmethod
    def of(cls, image: np.ndarray, probabilities: np.ndarray) -> "QualityFeatures":
        """``image (C, *S)`` as read; ``probabilities (K, *S')`` of the network on its working grid (uncalibrated)."""
        probs = np.asarray(probabilities, dtype=np.float32)
        ids = probs.argmax(axis=0)
        lo, hi = UNCERTAIN_BAND
        fractions = []
        for c in range(1, probs.shape[0]):
            unsure, predicted = int(((probs[c] > lo) & (probs[c] < hi)).sum()), int((ids == c).sum())
            fractions.append(unsure / (unsure + predicted) if unsure + predicted else 0.0)
        worst = int(np.argmax(fractions)) + 1 if fractions else 0
        return cls(max(fractions, default=0.0), worst, float((ids > 0).mean()), ImageStats.of(image))


@dataclass
class QualityAssessment:
    """``score``; ``predicted_dice`` (or ``None``); ``check`` when any reason applies; the ``reasons``."""

    score: float
    predicted_dice: float | None
    check: bool
    reasons: list[str] = field(default_factory=list)

    def row(self) -> dict:
        return {"qc_score": round(self.score, 4),
                "predicted_dice": None if self.predicted_dice is None else round(self.predicted_dice, 4),
                "check": int(self.check), "qc_reasons": "; ".join(self.reasons)}


@dataclass
class QualityModel:
    """What a run learned about its own predictions (``RUN/quality.json``); see the module doc."""

    mirror: bool
    cases: int
    threshold: float | None = None
    dice_line: tuple[float, float] | None = None     # predicted Dice = a + b * score
    class_names: list[str] = field(default_factory=list)
    foreground_range: tuple[float, float] | None = None
    negative_max: list[float] | None = None
    images: ImageReference | None = None
    templates: list[list[float] | None] = field(default_factory=list)  # per axis, None where not asymmetric enough
    fit: dict = field(default_factory=dict)          # in-sample figures: AUROC, Spearman, the cases' scores

    def assess(self, f: QualityFeatures) -> QualityAssessment:
        reasons: list[str] = []
        name = self.class_names[f.worst_class] if 0 < f.worst_class < len(self.class_names) else f"class {f.worst_class}"
        if f.image.constant:
            reasons.append("the image is constant (an empty scan?)")
        if self.threshold is not None and f.score > self.threshold:
            reasons.append(f"uncertain: {name} has an unsure band of {f.score:.0%} (band / (band + region); flag above {self.threshold:.0%}, the "
                           f"validation cases' {FLAG_PERCENTILE:.0f}th percentile)")
        if self.negative_max is not None and len(f.image.negative) == len(self.negative_max):
            for c, (share, top) in enumerate(zip(f.image.negative, self.negative_max)):
                if share > max(3 * top, 0.01):
                    reasons.append(f"intensity scale: {share:.0%} of channel {c}'s values are negative, at most "
                                   f"{top:.0%} in the reference images (another modality, e.g. CT in Hounsfield units?)")
        if self.images is not None and not f.image.constant:
            if len(f.image.p1) != self.images.channels:
                reasons.append(f"the image has {len(f.image.p1)} channel(s), the reference images {self.images.channels}")
            elif (d := self.images.distance(f.image)) > self.images.limit:
                reasons.append(f"intensities unlike the reference images (distance {d:.1f}, theirs up to "
                               f"{self.images.limit / DISTANCE_MARGIN:.1f}): another modality or kind of image?")
        if self.foreground_range is not None and not f.image.constant:
            lo, hi = self.foreground_range
            if f.foreground == 0 and lo > 0:
                reasons.append("nothing was found, though every validation case had a predicted structure")
            elif f.foreground > hi * VOLUME_FACTOR or 0 < f.foreground < lo / VOLUME_FACTOR:
                reasons.append(f"predicted volume {f.foreground:.2%} of the image, validation cases {lo:.2%}-{hi:.2%}")
        for axis, template in enumerate(self.templates):
            if template is not None and axis < len(f.image.profiles) and not f.image.constant:
                p, t = np.asarray(f.image.profiles[axis]), np.asarray(template)
                if p @ t[::-1] > p @ t:
                    reasons.append(f"orientation: along array axis {axis} the image looks mirrored against the reference images")
        predicted = None
        if self.dice_line is not None:
            a, b = self.dice_line
            predicted = float(min(max(a + b * f.score, 0.0), 1.0))
        return QualityAssessment(f.score, predicted, bool(reasons), reasons)

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, d: dict) -> "QualityModel":
        known = {k: d[k] for k in cls.__dataclass_fields__ if k in d}
        for key in ("dice_line", "foreground_range"):
            if known.get(key) is not None:
                known[key] = tuple(known[key])
        if isinstance(known.get("images"), dict):
            known["images"] = ImageReference(**known["images"])
        return cls(**known)


def quality_models(run_or_bundle: str | Path) -> dict[str, QualityModel]:
    """The fitted models of a run or bundle folder by mode (``"plain"``, ``"tta"``); empty when there is none."""
    path = Path(run_or_bundle) / QUALITY_FILE
    if not path.is_file():
        return {}
    d = read_json_object(path)
    models = {mode: QualityModel.from_json(m) for mode, m in (d.get("models") or {}).items() if isinstance(m, dict)}
    if d.get("format_version", 1) < QUALITY_FORMAT:  # fitted on the score U/P: its threshold maps to U/(U+P)
        import logging

        logging.getLogger(__name__).warning("%s was fitted by an earlier medseg (another score scale): its threshold is "
                                            "converted and its predicted Dice left out; refit with: medseg qc %s",
                                            path, Path(run_or_bundle))
        for m in models.values():
            if m.threshold is not None:
                m.threshold = m.threshold / (1 + m.threshold)
            m.dice_line = None
    return models


def pick_model(models: dict[str, QualityModel], mirror: bool) -> QualityModel | None:
    """The model fitted with the same mirroring TTA, else the other one (its threshold is then approximate)."""
    return models.get("tta" if mirror else "plain") or next(iter(models.values()), None)


def write_quality_models(run_dir: str | Path, models: dict[str, QualityModel]) -> Path:
    path = Path(run_dir) / QUALITY_FILE
    write_json(path, {"format_version": QUALITY_FORMAT, "models": {m: q.to_json() for m, q in models.items()}})
    return path


def write_quality_csv(path: str | Path, rows: list[dict]) -> None:
    """``quality.csv``: one row per case (``case``, ``prediction``, ``qc_score``, ``predicted_dice``, ``check``, ``qc_reasons``)."""
    import csv
    import io

    from medseg.io.atomic import write_text

    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=["case", "prediction", "qc_score", "predicted_dice", "check", "qc_reasons"], extrasaction="ignore")
    w.writeheader()
    w.writerows(rows)
    write_text(path, buf.getvalue())


def auroc(score: np.ndarray, positive: np.ndarray) -> float:
    """Area under the ROC curve of ``score`` (higher = more likely positive), ties counted half; NaN without both kinds."""
    from scipy.stats import rankdata

    score, positive = np.asarray(score, float), np.asarray(positive, bool)
    n_pos, n_neg = int(positive.sum()), int((~positive).sum())
    if n_pos == 0 or n_neg == 0:
        return math.nan
    ranks = rankdata(score)
    return float((ranks[positive].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def worst_share(dice: np.ndarray, share: float = 0.2) -> np.ndarray:
    """The cases in the worst ``share`` by Dice (at least one)."""
    dice = np.asarray(dice, float)
    k = max(1, int(round(share * len(dice))))
    order = np.argsort(dice, kind="stable")
    out = np.zeros(len(dice), bool)
    out[order[:k]] = True
    return out
