"""Training on a 3D volume dataset (Decathlon, nnU-Net raw, plain folders): `medseg train`.

dataset folder → cases → split (a split file, or seeded fractions) → target spacing
(median of the training cases) and, for ``ct``, foreground intensity statistics →
every case cropped, normalised and resampled into a memory-mapped cache → patch
size and 3D U-Net planned from the data → :class:`~medseg.training.engine.Trainer`
→ run folder (weights + config + split + history + curves).

Defaults (until a planner sizes networks): the patch is the median preprocessed
training shape rounded up to a multiple of 8 and capped at 128 voxels per axis;
the U-Net has 16 features and 3 downsampling steps on a CPU (32 and 4 on a GPU),
batch size 2 on a CPU (4 on a GPU). Strides and kernel sizes follow
:func:`plan_unet_3d`.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from medseg.data.cache import PreprocessedCache
from medseg.data.dataset2d import save_labels_json
from medseg.data.dataset3d import (
    class_ids,
    foreground_stats,
    label_scheme,
    median_spacing,
    preprocess_cases,
)
from medseg.data.layouts import VolumeCase, discover_volume_cases
from medseg.data.preprocess3d import Preprocess3D
from medseg.data.sampling import PatchSampler
from medseg.data.split import complete_split, read_split_file, split_cases
from medseg.errors import ConfigError
from medseg.models import create_model
from medseg.planning.topology import plan_topology
from medseg.runfolder import RUN_FILE, check_new_run_folder, read_run_info, run_task, write_run_info
from medseg.runfolder.split import SplitEntry, write_split
from medseg.runtime import distributed
from medseg.training.config import TrainConfig
from medseg.runtime.device import resolve_device
from medseg.training.engine import Callbacks, Trainer, TrainResult
from medseg.training.run2d import write_curves

log = logging.getLogger(__name__)

PATCH_MULTIPLE = 8
PATCH_CAP = 128
#: an axis is not downsampled below this many voxels (nnU-Net's minimum feature-map edge; see :func:`plan_unet_3d`)
MIN_FEATURE_SIZE = 4


@dataclass
class TrainSetup3D:
    """Everything `medseg train` needs for a 3D dataset.

    Attributes:
        data, out: dataset folder and run folder.
        target_spacing: network grid spacing (mm, array axis order); ``None``: median of the training cases.
        normalization: ``zscore`` (per case) or ``ct`` (dataset foreground statistics), ``minmax``, ``none``.
        crop_to_nonzero: crop each case to the box of its non-zero voxels first.
        split_file: JSON with ``train``/``val``/``test`` case names; else ``split`` fractions with ``split_seed``.
        model, model_kwargs: network name and arguments (planned defaults fill the gaps for ``unet``).
        train: the training settings; ``patch_size``/``batch_size`` are set from the data when
            ``auto_patch``/``auto_batch``.
        cache_dir: where preprocessed cases go (default ``RUN/preprocessed``).
        preprocess: a fixed preprocessing (resuming a run); ``None``: built from the above.
    """

    data: str
    out: str
    target_spacing: tuple[float, float, float] | None = None
    normalization: str = "zscore"
    crop_to_nonzero: bool = True
    split_file: str | None = None
    split: tuple[float, float, float] = (0.6, 0.2, 0.2)
    split_seed: int = 0
    model: str = "unet"
    model_kwargs: dict[str, Any] = field(default_factory=dict)
    train: TrainConfig = field(default_factory=lambda: TrainConfig(patch_size=(64, 64, 64)))
    auto_patch: bool = True
    auto_batch: bool = True
    cache_dir: str | None = None
    preprocess: Preprocess3D | None = None


# --------------------------------------------------------------------------- planning


def auto_patch_size_3d(shapes: Sequence[Sequence[int]], multiple: int = PATCH_MULTIPLE, cap: int = PATCH_CAP) -> tuple[int, ...]:
    """The median shape rounded up to a multiple of ``multiple``, at most ``cap`` per axis."""
    med = np.median(np.asarray(shapes, dtype=np.float64), axis=0)
    return tuple(int(min(cap, -(-int(np.ceil(m)) // multiple) * multiple)) for m in med)


def plan_unet_3d(patch: Sequence[int], spacing: Sequence[float], depth: int,
                 min_size: int = MIN_FEATURE_SIZE) -> dict[str, Any]:
    """Per-stage strides and kernel sizes of a 3D U-Net for ``patch`` at ``spacing``.

    Stage by stage, an axis is downsampled (stride 2) only while it is at least
    ``2 * min_size`` voxels long in the patch at that stage and its spacing there is
    at most twice the finest one; otherwise its stride is 1, so thin or coarse axes
    (few slices, thick slices) stop shrinking while the others catch up (nnU-Net's
    rule in simple form). Kernels are 1 along an axis whose spacing is more than
    twice the finest, until pooling the others has brought it within that, and 3
    from then on. Stages where no axis is downsampled are dropped, so the returned
    ``depth`` may be smaller than asked (at least 1). The rules live in
    :func:`medseg.planning.topology.plan_topology` (shared with the planner).
    """
    topo = plan_topology(patch, spacing, depth, min_size)
    if topo.depth < depth:
        log.info("U-Net depth %d -> %d: patch %s at spacing %s allows no further downsampling",
                 depth, topo.depth, tuple(patch), tuple(spacing))
    return topo.to_json()


def model_kwargs_3d(model: str, on_gpu: bool, patch: Sequence[int], spacing: Sequence[float],
                    given: dict[str, Any]) -> dict[str, Any]:
    """The network arguments: ``given`` ones win; a ``unet`` gets width, depth, strides and kernels planned."""
    given = {k: v for k, v in given.items() if v is not None}
    if model != "unet":
        return given
    kwargs = {"features": 32 if on_gpu else 16, "depth": 4 if on_gpu else 3, **given}
    if "strides" not in given:
        kwargs.update(plan_unet_3d(patch, spacing, int(kwargs["depth"])))
    return kwargs


# --------------------------------------------------------------------------- training


def _split(setup: TrainSetup3D, cases: list[VolumeCase]) -> dict[str, list[str]]:
    keys = [c.key for c in cases]
    if setup.split_file:
        return complete_split(read_split_file(setup.split_file, keys), {}, setup.split, setup.split_seed)
    return split_cases(keys, [None] * len(keys), fractions=setup.split, seed=setup.split_seed)


def _case_entry(case: VolumeCase) -> SplitEntry:
    return SplitEntry(case.key, case.images, (case.label,) if case.label else ())


def train_3d(setup: TrainSetup3D, callbacks: Callbacks | None = None, resume: bool = False) -> TrainResult:
    """Preprocess the dataset (cached), plan patch and network, train, and write the run folder."""
    out = Path(setup.out)
    if not resume and distributed.is_main():
        check_new_run_folder(out)
    cases, ds = discover_volume_cases(setup.data)
    by_key = {c.key: c for c in cases}
    split = _split(setup, cases)
    if not split["train"]:
        raise ConfigError("the split leaves no training cases", hint="use a larger train fraction in --split")
    train_cases = [by_key[k] for k in split["train"]]
    val_cases = [by_key[k] for k in split["val"]]
    cfg = setup.train
    on_gpu = resolve_device(cfg.device).type == "cuda"
    cache = PreprocessedCache(Path(setup.cache_dir) if setup.cache_dir else out / "preprocessed")

    pre = setup.preprocess
    if pre is None:
        spacing = setup.target_spacing or median_spacing(train_cases)
        stats = foreground_stats(train_cases, cache.folder, cfg.seed) if setup.normalization == "ct" else None
        pre = Preprocess3D(spacing, setup.normalization, stats, setup.crop_to_nonzero)
    declared = ds["labels"]
    values = tuple(sorted(declared)) if declared else None
    log.info("preprocessing %d case(s) to spacing %s (%s normalization) into %s",
             len(train_cases) + len(val_cases), pre.target_spacing, pre.normalization, cache.folder)
    with distributed.main_first():  # DDP: rank 0 fills the cache, the others then read it
        train_pp = preprocess_cases(train_cases, pre, cache, values)
        val_pp = preprocess_cases(val_cases, pre, cache, values)
    scheme = label_scheme(declared, train_pp + val_pp)

    if setup.auto_patch:
        cfg.patch_size = auto_patch_size_3d([c.meta["shape"] for c in train_pp])
    if len(cfg.patch_size) != 3:
        raise ConfigError(f"a 3D patch size needs three numbers, got {cfg.patch_size}", hint="e.g. --patch-size 64x64x48")
    if setup.auto_batch:
        cfg.batch_size = 4 if on_gpu else 2
    model_kwargs = model_kwargs_3d(setup.model, on_gpu, cfg.patch_size, pre.target_spacing, setup.model_kwargs)
    torch.manual_seed(cfg.seed)
    model = create_model(setup.model, 3, ds["num_channels"], scheme.num_classes, **model_kwargs)

    if distributed.is_main():  # rank 0 alone writes (DDP)
        out.mkdir(parents=True, exist_ok=True)
        previous = read_run_info(out, require_model=False) if resume and (out / RUN_FILE).is_file() else {}
        split_info = previous.get("split") or {"file": str(Path(setup.split_file).resolve()) if setup.split_file else None,
                                               "fractions": None if setup.split_file else list(setup.split),
                                               "seed": None if setup.split_file else setup.split_seed}
        write_split(out, setup.data, {name: [_case_entry(by_key[k]) for k in keys] for name, keys in split.items()}, **split_info)
        save_labels_json(out / "labels.json", scheme, scheme.colors())
        write_run_info(out, {
            "task": run_task(3),
            "data": str(Path(setup.data).resolve()),
            "dataset": {k: ds[k] for k in ("name", "layout", "channel_names", "num_channels", "file_ending")},
            "preprocess": pre.to_json(),
            "labels": scheme.to_json(),
            "patch_size": list(cfg.patch_size),
            "model": {"name": setup.model, **model_kwargs},
            "train": cfg.to_json(),
            "split": split_info,
            "counts": {k: len(v) for k, v in split.items()},
            "cache_dir": _relative_to_run(cache.folder, out),
        })
    log.info("training on %d cases, validating on %d (%d test); patch %s, batch %d, %d classes, %s %s",
             len(train_pp), len(val_pp), len(split["test"]), cfg.patch_size, cfg.batch_size, scheme.num_classes,
             setup.model, {k: v for k, v in model_kwargs.items() if k in ("features", "depth", "strides")})

    sampler = PatchSampler([c.image for c in train_pp], [class_ids(c.label[0], scheme) for c in train_pp],
                           cfg.patch_size, scheme.num_classes, cfg.foreground_fraction, seed=cfg.seed)
    val = [(c.image, class_ids(c.label[0], scheme)) for c in val_pp]
    trainer = Trainer(model, sampler, val, cfg, out, scheme.num_classes, callbacks)
    result = trainer.fit(resume=resume)
    if distributed.is_main():
        write_curves(out)
    return result


def _relative_to_run(folder: Path, run_dir: Path) -> str:
    """``folder`` relative to the run folder when it lies inside it (so it moves with the run), else absolute."""
    folder, run_dir = folder.resolve(), run_dir.resolve()
    return folder.relative_to(run_dir).as_posix() if folder.is_relative_to(run_dir) else str(folder)


def setup_from_run_3d(run_dir: str | Path) -> TrainSetup3D:
    """Rebuild the :class:`TrainSetup3D` of an existing 3D run (for ``--resume``): same split,
    preprocessing, patch, batch and network."""
    run_dir = Path(run_dir)
    info = read_run_info(run_dir, require_model=False)
    model = dict(info["model"])
    return TrainSetup3D(
        data=info["data"], out=str(run_dir), split_file=str(run_dir / "split.json"),
        model=model.pop("name"), model_kwargs=model, train=TrainConfig.from_json(info["train"]),
        auto_patch=False, auto_batch=False,
        cache_dir=str(run_dir / info["cache_dir"]) if info.get("cache_dir") else None,  # relative: inside the run folder
        preprocess=Preprocess3D.from_json(info["preprocess"]),
    )
