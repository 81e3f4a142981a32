"""From a fingerprint to a :class:`~medseg.planning.plan.Plan`: every decision with its reason.

Order of decisions: configuration (2D/3D) → target spacing → normalisation and cropping →
patch, network and batch together (the patch starts at the median preprocessed shape and
shrinks, largest physical axis first, until a training step fits the memory budget and,
on a CPU, the work of the hand-set reference step; small 2D patches then grow the batch up to that
work) → training length.

Device profiles (:data:`PROFILES`) hold the few numbers that differ between a CPU and a
GPU: U-Net width, maximum depth, preferred batch size and, on a CPU, the reference step
(the hand-set defaults: 8 x 128² in 2D, 2 x 64³ in 3D), whose work a planned step may not
exceed so that a step stays about as long. On a GPU the batch grows while memory allows,
up to 5 % of the dataset's voxels per step (nnU-Net's cap).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from medseg.errors import ConfigError
from medseg.inference.sliding_window import VALIDATION_OVERLAP
from medseg.planning.memory import device_memory, format_bytes, parse_bytes, unet_step_flops, unet_training_memory
from medseg.planning.normalization import plan_crop, plan_normalization
from medseg.planning.plan import Plan
from medseg.planning.resolution import plan_resolution
from medseg.planning.spacing import plan_target_spacing
from medseg.planning.topology import MIN_FEATURE_SIZE, Topology, fit_topology, plan_topology, stage_features

log = logging.getLogger(__name__)

#: patches are multiples of this (and of the network's downsampling) per axis
PATCH_MULTIPLE = 8
#: patches are not shrunk below this per axis before the batch is reduced
PATCH_FLOOR = {2: 64, 3: 32}
#: at most this share of the dataset's voxels in one batch (GPU batch growth)
DATASET_SHARE_PER_BATCH = 0.05
#: a class rarer than this (voxel fraction) raises the share of foreground-centred patches
RARE_CLASS_FRACTION = 1e-3
FOREGROUND_FRACTION = 0.33
RARE_FOREGROUND_FRACTION = 0.5
ANISOTROPIC_CANDIDATE_RATIO = 3.0
#: 2D: the patch side the working resolution is chosen for (the CPU reference step's patch; GPUs afford more)
PATCH_SIDE_2D = {"cpu": 128, "cuda": 256}
#: fraction of a time-budgeted 3D run over which the augmentation rises from none to full
AUGMENT_WARMUP = 0.5
#: validation may take at most this share of training time (training plus validation)
VALIDATION_SHARE = 0.15
#: an epoch validates at least this many cases (fewer, less often, when they cost more than the share)
MIN_VALIDATION_CASES = 50
#: at most this many epochs between validations
MAX_VAL_EVERY = 10


@dataclass(frozen=True)
class DeviceProfile:
    kind: str
    features: int
    max_depth: dict[int, int]
    max_features: dict[int, int]
    batch: dict[int, int]               # preferred batch size
    max_batch: dict[int, int]
    reference_step: dict[int, tuple[int, tuple[int, ...], int]] | None  # dims -> (batch, patch, depth) at `features`
    iterations_per_epoch: int
    bytes_per_value: float              # activations: fp32 on CPU, mixed precision on CUDA


PROFILES = {
    "cpu": DeviceProfile("cpu", 16, {2: 4, 3: 4}, {2: 512, 3: 320}, {2: 8, 3: 2}, {2: 64, 3: 2},
                         {2: (8, (128, 128), 4), 3: (2, (64, 64, 64), 3)}, 50, 4.0),
    "cuda": DeviceProfile("cuda", 32, {2: 7, 3: 5}, {2: 512, 3: 320}, {2: 2, 3: 2}, {2: 64, 3: 32}, None, 250, 3.0),
}


def resolve_kind(device: str) -> str:
    """``auto`` → ``cuda`` when torch sees a GPU, else ``cpu``; ``cuda:1`` → ``cuda``."""
    if device == "auto":
        import torch

        return "cuda" if torch.cuda.is_available() else "cpu"
    kind = device.split(":")[0]
    if kind not in PROFILES:
        raise ConfigError(f"unknown device '{device}'", hint="choose one of: auto, cpu, cuda, cuda:N")
    return kind


def _fmt(values) -> str:
    return "x".join(str(int(v)) if float(v).is_integer() else f"{v:.3g}" for v in values)


# --------------------------------------------------------------------------- patch, network, batch


@dataclass
class _Sizing:
    patch: tuple[int, ...]
    topo: Topology
    batch: int
    memory: int
    flops: float


def _median_network_shape(fp: dict[str, Any], target: list[float] | None, resolution: dict | None = None) -> np.ndarray:
    """Median shape of the cases after cropping and resampling to ``target`` (3D), or at the 2D
    working ``resolution`` (``scale`` or ``long_side``)."""
    if target is None:
        shapes = np.asarray([c["shape"] for c in fp["cases"]], dtype=np.float64)
        if resolution and resolution.get("scale"):
            shapes = shapes * resolution["scale"]
        elif resolution and resolution.get("long_side"):
            shapes = shapes * (resolution["long_side"] / shapes.max(axis=1, keepdims=True))
        return np.median(np.round(shapes), axis=0)
    shapes = np.asarray([c["cropped_shape"] for c in fp["cases"]], dtype=np.float64)
    spacings = np.asarray([c["spacing"] for c in fp["cases"]], dtype=np.float64)
    return np.median(shapes * spacings / np.asarray(target), axis=0)


def size_patch_and_batch(median_shape, spacing, dims: int, channels: int, num_classes: int, profile: DeviceProfile,
                         budget: int, dataset_voxels: float) -> tuple[_Sizing, list[str]]:
    """Patch, topology and batch for a memory ``budget`` (bytes); see the module docstring."""
    feats, maxf, max_depth = profile.features, profile.max_features[dims], profile.max_depth[dims]
    notes: list[str] = []

    def measure(patch, topo, batch) -> tuple[int, float]:
        return (unet_training_memory(patch, batch, channels, num_classes, feats, topo, maxf, profile.bytes_per_value),
                unet_step_flops(patch, batch, channels, num_classes, feats, topo, maxf))

    max_flops = math.inf
    if profile.reference_step is not None:
        rb, rp, rd = profile.reference_step[dims]
        ref_topo = plan_topology(rp, [1.0] * dims, rd)
        max_flops = unet_step_flops(rp, rb, channels, num_classes, feats, ref_topo, maxf) * 1.02

    patch, topo = fit_topology(median_shape, spacing, max_depth, PATCH_MULTIPLE, up=True)
    batch = profile.batch[dims]
    floor = [min(p, PATCH_FLOOR[dims]) for p in patch]
    frozen: set[int] = set()
    mem, flops = measure(patch, topo, batch)
    shrunk = False
    while mem > budget or flops > max_flops:
        axes = [a for a in range(dims) if a not in frozen and patch[a] > floor[a]]
        if not axes and batch > 1:
            batch -= 1
            notes.append(f"batch reduced to {batch}: the patch is at its floor")
        elif not axes and floor != [min(p, PATCH_MULTIPLE) for p in patch]:
            floor = [min(p, PATCH_MULTIPLE) for p in patch]
            frozen.clear()
        elif not axes:
            raise ConfigError(
                f"a training step needs at least {format_bytes(mem)} (patch {_fmt(patch)}, batch 1), "
                f"more than the memory budget of {format_bytes(budget)}",
                hint=f"give a larger --memory-budget (at least {format_bytes(mem * 1.1)})")
        else:
            a = max(axes, key=lambda i: (patch[i] * spacing[i], patch[i]))
            d = topo.divisor[a]
            step = max(d, PATCH_MULTIPLE if patch[a] > PATCH_MULTIPLE else 1, patch[a] // 10 // d * d)  # <= 10% a step
            want = list(patch)
            want[a] = max(floor[a], patch[a] - step)
            new_patch, new_topo = fit_topology(want, spacing, max_depth, PATCH_MULTIPLE, up=False)
            if new_patch[a] >= patch[a]:
                frozen.add(a)
                continue
            patch, topo, shrunk = new_patch, new_topo, True
        mem, flops = measure(patch, topo, batch)
    # grow the batch while memory allows (GPU) or, on a CPU, while the step stays within the reference's work
    # (small images: a step of 8 would leave most of it unused); at most a share of the dataset per step
    cap = min(profile.max_batch[dims], max(profile.batch[dims], int(DATASET_SHARE_PER_BATCH * dataset_voxels / math.prod(patch))))
    grown = batch
    while batch < cap:
        m2, f2 = measure(patch, topo, batch + 1)
        if m2 > budget or f2 > max_flops:
            break
        batch, mem, flops = batch + 1, m2, f2
    if profile.kind == "cpu" and batch > grown:
        notes.append(f"batch grown to {batch}: small patches, so more of them fit the CPU step reference")
    if shrunk:
        notes.insert(0, "shrunk, largest physical axis first, to fit "
                     + ("the CPU step reference and " if profile.reference_step else "") + "the memory budget")
    return _Sizing(tuple(patch), topo, batch, mem, flops), notes


def plan_validation(median_shape, patch, batch: int, iterations: int, val_cases: int) -> tuple[int | None, int, str]:
    """``(val_max_cases, val_every, reason)``: validation within :data:`VALIDATION_SHARE` of the training time.

    A validation case costs its sliding windows (at the validation overlap) of one forward pass each;
    a training epoch ``iterations x batch`` patches of a forward and a backward pass (about 3 forward
    passes). Epochs validate a fixed subset of the cases the share affords; when that is fewer than
    :data:`MIN_VALIDATION_CASES`, they validate that many, every few epochs (at most :data:`MAX_VAL_EVERY`).
    ``val_cases`` is how many cases the split validates on.
    """
    step = [p * (1 - VALIDATION_OVERLAP) for p in patch]
    windows = math.prod(1 if s <= p else math.ceil((s - p) / st) + 1 for s, p, st in zip(median_shape, patch, step))
    train = 3.0 * iterations * batch
    afford = VALIDATION_SHARE / (1 - VALIDATION_SHARE) * train / windows
    expected = max(1, val_cases)
    cost = (f"a validation case costs {windows} window{'s' if windows > 1 else ''} ({windows / train:.1%} of an epoch's "
            f"training), so {VALIDATION_SHARE:.0%} of the time affords {afford:.0f} cases per epoch")
    if afford >= expected:
        return None, 1, f"every epoch on all validation cases: {cost}, and the split holds about {expected}"
    if afford >= MIN_VALIDATION_CASES:
        n = int(afford)
        return n, 1, (f"every epoch on a fixed subset of at most {n} validation cases: {cost}; the final model is chosen "
                      "on all of them (best checkpoint or last weights)")
    every = min(MAX_VAL_EVERY, max(1, math.ceil(min(expected, MIN_VALIDATION_CASES) / afford)))
    n = min(expected, MIN_VALIDATION_CASES, max(1, int(afford * every)))
    return (n if n < expected else None), every, (
        f"every {every} epochs on {'a fixed subset of ' if n < expected else ''}{n} validation cases: {cost}"
        + ("; the final model is chosen on all of them" if n < expected else ""))


# --------------------------------------------------------------------------- the plan


def make_plan(fp: dict[str, Any], *, device: str = "auto", memory_budget: str | int | None = None,
              time_budget: float | None = None, fingerprint_file: str | None = None, val_cases: int | None = None) -> Plan:
    """Decide everything :func:`medseg.training.planned.plan_setup` needs, from the fingerprint ``fp``."""
    dims, channels = fp["dims"], fp["channels"]
    kind = resolve_kind(device)
    profile = PROFILES[kind]
    if memory_budget is not None:
        budget, source = parse_bytes(memory_budget), "given (--memory-budget)"
    else:
        budget, source = device_memory(kind)
    labels = fp.get("labels") or {}
    values = sorted({0, *(c["value"] for c in fp["classes"])})
    class_names = [labels.get(str(v), "background" if v == 0 else f"label_{v}") for v in values]
    num_classes = len(values)

    # configuration
    candidates = [f"{dims}d"]
    if dims == 2:
        why = "2D images"
    elif fp["anisotropy"] > ANISOTROPIC_CANDIDATE_RATIO:
        candidates.append("2d")
        why = (f"volumes with anisotropic spacing (max/min {fp['anisotropy']:.1f} > {ANISOTROPIC_CANDIDATE_RATIO:g}): "
               "slice-wise 2D is a candidate, as in nnU-Net, but medseg trains the 3D configuration")
    else:
        why = f"volumes at near-isotropic spacing (max/min {fp['anisotropy']:.2f})"

    target, spacing_reason = plan_target_spacing(fp)
    resolution = plan_resolution(fp, PATCH_SIDE_2D[kind]) if dims == 2 else None
    if resolution is not None:
        spacing_reason = resolution["reason"]
    schemes, stats, norm_reason = plan_normalization(fp)
    crop, crop_reason = plan_crop(fp)

    median_shape = _median_network_shape(fp, target, resolution)
    grid = target or [1.0] * dims
    dataset_voxels = float(np.prod(median_shape)) * max(1, fp["cases_used"])
    sizing, notes = size_patch_and_batch(median_shape, grid, dims, channels, num_classes, profile, budget, dataset_voxels)
    patch, topo = sizing.patch, sizing.topo
    covers = all(p >= m for p, m in zip(patch, np.floor(median_shape)))
    patch_reason = (f"median {'image' if dims == 2 else 'preprocessed'} shape {_fmt(np.round(median_shape))}"
                    + (" covered whole" if covers else "") + ("; " + "; ".join(notes) if notes else "")
                    + f"; multiples of the network's downsampling {_fmt(topo.divisor)}")

    ch = stage_features(profile.features, topo.depth, profile.max_features[dims])
    pooled_from = {a: next((i for i, s in enumerate(topo.strides) if s[a] == 2), None) for a in range(dims)}
    late = [f"axis {a} pooled from stage {i + 1}" if i is not None else f"axis {a} never pooled"
            for a, i in pooled_from.items() if i != 0]
    thin = [a for a in range(dims) if topo.kernel_sizes[0][a] == 1]
    net_reason = (f"{topo.depth} downsamplings: each axis is pooled while its feature map stays >= "
                  f"{2 * MIN_FEATURE_SIZE} voxels and its spacing within 2x of the finest (at most {profile.max_depth[dims]} "
                  f"on {kind.upper()})" + (f"; {', '.join(late)}" if late else "")
                  + (f"; kernel 1 along axis {', '.join(map(str, thin))} until pooling catches up" if thin else "")
                  + f"; widths {'-'.join(map(str, ch))} ({profile.features} on {kind.upper()})")
    dropout = 0.1 if dims == 2 else 0.0

    rare = [c for c in fp["classes"] if 0 < c["voxel_fraction"] < RARE_CLASS_FRACTION or c.get("tiny")]
    fg_fraction = RARE_FOREGROUND_FRACTION if rare else FOREGROUND_FRACTION
    fg_reason = (f"class '{rare[0]['name']}' is rare or tiny ({rare[0]['voxel_fraction']:.2e} of the voxels): "
                 f"{fg_fraction:.0%} of patches are centred on foreground" if rare
                 else f"{fg_fraction:.0%} of patches centred on foreground (nnU-Net's share)")
    fg_reason += "; the best checkpoint is chosen by mean validation Dice, the metric that is reported"
    if time_budget:
        train_reason = (f"time budget {time_budget:.0f} s: the learning-rate schedule spans it; max_epochs is only a bound; "
                        f"{profile.iterations_per_epoch} steps per epoch; {fg_reason}")
        max_epochs = 1000
    else:
        train_reason = (f"no time budget: up to 500 epochs of {profile.iterations_per_epoch} steps, early stopping on "
                        f"the validation Dice; {fg_reason}")
        max_epochs = 500

    if val_cases is None:  # the default split's share (60/20/20)
        val_cases = round(0.2 * fp["num_cases"])
    val_max_cases, val_every, val_reason = plan_validation(median_shape, patch, sizing.batch, profile.iterations_per_epoch,
                                                           val_cases)
    train_reason += f"; validation {val_reason}"
    warmup = AUGMENT_WARMUP if time_budget and dims == 3 else 0.0
    if warmup:
        train_reason += (f"; augmentation rises from none to full over the first {warmup:.0%} of the budget: the network "
                         "first learns the cases as they are, then is regularised (Hippocampus, 30 min on 2 CPU cores: "
                         "best validation Dice 0.8819 against 0.877-0.880 at full strength throughout)")
    elif time_budget:
        train_reason += "; augmentation at full strength from the start (a warm-up is planned for 3D only, where it was measured)"

    batch_reason = (f"{'preferred' if sizing.batch == profile.batch[dims] else 'largest fitting'} batch on "
                    f"{kind.upper()}: a step needs about {format_bytes(sizing.memory)} of the {format_bytes(budget)} budget "
                    f"and {sizing.flops / 1e9:.0f} GFLOP"
                    + (" (at most the CPU reference step: 8x128² in 2D, 2x64³ in 3D)" if profile.reference_step else
                       f" (grown while memory allows, up to {DATASET_SHARE_PER_BATCH:.0%} of the dataset per step)"))

    sections = {
        "data": {"path": fp["data"], "name": fp["name"], "dims": dims, "channels": channels, "modality": fp["modality"],
                 "num_classes": num_classes, "class_names": class_names, "num_cases": fp["num_cases"],
                 "data_hash": fp.get("data_hash"), "fingerprint": fingerprint_file},
        "device": {"kind": kind, "memory_budget": format_bytes(budget), "source": source,
                   "reason": f"planned for {kind.upper()}; memory budget {source}"},
        "configuration": {"value": f"{dims}d", "candidates": candidates, "reason": why},
        "spacing": {"target": target, **({k: resolution[k] for k in ("scale", "long_side")} if resolution else {}),
                    "reason": spacing_reason},
        "normalization": {"scheme": schemes, "stats": stats, "reason": norm_reason},
        "crop_to_nonzero": {"value": crop, "reason": crop_reason},
        "patch": {"size": list(patch), "reason": patch_reason},
        "batch": {"size": sizing.batch, "estimated_memory": format_bytes(sizing.memory),
                  "estimated_step_gflop": round(sizing.flops / 1e9, 1), "reason": batch_reason},
        "network": {"model": "unet", "features": profile.features, **topo.to_json(),
                    "max_features": profile.max_features[dims], "dropout": dropout, "reason": net_reason},
        "training": {"time_budget": time_budget, "max_epochs": max_epochs,
                     "iterations_per_epoch": profile.iterations_per_epoch, "foreground_fraction": fg_fraction,
                     "monitor": "val_dice", "augment_warmup": warmup, "val_max_cases": val_max_cases,
                     "val_every": val_every, "reason": train_reason},
    }
    plan = Plan.new(sections)
    log.debug("plan: %s, patch %s, batch %d, U-Net depth %d", plan["configuration"]["value"], _fmt(patch), sizing.batch, topo.depth)
    return plan
