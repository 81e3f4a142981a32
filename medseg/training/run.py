"""`medseg train`: a :class:`~medseg.training.setup.TrainSetup` → a trained run folder, 2D or 3D.

data folder → cases, split and preprocessed arrays (:mod:`medseg.training.data`) → patch, batch and
network (planned, or hand-set defaults) → :class:`~medseg.training.engine.Trainer` → run folder
(weights + config + split + history + curves; :mod:`medseg.runfolder`).
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch

from medseg.data.dataset2d import save_labels_json
from medseg.data.sampling import PatchSampler
from medseg.errors import ConfigError
from medseg.models import create_model
from medseg.runfolder import RUN_FILE, check_new_run_folder, read_run_info, run_task, write_run_info
from medseg.runfolder.history import read_history
from medseg.runfolder.split import write_split
from medseg.runtime import distributed
from medseg.runtime.device import resolve_device
from medseg.runtime.environment import environment
from medseg.training.data import prepare
from medseg.training.engine import Callbacks, Trainer, TrainResult
from medseg.training.setup import HAND_SET, TrainSetup, auto_patch_size, hand_set_model_kwargs

log = logging.getLogger(__name__)


def train(setup: TrainSetup, callbacks: Callbacks | None = None, resume: bool = False) -> TrainResult:
    """Prepare the data, size patch and network, train, and write the run folder."""
    out = Path(setup.out)
    if not resume and distributed.is_main():
        check_new_run_folder(out)
    data = prepare(setup, out)
    cfg, dims = setup.train, setup.dims
    on_gpu = resolve_device(cfg.device).type == "cuda"
    if setup.auto_patch:
        cfg.patch_size = auto_patch_size(data.shapes, dims, on_gpu)
    if len(cfg.patch_size) != dims:
        raise ConfigError(f"a {dims}D patch size needs {dims} numbers, got {cfg.patch_size}",
                          hint="e.g. --patch-size 128x128 in 2D, 64x64x48 in 3D")
    if setup.auto_batch and HAND_SET[dims]["batch"]:
        cfg.batch_size = HAND_SET[dims]["batch"][0 if on_gpu else 1]
    model_kwargs = hand_set_model_kwargs(setup, on_gpu, cfg.patch_size, data.spacing)
    torch.manual_seed(cfg.seed)
    k = data.scheme.num_classes
    model = create_model(setup.model, dims, data.channels, k, **model_kwargs)

    if distributed.is_main():  # rank 0 alone writes (DDP)
        out.mkdir(parents=True, exist_ok=True)
        previous = read_run_info(out, require_model=False) if resume and (out / RUN_FILE).is_file() else {}
        split_meta = previous.get("split") or setup.split_meta()  # a resumed run keeps how its split was made
        write_split(out, setup.data, {name: [data.entries[key] for key in keys] for name, keys in data.split.items()},
                    **split_meta)
        save_labels_json(out / "labels.json", data.scheme, data.colors)
        write_run_info(out, {
            "task": run_task(dims), "data": str(Path(setup.data).resolve()), "preprocess": data.preprocess.to_json(),
            "labels": data.scheme.to_json(), "patch_size": list(cfg.patch_size), "model": {"name": setup.model, **model_kwargs},
            "train": cfg.to_json(), "split": split_meta, "counts": {s: len(v) for s, v in data.split.items()}, **data.info,
            "environment": environment(cfg.device, cfg.amp),
        })
    log.info("training on %d cases, validating on %d (%d test); patch %s, batch %d, %d classes, %s %s",
             len(data.train_images), len(data.val), len(data.split["test"]), cfg.patch_size, cfg.batch_size, k,
             setup.model, {key: v for key, v in model_kwargs.items() if key in ("features", "depth", "strides")})

    sampler = PatchSampler(data.train_images, data.train_labels, cfg.patch_size, k, cfg.foreground_fraction, seed=cfg.seed)
    trainer = Trainer(model, sampler, data.val, cfg, out, k, callbacks)
    result = trainer.fit(resume=resume)
    if distributed.is_main():
        write_curves(out)
    return result


def write_curves(run_dir: Path) -> list[Path]:
    """``plots/{loss,accuracy,dice}.png`` from the run's ``history.csv``."""
    from medseg.evaluation.plots import plot_history

    rows = read_history(run_dir / "history.csv")
    return plot_history(rows, run_dir / "plots") if rows else []
