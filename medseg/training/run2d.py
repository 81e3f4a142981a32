"""Training on a folder of 2D images and masks: the `medseg train` pipeline.

data folder → cases and label scheme → seeded, group-aware split → preprocessing
→ U-Net (or any registered model) → :class:`~medseg.training.engine.Trainer` →
run folder (weights + config + split + history + curves).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from medseg.data.dataset2d import DataOptions2D, Dataset2D, load_samples, prepare_dataset, save_labels_json
from medseg.data.labels import LabelScheme
from medseg.data.preprocess2d import Preprocess2D
from medseg.data.sampling import PatchSampler
from medseg.data.split import case_aliases, complete_split, read_split_file, split_cases
from medseg.errors import ConfigError, DataError
from medseg.models import create_model
from medseg.runfolder import check_new_run_folder, run_task, write_run_info
from medseg.runfolder.split import SplitEntry, write_split
from medseg.runtime import distributed
from medseg.training.config import TrainConfig
from medseg.runtime.device import resolve_device
from medseg.training.engine import Callbacks, Trainer, TrainResult

log = logging.getLogger(__name__)

def default_model_kwargs(model: str, on_gpu: bool) -> dict[str, Any]:
    """Hand-set defaults until the planner sizes networks: a narrower U-Net on CPUs."""
    if model == "unet":
        return {"features": 32 if on_gpu else 16, "depth": 4, "dropout": 0.1}
    return {}


@dataclass
class TrainSetup2D:
    """Everything `medseg train` needs for a 2D dataset (JSON-serialisable)."""

    data: str
    out: str
    data_options: DataOptions2D = field(default_factory=DataOptions2D)
    preprocess: Preprocess2D | None = None   # channels filled in from the data
    split: tuple[float, float, float] = (0.6, 0.2, 0.2)
    split_seed: int = 0
    split_file: str | None = None  #: train/val/test lists of case names; without "val", it is drawn from "train"
    model: str = "unet"
    model_kwargs: dict[str, Any] = field(default_factory=dict)
    train: TrainConfig = field(default_factory=TrainConfig)
    auto_patch: bool = True


def auto_patch_size(sizes: list[tuple[int, int]], divisor: int = 16, cap: int = 128) -> tuple[int, int]:
    """Whole images when they are small; otherwise a patch of at most ``cap`` pixels a side
    (128 on CPUs, where more steps beat more context in a fixed time; 256 on GPUs)."""
    h = max(s[0] for s in sizes)
    w = max(s[1] for s in sizes)
    up = lambda v: -(-v // divisor) * divisor  # noqa: E731
    return (min(up(h), cap), min(up(w), cap))


def _split(ds: Dataset2D, fractions, seed: int, split_file: str | None = None) -> dict[str, list[str]]:
    """The split: a split file; else the official one that folders named ``train``/``test`` give (validation
    drawn from training when there is no ``val`` folder); else seeded, group-aware fractions."""
    keys = [c.key for c in ds.cases]
    groups = dict(zip(keys, (c.group for c in ds.cases)))
    if split_file:
        return complete_split(read_split_file(split_file, keys, case_aliases(ds.cases, ds.root)), groups, fractions, seed)
    if any(c.subset for c in ds.cases):
        by_folder = {s: [c.key for c in ds.cases if (c.subset or "train") == s] for s in ("train", "val", "test")}
        log.info("the folders give the split: %d training, %d validation, %d test cases%s", len(by_folder["train"]),
                 len(by_folder["val"]), len(by_folder["test"]),
                 "" if by_folder["val"] else " (validation is drawn from the training cases)")
        return complete_split({**by_folder, "val": by_folder["val"] or None}, groups, fractions, seed)
    return split_cases(keys, list(groups.values()), fractions=fractions, seed=seed)


def _load(cases, pre: Preprocess2D, scheme: LabelScheme) -> list:
    return load_samples(cases, pre, scheme)


def train_2d(setup: TrainSetup2D, callbacks: Callbacks | None = None, resume: bool = False) -> TrainResult:
    out = Path(setup.out)
    if not resume and distributed.is_main():
        check_new_run_folder(out)
    ds = prepare_dataset(setup.data, setup.data_options)
    if ds.scheme.num_classes < 2:
        raise DataError("the masks hold a single class; segmentation needs at least background and one class", path=setup.data)
    pre = setup.preprocess or Preprocess2D()
    pre.channels = ds.channels
    split = _split(ds, setup.split, setup.split_seed, setup.split_file)
    by_key = {c.key: c for c in ds.cases}
    if not split["train"]:
        raise ConfigError("the split leaves no training images", hint="use a larger train fraction in --split")

    train_samples = _load([by_key[k] for k in split["train"]], pre, ds.scheme)
    val_samples = _load([by_key[k] for k in split["val"]], pre, ds.scheme)
    _load([by_key[k] for k in split["test"]], pre, ds.scheme)  # read once now: a bad test file fails before training
    cfg = setup.train
    on_gpu = resolve_device(cfg.device).type == "cuda"
    if setup.auto_patch:
        cfg.patch_size = auto_patch_size([s.image.shape[1:] for s in train_samples], cap=256 if on_gpu else 128)
    model_kwargs = {**default_model_kwargs(setup.model, on_gpu), **setup.model_kwargs}
    torch.manual_seed(cfg.seed)
    model = create_model(setup.model, 2, ds.channels, ds.scheme.num_classes, **model_kwargs)

    if distributed.is_main():  # rank 0 alone writes (DDP)
        out.mkdir(parents=True, exist_ok=True)
        write_split(out, setup.data, {name: [SplitEntry(k, (by_key[k].image,), by_key[k].masks, by_key[k].fov, by_key[k].group)
                                             for k in keys] for name, keys in split.items()},
                    fractions=list(setup.split), seed=setup.split_seed,
                    file=str(Path(setup.split_file).resolve()) if setup.split_file else None)
        save_labels_json(out / "labels.json", ds.scheme, ds.display_colors)
        write_run_info(out, {
            "task": run_task(2),
            "data": str(Path(setup.data).resolve()),
            "data_options": setup.data_options.to_json(),
            "preprocess": pre.to_json(),
            "labels": ds.scheme.to_json(),
            "display_colors": [list(c) for c in ds.display_colors],
            "model": {"name": setup.model, **model_kwargs},
            "train": cfg.to_json(),
            "split": {"fractions": list(setup.split), "seed": setup.split_seed,
                      "file": str(Path(setup.split_file).resolve()) if setup.split_file else None},
            "counts": {k: len(v) for k, v in split.items()},
        })
    log.info("training on %d images, validating on %d, %d held out for testing; patch %s, %d classes",
             len(train_samples), len(val_samples), len(split["test"]), cfg.patch_size, ds.scheme.num_classes)

    sampler = PatchSampler([s.image for s in train_samples], [s.label for s in train_samples], cfg.patch_size,
                           ds.scheme.num_classes, cfg.foreground_fraction, seed=cfg.seed)
    trainer = Trainer(model, sampler, [(s.image, s.label) for s in val_samples], cfg, out, ds.scheme.num_classes, callbacks)
    result = trainer.fit(resume=resume)
    if distributed.is_main():
        write_curves(out)
    return result


def write_curves(run_dir: Path) -> list[Path]:
    from medseg.evaluation.plots import plot_history
    from medseg.runfolder.history import read_history

    rows = read_history(run_dir / "history.csv")
    return plot_history(rows, run_dir / "plots") if rows else []


def setup_from_run(run_dir: str | Path) -> TrainSetup2D:
    """Rebuild the :class:`TrainSetup2D` of an existing run (for ``--resume``)."""
    from medseg.runfolder import read_run_info

    run_dir = Path(run_dir)
    info = read_run_info(run_dir, require_model=False)
    split = info["split"]
    return TrainSetup2D(
        data=info["data"], out=str(run_dir), data_options=DataOptions2D(**info["data_options"]),
        preprocess=Preprocess2D.from_json(info["preprocess"]), split=tuple(split["fractions"]), split_seed=split["seed"],
        split_file=str(run_dir / "split.json"),  # the run's own split, whatever made it
        model=info["model"]["name"], model_kwargs={k: v for k, v in info["model"].items() if k != "name"},
        train=TrainConfig.from_json(info["train"]), auto_patch=False,
    )


