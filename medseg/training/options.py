"""What a user sets for training, declared once: :class:`SetupOptions`, and :func:`build_setup`.

Each field carries its command-line help (and flag names where they differ from the field's), so
``medseg train`` and ``medseg compare`` build their options from this one declaration
(:func:`medseg.cli.setup_options.with_setup_options`); :func:`build_setup` turns them into a
:class:`~medseg.training.setup.TrainSetup` for the data at hand, refusing options of the other kind
of data (2D folder options for a 3D dataset, and the reverse).
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from medseg.data.dataset2d import DataOptions2D
from medseg.data.dataset_kind import is_volume_dataset
from medseg.data.preprocess2d import Preprocess2D
from medseg.data.split import parse_fractions
from medseg.errors import ConfigError
from medseg.training.config import TrainConfig
from medseg.training.setup import TrainSetup
from medseg.units import parse_duration, parse_size, parse_size_3d, parse_spacing


def opt(default: Any, help: str, *flags: str, **typer_kwargs: Any) -> Any:
    """A field with its command-line help, optional flag names and typer arguments (``min``, ``max``)."""
    return field(default=default, metadata={"help": help, "flags": flags, "typer": typer_kwargs})


@dataclass
class SetupOptions:
    # network
    model: str = opt("unet", "Network name (see `medseg models`).")
    features: int | None = opt(None, "Width: channels of the first stage (U-Net default 16 on CPU, 32 on GPU; the classic U-Net is 64).", min=1)
    depth: int | None = opt(None, "Downsampling steps of U-Net-style models.", min=1)
    dropout: float | None = opt(None, "Bottleneck dropout rate.", min=0.0, max=0.99)
    deep_supervision: bool | None = opt(None, "unet/resunet: also train outputs at lower scales (loss weights halving per scale, as nnU-Net).",
                                        "--deep-supervision/--no-deep-supervision")
    # 2D images
    size: str | None = opt(None, "2D: resize images to HxW (e.g. 256 or 256x320); default: the planned working resolution.")
    scale: float | None = opt(None, "2D working resolution: resample every image by this factor (0.5 halves each side); default: planned from the objects' sizes.", "--scale", min=0.01, max=4.0)
    long_side: int | None = opt(None, "2D working resolution: resample each image so that its longer side has this many pixels.", "--long-side", min=8)
    median: int = opt(0, "2D: median-filter size in pixels (0 = off).")
    images: str | None = opt(None, "2D: image subfolder (detected by default).")
    masks: str | None = opt(None, "2D: mask subfolder (detected by default).")
    fov: str | None = opt(None, "2D: field-of-view mask subfolder (detected by default).")
    pair_pattern: str | None = opt(None, "2D: regex on file names whose group 'key' (or group 1) pairs images and masks.")
    group_pattern: str | None = opt(None, "2D: regex whose group 'group' (or group 1) is the patient id, for a leak-free split.")
    groups_csv: str | None = opt(None, "2D: CSV file,group giving each image's patient.")
    label_colors: str | None = opt(None, "2D: class colours 'name=r,g,b;...' or a labels.json path.")
    num_classes: int | None = opt(None, "2D: expected number of classes incl. background.")
    allow_new_labels: bool = opt(False, "2D: accept mask values found in only a few masks (or not in labels.json) as classes; "
                                 "they are refused as stray values otherwise.", "--allow-new-labels")
    channels: int | None = opt(None, "2D: convert every image to 1 (grey) or 3 (colour) channels; default: the count all "
                               "images share (mixed grey and colour images are refused).", "--channels", min=1, max=4)
    # 3D volumes
    target_spacing: str | None = opt(None, "3D: network grid spacing in mm, e.g. 1 or 0.8x0.8x2.5 (default: median of the training cases).")
    crop_nonzero: bool = opt(True, "3D: crop each volume to its non-zero box first.")
    cache_dir: Path | None = opt(None, "3D: folder for the preprocessed cases (default RUN/preprocessed).")
    # both
    normalize: str = opt("zscore", "zscore | minmax | none; 3D also ct (clip and scale by the training foreground's statistics).",
                         "--normalize", "--normalization")
    split: str = opt("60/20/20", "train/val/test percentages (or fractions).")
    split_file: Path | None = opt(None, 'JSON with "train", "val" and "test" lists of case names, file names or paths fixing the split; without "val", validation cases are drawn from "train" in the proportion of --split.')
    split_seed: int = opt(0, "Seed of the split.")
    # training
    epochs: int | None = opt(500, "Maximum epochs.", min=1)
    iterations: int = opt(50, "Training steps per epoch.", min=1)
    batch_size: int | None = opt(None, "Patches per step (default 8 in 2D; 3D: 2 on CPU, 4 on GPU).", min=1)
    patch_size: str | None = opt(None, "Training patch: HxW in 2D, XxYxZ in 3D (one number: all axes); default: whole images up to 128 px a side on CPU (256 on GPU), in 3D the median volume up to 128 per axis.")
    lr: float = opt(1e-3, "Learning rate.")
    optimizer: str = opt("adam", "adam | adamw | sgd.")
    schedule: str = opt("cosine", "constant | cosine | poly.")
    patience: int = opt(30, "Early stopping: epochs without improvement (0 = off).")
    monitor: str = opt("val_loss", "val_loss | val_dice: the checkpoint kept and early stopping (a plan sets val_dice).")
    time_budget: str | None = opt(None, "Training time budget, e.g. 15m; the LR schedule fits it.", "--time-budget", "--budget")
    seed: int = opt(0, "Random seed.")
    device: str = opt("auto", "auto | cpu | cuda | cuda:N.")
    threads: int | None = opt(None, "CPU threads (default: all cores).", min=1)
    augment: bool = opt(True, "Flips, rotation/scaling and intensity augmentation.")
    augment_warmup: float = opt(0.0, "Fraction of training over which the augmentation's probabilities rise from 0 to full (e.g. 0.5); 0: full from the start.",
                                "--augment-warmup", min=0.0, max=0.99)
    checkpoint_every: str = opt("5m", "Interval of resumable checkpoints (also mid-epoch), e.g. 5m or 30s; one is also written at every new best score.")
    deterministic: bool = opt(False, "Deterministic algorithms and saved random states: a resumed run ends with the same weights as an uninterrupted one (epoch-based schedules).", "--deterministic")
    compile: bool = opt(False, "torch.compile the model (falls back to eager with a warning when that fails).", "--compile")
    ema: float = opt(0.0, "Validate and save an exponential moving average of the weights with this per-step decay (e.g. 0.995); 0: off.", "--ema", min=0.0, max=0.9999)
    loader_workers: int | None = opt(None, "Threads cropping the next batches during each step (default: 2 on CUDA, 0 on CPU); the batches are the same for any number.", "--loader-workers", min=0)


#: options that apply to one kind of data only
ONLY_2D = ("size", "scale", "long_side", "median", "images", "masks", "fov", "pair_pattern", "group_pattern", "groups_csv",
           "label_colors", "num_classes", "allow_new_labels", "channels")
ONLY_3D = ("target_spacing", "crop_nonzero", "cache_dir")


def _flag(name: str) -> str:
    f = next(f for f in fields(SetupOptions) if f.name == name)
    return next((x.split("/")[0] for x in f.metadata["flags"] if x.startswith("--")), "--" + name.replace("_", "-"))


def build_setup(data: str | Path, out: str | Path, o: SetupOptions, given: set[str] = frozenset()) -> TrainSetup:
    """The :class:`TrainSetup` of options ``o`` for the data folder ``data`` (2D images or a 3D dataset).

    ``given`` names the options set on the command line; one that applies to the other kind of data is
    an error naming it."""
    dims = 3 if is_volume_dataset(data) else 2
    wrong = [n for n in (ONLY_3D if dims == 2 else ONLY_2D) if n in given]
    if wrong:
        flags = ", ".join(_flag(n) for n in wrong)
        raise ConfigError(f"{flags} appl{'ies' if len(wrong) == 1 else 'y'} to {'3D datasets' if dims == 2 else '2D image folders'}, "
                          f"but {data} {'holds 2D images' if dims == 2 else 'is a 3D dataset'}",
                          hint="leave them out" + (", or point to a 3D dataset folder" if dims == 2 else ""))
    patch = parse_size(o.patch_size) if dims == 2 else parse_size_3d(o.patch_size)
    train = TrainConfig(
        patch_size=patch or ((128, 128) if dims == 2 else (64, 64, 64)), batch_size=o.batch_size or 8,
        iterations_per_epoch=o.iterations, max_epochs=o.epochs or 500, time_budget=parse_duration(o.time_budget),
        optimizer=o.optimizer, lr=o.lr, schedule=o.schedule, patience=o.patience, monitor=o.monitor, seed=o.seed,
        device=o.device, threads=o.threads, augment=o.augment, augment_warmup=o.augment_warmup,
        checkpoint_every=parse_duration(o.checkpoint_every), deterministic=o.deterministic, compile=o.compile,
        loader_workers=o.loader_workers, ema_decay=o.ema,
    )
    model_kwargs = {k: v for k, v in {"features": o.features, "depth": o.depth, "dropout": o.dropout}.items() if v is not None}
    if o.deep_supervision is not None:
        if o.model not in ("unet", "resunet"):
            raise ConfigError(f"--deep-supervision applies to unet and resunet, not {o.model}", hint="leave it out")
        model_kwargs["deep_supervision"] = o.deep_supervision
    return TrainSetup(
        data=str(data), out=str(out), dims=dims,
        data_options=DataOptions2D(o.images, o.masks, o.fov, o.pair_pattern, o.group_pattern, o.groups_csv, o.label_colors,
                                   o.num_classes, o.allow_new_labels, o.channels),
        preprocess=(Preprocess2D(size=parse_size(o.size), median=o.median, normalize=o.normalize, scale=o.scale,
                                 long_side=o.long_side) if dims == 2 else None),
        target_spacing=parse_spacing(o.target_spacing), normalization=o.normalize, crop_to_nonzero=o.crop_nonzero,
        split=parse_fractions(o.split), split_seed=o.split_seed, split_file=str(o.split_file) if o.split_file else None,
        model=o.model, model_kwargs=model_kwargs, train=train, auto_patch=patch is None, auto_batch=o.batch_size is None,
        cache_dir=str(o.cache_dir) if o.cache_dir else None,
    )
