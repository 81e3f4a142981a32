"""Deterministic synthetic 2D "CT slices": the embedded demo dataset.

Each patient has its own anatomy (body outline, two lungs, 0-3 tumours that are
small 3D blobs), and its slices sample that anatomy at consecutive positions
along ``z``, so neighbouring slices of one patient look alike. Intensities
follow a lung CT window: air outside the body ~0-10, soft tissue ~100-140 with
a smooth low-frequency texture, lungs dark (~20-50), tumours bright (~150-200),
then a slight blur and Gaussian noise.

Labels: 0 background, 1 body (body minus lungs), 2 lung (lung minus tumours),
3 tumour (always inside a lung).

Everything is drawn from the ``numpy.random.Generator`` passed in, so a seed
gives the same arrays, and :func:`make_phantom_dataset` the same file bytes.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image
from scipy import ndimage

from medseg.io.atomic import atomic_path, write_json

log = logging.getLogger(__name__)

CLASS_NAMES = ("background", "body", "lung", "tumour")
CLASS_COLORS = ((0, 0, 0), (230, 159, 0), (86, 180, 233), (220, 20, 60))

_REF_SIZE = 256.0  # lengths below given in pixels are meant at this size
_TEXTURE_CELLS = 6  # control points per side of the smooth texture fields
_MIN_TUMOUR_RADIUS_PX = 5.0  # cross-sections smaller than this (at 256) are not drawn
_AIR = -15.0  # below 0 before noise, so that air clips to ~0-10 like a windowed CT


@dataclass(frozen=True)
class Tumour:
    """A tumour as a 3D blob placed relative to one lung.

    ``u``/``v`` are the centre in the lung's own normalised coordinates (the lung
    boundary is at radius 1); ``radius_px`` the largest in-plane radius at the
    256-pixel reference size; ``z`` and ``half_depth`` where along the patient's
    ``z`` (0..1) it is found; ``wobble``/``lobes``/``phase`` make it irregular.
    """

    side: int  # -1 left lung (image left), +1 right lung
    u: float
    v: float
    z: float
    half_depth: float
    radius_px: float
    intensity: float
    wobble: float
    lobes: int
    phase: float


@dataclass(frozen=True)
class PatientParams:
    """The anatomy shared by all slices of one patient.

    Lengths are fractions of the image size; angles in radians.
    """

    body_cx: float
    body_cy: float
    body_a: float  # horizontal semi-axis
    body_b: float  # vertical semi-axis
    body_angle: float
    body_intensity: float
    lung_dx: float  # lung centre offset from the body centre, horizontal
    lung_dy: float  # lung centre offset from the body centre, vertical (negative: up)
    lung_a: float
    lung_b: float
    lung_power: float  # superellipse exponent
    lung_asym: float  # right/left size ratio
    lung_intensity: float
    heart_intensity: float
    z_start: float
    z_step: float
    tumours: tuple[Tumour, ...]
    texture: np.ndarray  # (_TEXTURE_CELLS, _TEXTURE_CELLS) control points, unit variance


def make_patient_params(rng: np.random.Generator, slices_per_patient: int = 5) -> PatientParams:
    """Draw one patient's anatomy."""
    n = max(int(slices_per_patient), 1)
    z_step = min(0.12, 0.9 / max(n - 1, 1))
    z_start = float(rng.uniform(0.05, max(0.05, 0.95 - z_step * (n - 1))))
    z_end = z_start + z_step * (n - 1)

    n_tumours = int(rng.choice(4, p=(0.2, 0.35, 0.3, 0.15)))
    tumours = []
    for _ in range(n_tumours):
        r = float(rng.uniform(0.0, 0.5))
        t = float(rng.uniform(0.0, 2.0 * math.pi))
        tumours.append(
            Tumour(
                side=int(rng.choice((-1, 1))),
                u=r * math.cos(t),
                v=r * math.sin(t),
                z=float(rng.uniform(z_start - 0.05, z_end + 0.05)),
                half_depth=float(rng.uniform(0.12, 0.3)),
                radius_px=float(rng.uniform(8.0, 14.0)),
                intensity=float(rng.uniform(160.0, 195.0)),
                wobble=float(rng.uniform(0.0, 0.18)),
                lobes=int(rng.integers(2, 6)),
                phase=float(rng.uniform(0.0, 2.0 * math.pi)),
            )
        )

    return PatientParams(
        body_cx=0.5 + float(rng.uniform(-0.04, 0.04)),
        body_cy=0.5 + float(rng.uniform(-0.04, 0.04)),
        body_a=float(rng.uniform(0.37, 0.44)),
        body_b=float(rng.uniform(0.28, 0.33)),
        body_angle=math.radians(float(rng.uniform(-8.0, 8.0))),
        body_intensity=float(rng.uniform(112.0, 128.0)),
        lung_dx=float(rng.uniform(0.16, 0.19)),
        lung_dy=float(rng.uniform(-0.035, 0.0)),
        lung_a=float(rng.uniform(0.095, 0.12)),
        lung_b=float(rng.uniform(0.15, 0.19)),
        lung_power=float(rng.uniform(2.0, 3.0)),
        lung_asym=float(rng.uniform(0.92, 1.08)),
        lung_intensity=float(rng.uniform(30.0, 40.0)),
        heart_intensity=float(rng.uniform(8.0, 16.0)),
        z_start=z_start,
        z_step=z_step,
        tumours=tuple(tumours),
        texture=rng.standard_normal((_TEXTURE_CELLS, _TEXTURE_CELLS)),
    )


def _smooth_field(cells: np.ndarray, size: int) -> np.ndarray:
    """Upsample a small grid of control points to a smooth ``(size, size)`` field."""
    field = ndimage.zoom(cells, size / cells.shape[0], order=3, mode="nearest", grid_mode=False)
    field = field[:size, :size]
    if field.shape != (size, size):  # rounding guard; never expected
        field = np.pad(field, ((0, size - field.shape[0]), (0, size - field.shape[1])), mode="edge")
    return field


def make_phantom_slice(
    rng: np.random.Generator,
    size: int = 256,
    patient_params: PatientParams | None = None,
    *,
    z: float | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """One synthetic CT slice and its labels, both ``uint8`` of shape ``(size, size)``.

    ``patient_params`` (from :func:`make_patient_params`) fixes the anatomy; without
    it a new patient is drawn from ``rng``. ``z`` (0..1) is the slice position
    along the patient; without it one is drawn from ``rng``. The per-slice
    variation (small shifts, texture, noise) always comes from ``rng``.
    """
    if size < 16:
        raise ValueError(f"phantom size must be at least 16 pixels, got {size}")
    p = patient_params if patient_params is not None else make_patient_params(rng)
    if z is None:
        z = float(rng.uniform(0.05, 0.95))
    s = float(size)
    px = s / _REF_SIZE  # pixels at this size per reference pixel

    # Anatomy at this z, with a little per-slice jitter (breathing, positioning).
    lung_scale = 0.72 + 0.38 * math.sin(math.pi * z) + float(rng.uniform(-0.02, 0.02))
    body_scale = 0.95 + 0.07 * math.sin(math.pi * z) + float(rng.uniform(-0.01, 0.01))
    cx = p.body_cx * s + float(rng.uniform(-1.0, 1.0)) * px
    cy = p.body_cy * s + float(rng.uniform(-1.0, 1.0)) * px
    angle = p.body_angle + math.radians(float(rng.uniform(-1.0, 1.0)))

    # Body coordinates: centred on the body, rotated with it.
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    xx -= cx
    yy -= cy
    c, sn = math.cos(angle), math.sin(angle)
    u = c * xx + sn * yy
    v = -sn * xx + c * yy

    body_a = p.body_a * body_scale * s
    body_b = p.body_b * body_scale * s
    body = (u / body_a) ** 2 + (v / body_b) ** 2 <= 1.0
    margin = 9.0 * px  # chest wall thickness the lungs stay clear of
    inner = (u / (body_a - margin)) ** 2 + (v / (body_b - margin)) ** 2 <= 1.0

    lungs = np.zeros((size, size), dtype=bool)
    lung_geom = {}
    for side in (-1, 1):
        grow = p.lung_asym if side > 0 else 1.0
        la = p.lung_a * lung_scale * grow * s
        lb = p.lung_b * lung_scale * grow * s
        lx = side * p.lung_dx * body_scale * s
        ly = p.lung_dy * s
        lung_geom[side] = (lx, ly, la, lb)
        du = np.abs(u - lx) / la
        dv = np.abs(v - ly) / lb
        lungs |= (du**p.lung_power + dv**p.lung_power) <= 1.0
    lungs &= inner

    tumour = np.zeros((size, size), dtype=bool)
    tumour_value = np.zeros((size, size), dtype=np.float32)
    for t in p.tumours:
        dz = (z - t.z) / t.half_depth
        if abs(dz) >= 1.0:
            continue
        lx, ly, la, lb = lung_geom[t.side]
        r = t.radius_px * math.sqrt(1.0 - dz * dz)
        if r < _MIN_TUMOUR_RADIUS_PX:
            continue
        r *= px
        # keep the whole blob inside the lung: shrink the offset, then the radius
        tx = lx + t.u * la
        ty = ly + t.v * lb
        room = min(la, lb) * (1.0 - math.hypot(t.u, t.v)) - 2.0 * px
        r = min(r, max(room, 0.0))
        if r < _MIN_TUMOUR_RADIUS_PX * px:
            continue
        dxu = u - tx
        dyv = v - ty
        theta = np.arctan2(dyv, dxu)
        rr = r * (1.0 + t.wobble * np.sin(t.lobes * theta + t.phase))
        blob = dxu**2 + dyv**2 <= rr**2
        blob &= lungs
        tumour |= blob
        tumour_value[blob] = t.intensity

    labels = np.zeros((size, size), dtype=np.uint8)
    labels[body] = 1
    labels[lungs] = 2
    labels[tumour] = 3

    # Intensities.
    texture = _smooth_field(p.texture, size)
    slice_texture = _smooth_field(rng.standard_normal((_TEXTURE_CELLS, _TEXTURE_CELLS)), size)
    tex = 0.8 * texture + 0.6 * slice_texture
    img = np.full((size, size), _AIR, dtype=np.float32)
    img[body] = (p.body_intensity + 7.0 * tex)[body]
    # mediastinum/heart: a brighter soft-tissue region between and in front of the lungs
    heart = ((u / (0.09 * s * lung_scale)) ** 2 + ((v - 0.03 * s) / (0.11 * s)) ** 2 <= 1.0) & body & ~lungs
    img[heart] += p.heart_intensity
    img[lungs] = (p.lung_intensity + 4.0 * tex)[lungs]
    img[tumour] = tumour_value[tumour] + (4.0 * tex)[tumour]

    img = ndimage.gaussian_filter(img, sigma=0.8 * px, mode="nearest")
    sigma = float(rng.uniform(8.0, 12.0))
    img += rng.standard_normal((size, size), dtype=np.float32) * sigma
    image = np.clip(np.rint(img), 0, 255).astype(np.uint8)
    return image, labels


def colorize(labels: np.ndarray, colors=CLASS_COLORS) -> np.ndarray:
    """``(H, W)`` class indices to an ``(H, W, 3)`` ``uint8`` colour image."""
    palette = np.asarray(colors, dtype=np.uint8)
    return palette[np.asarray(labels)]


def labels_json(names=CLASS_NAMES, colors=CLASS_COLORS) -> dict:
    return {"labels": {str(i): {"name": n, "color": list(col)} for i, (n, col) in enumerate(zip(names, colors))}}


def _save_png(path: Path, array: np.ndarray) -> None:
    with atomic_path(path) as tmp:
        Image.fromarray(array).save(tmp, format="PNG")


def make_phantom_dataset(
    out: Path,
    n_patients: int = 12,
    slices_per_patient: int = 5,
    size: int = 256,
    seed: int = 0,
) -> Path:
    """Write the demo dataset to ``out`` and return ``out``.

    Layout: ``images/patientPPP_sliceSS.png`` (8-bit grayscale), ``masks/`` the
    index PNGs (values 0..3), ``masks_color/`` the same masks in
    :data:`CLASS_COLORS`, and ``labels.json``. The same seed gives the same bytes.
    """
    if n_patients < 1 or slices_per_patient < 1:
        raise ValueError("n_patients and slices_per_patient must be at least 1")
    out = Path(out)
    for sub in ("images", "masks", "masks_color"):
        (out / sub).mkdir(parents=True, exist_ok=True)
    for pi in range(n_patients):
        params = make_patient_params(np.random.default_rng([seed, pi, 0]), slices_per_patient)
        for si in range(slices_per_patient):
            rng = np.random.default_rng([seed, pi, 1, si])
            z = params.z_start + params.z_step * si
            image, labels = make_phantom_slice(rng, size, params, z=z)
            name = f"patient{pi:03d}_slice{si:02d}.png"
            _save_png(out / "images" / name, image)
            _save_png(out / "masks" / name, labels)
            _save_png(out / "masks_color" / name, colorize(labels))
    write_json(out / "labels.json", labels_json())
    log.info("wrote phantom dataset: %d patients x %d slices (%dpx) to %s", n_patients, slices_per_patient, size, out)
    return out
