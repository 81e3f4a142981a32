"""Speed of the standalone evaluation (`medseg evaluate PRED_DIR GT_DIR`, every metric incl. HD95 and NSD).

- 100 Hippocampus-sized volume pairs (36x50x35 voxels, labels 1 and 2, anisotropic spacing,
  smooth blobs; prediction = the truth with a perturbed boundary), written as NIfTI;
- 20 DRIVE-size 2D pairs (565x584): the official test `1st_manual` GIFs as truth when
  ../shared/datasets/drive exists (else synthetic vessel trees), a perturbed copy as the
  prediction (PNG), evaluated inside the field-of-view masks.

Files are generated in a temporary folder; `evaluate_dirs` is timed in process (reading,
all metrics, writing; the median of ``--repeats`` runs after one warm-up call on other
files), then the whole `medseg evaluate` command (Python start-up included), and the
metrics alone on the arrays read beforehand: medseg's against MONAI's (Dice + HD95 + NSD).
Prints one table.

    python benchmarks/eval_speed.py [--volumes 100] [--images 20]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image
from scipy import ndimage

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.common import describe, run_medseg  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
DRIVE = ROOT.parent / "shared" / "datasets" / "drive" / "testing"
SHAPE, SPACING = (36, 50, 35), (0.9, 1.0, 1.3)


def _smooth_noise(rng: np.random.Generator, shape, sigma: float) -> np.ndarray:
    return ndimage.gaussian_filter(rng.standard_normal(shape), sigma)


def hippocampus_like(rng: np.random.Generator) -> np.ndarray:
    """Two touching curved blobs (head = 1, tail = 2) with a rough boundary, about 3000 voxels."""
    grids = np.meshgrid(*[np.arange(s, dtype=np.float64) for s in SHAPE], indexing="ij")
    c = np.array(SHAPE) / 2 + rng.uniform(-3, 3, 3)
    bend = 0.02 * (grids[1] - c[1]) ** 2
    d = ((grids[0] - c[0] - bend) / rng.uniform(5, 7)) ** 2 + ((grids[1] - c[1]) / rng.uniform(15, 19)) ** 2 \
        + ((grids[2] - c[2]) / rng.uniform(6, 8)) ** 2
    inside = d + 0.3 * _smooth_noise(rng, SHAPE, 2.0) < 1
    label = np.zeros(SHAPE, np.uint8)
    label[inside & (grids[1] < c[1] + rng.uniform(-3, 3))] = 1
    label[inside & (label == 0)] = 2
    return label


def perturb(label: np.ndarray, rng: np.random.Generator, sigma: float, amount: float) -> np.ndarray:
    """The label with its boundaries moved in and out by smooth random noise (``amount`` voxels, std), plus stray voxels."""
    inside = ndimage.distance_transform_edt(label > 0)
    outside, nearest = ndimage.distance_transform_edt(label == 0, return_indices=True)  # nearest labelled voxel
    noise = _smooth_noise(rng, label.shape, sigma)
    grown = inside - outside + amount * noise / max(noise.std(), 1e-9) > 0
    out = np.where(grown, label[tuple(nearest)], 0).astype(np.uint8)
    out[rng.random(label.shape) < 2e-4] = 1
    return out


def make_volumes(folder: Path, n: int, seed: int = 0) -> tuple[Path, Path]:
    from medseg.io import Geometry, write_image

    rng = np.random.default_rng(seed)
    for i in range(n):
        gt = hippocampus_like(rng)
        write_image(folder / "gt" / f"hippocampus_{i:03d}.nii.gz", gt[None], Geometry(SPACING))
        write_image(folder / "pred" / f"hippocampus_{i:03d}.nii.gz", perturb(gt, rng, 2.0, 1.5)[None], Geometry(SPACING))
    return folder / "pred", folder / "gt"


def vessel_tree(rng: np.random.Generator, shape=(584, 565)) -> np.ndarray:
    """A synthetic stand-in for a DRIVE manual annotation: random thin curved lines."""
    img = np.zeros(shape, bool)
    for _ in range(60):
        y, x = rng.uniform(0, shape[0]), rng.uniform(0, shape[1])
        angle = rng.uniform(0, 2 * np.pi)
        for _ in range(200):
            angle += rng.normal(0, 0.15)
            y, x = y + np.sin(angle), x + np.cos(angle)
            if 0 <= y < shape[0] and 0 <= x < shape[1]:
                img[int(y), int(x)] = True
    return ndimage.binary_dilation(img, iterations=1)


def make_images(folder: Path, n: int, seed: int = 0) -> tuple[Path, Path, Path | None]:
    rng = np.random.default_rng(seed)
    manual = sorted((DRIVE / "1st_manual").glob("*.gif")) if DRIVE.is_dir() else []
    fovs = {p.name.split("_")[0]: p for p in (DRIVE / "mask").glob("*.gif")} if manual else {}
    (folder / "gt2d").mkdir(parents=True)
    (folder / "pred2d").mkdir()
    (folder / "fov2d").mkdir()
    for i in range(n):
        if manual:
            src = manual[i % len(manual)]
            key = src.name.split("_")[0]
            gt = np.asarray(Image.open(src).convert("L")) > 127
            fov = np.asarray(Image.open(fovs[key]).convert("L")) > 127
        else:
            key = f"{i + 1:02d}"
            gt = vessel_tree(rng)
            fov = np.ones_like(gt)
        grow = ndimage.binary_dilation(gt) & (rng.random(gt.shape) < 0.3)
        pred = (gt & (rng.random(gt.shape) > 0.1)) | grow
        Image.fromarray((gt * 255).astype(np.uint8)).save(folder / "gt2d" / f"{key}_manual1.gif")
        Image.fromarray(pred.astype(np.uint8)).save(folder / "pred2d" / f"{key}_test.png")  # class indices
        Image.fromarray((fov * 255).astype(np.uint8)).save(folder / "fov2d" / f"{key}_test_mask.gif")
    return folder / "pred2d", folder / "gt2d", folder / "fov2d"


def metrics_only(pred_dir: Path, gt_dir: Path, fov_dir: Path | None) -> tuple[float, float]:
    """Seconds for the metrics alone (files read beforehand): ours (``case_metrics``) and MONAI's
    ``DiceMetric`` + ``compute_hausdorff_distance(percentile=95)`` + ``compute_surface_dice`` on the same arrays."""
    import warnings

    import torch
    from monai.metrics import DiceMetric, compute_hausdorff_distance, compute_surface_dice

    from medseg.evaluation.file_pairing import list_label_files, pair_files
    from medseg.evaluation.label_reading import read_fov, read_pair
    from medseg.evaluation.metrics import case_metrics

    pairs = pair_files(list_label_files(pred_dir, "prediction"), list_label_files(gt_dir, "truth"))
    scheme = None
    if fov_dir is not None:
        from medseg.data.mask_reading import detect_scheme

        scheme = detect_scheme([g for _, _, g in pairs])
    arrays = []
    for key, p, g in pairs:
        pred, gt = read_pair(p, g, scheme)
        a, b = pred.array, gt.array
        if fov_dir is not None:
            fov = read_fov(fov_dir / f"{key}_test_mask.gif", b.shape)
            a, b = np.where(fov, a, 0), np.where(fov, b, 0)
        arrays.append((a, b, gt.spacing))
    labels = sorted(set(np.unique(np.stack([b for _, b, _ in arrays]))) - {0})
    t = time.perf_counter()
    for a, b, sp in arrays:
        case_metrics(a, b, labels, sp, 1.0)
    ours = time.perf_counter() - t
    t = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for a, b, sp in arrays:
            y_pred = torch.from_numpy(np.stack([a == c for c in [0, *labels]])[None].astype(np.float32))
            y = torch.from_numpy(np.stack([b == c for c in [0, *labels]])[None].astype(np.float32))
            DiceMetric(include_background=False, reduction="none")(y_pred, y)
            compute_hausdorff_distance(y_pred, y, percentile=95, spacing=list(sp))
            compute_surface_dice(y_pred, y, class_thresholds=[1.0] * len(labels), spacing=list(sp))
    return ours, time.perf_counter() - t


def timed(fn, repeats: int = 3) -> float:
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return sorted(times)[len(times) // 2]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--volumes", type=int, default=100)
    ap.add_argument("--images", type=int, default=20)
    ap.add_argument("--repeats", type=int, default=3, help="timed runs of each (the median is shown)")
    a = ap.parse_args()
    from medseg.evaluation.evaluate_dirs import evaluate_dirs

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        pred3, gt3 = make_volumes(tmp / "vol", a.volumes)
        pred2, gt2, fov2 = make_images(tmp / "img", a.images)
        warm_p, warm_g = make_volumes(tmp / "warm", 2, seed=1)
        evaluate_dirs(warm_p, warm_g, out=tmp / "warm_eval")  # imports, first-call allocations
        for what, n, kwargs, cli in (
            (f"{a.volumes} volumes {'x'.join(map(str, SHAPE))}, 2 labels", a.volumes,
             dict(pred_dir=pred3, gt_dir=gt3, out=tmp / "e3"), [pred3, gt3, "--out", tmp / "c3"]),
            (f"{a.images} DRIVE-size images 565x584, FOV" + ("" if DRIVE.is_dir() else " (synthetic)"), a.images,
             dict(pred_dir=pred2, gt_dir=gt2, fov_dir=fov2, out=tmp / "e2"), [pred2, gt2, "--fov", fov2, "--out", tmp / "c2"]),
        ):
            s = timed(lambda kw=kwargs: evaluate_dirs(**kw), a.repeats)
            cli_s = run_medseg("-q", "evaluate", *map(str, cli))
            dice = evaluate_dirs(**kwargs)["mean_dice"]["mean"]
            ours, monai = metrics_only(kwargs["pred_dir"], kwargs["gt_dir"], kwargs.get("fov_dir"))
            rows.append((what, n, s, 1000 * s / n, cli_s, dice, ours, monai))
    print(describe())
    print(f"\n| {'files':<44} | evaluate_dirs (s) | per case (ms) | `medseg evaluate` wall (s) | mean Dice "
          "| metrics only: medseg (s) | metrics only: MONAI (s) |")
    print(f"|{'-' * 46}|-------------------|---------------|----------------------------|-----------"
          "|--------------------------|-------------------------|")
    for what, _n, s, ms, cli_s, dice, ours, monai in rows:
        print(f"| {what:<44} | {s:17.2f} | {ms:13.1f} | {cli_s:26.2f} | {dice:9.3f} | {ours:24.2f} | {monai:23.2f} |")


if __name__ == "__main__":
    main()
