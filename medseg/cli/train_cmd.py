"""``medseg train DATA --out RUN``."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from medseg.cli.main import console
from medseg.cli.options import parse_size
from medseg.errors import ConfigError


def train(
    data: Optional[Path] = typer.Argument(None, help="Data folder (images + masks). Not needed with --resume."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Run folder to create."),
    resume: Optional[Path] = typer.Option(None, "--resume", help="Continue the run in this folder after an interruption."),
    model: str = typer.Option("unet", help="Network name (see `medseg models`)."),
    features: Optional[int] = typer.Option(None, help="Width: channels of the first stage (U-Net default 16 on CPU, 32 on GPU; the classic U-Net is 64)."),
    depth: Optional[int] = typer.Option(None, help="Downsampling steps of U-Net-style models."),
    dropout: Optional[float] = typer.Option(None, help="Bottleneck dropout rate."),
    size: Optional[str] = typer.Option(None, help="Resize images to HxW (e.g. 256 or 256x320); default keeps their size."),
    median: int = typer.Option(0, help="Median-filter size in pixels (0 = off)."),
    normalize: str = typer.Option("zscore", help="zscore | minmax | none."),
    split: str = typer.Option("60/20/20", help="train/val/test percentages (or fractions)."),
    split_seed: int = typer.Option(0, help="Seed of the split."),
    images: Optional[str] = typer.Option(None, help="Image subfolder (detected by default)."),
    masks: Optional[str] = typer.Option(None, help="Mask subfolder (detected by default)."),
    fov: Optional[str] = typer.Option(None, help="Field-of-view mask subfolder (detected by default)."),
    pair_pattern: Optional[str] = typer.Option(None, help="Regex on file names whose group 'key' (or group 1) pairs images and masks."),
    group_pattern: Optional[str] = typer.Option(None, help="Regex whose group 'group' (or group 1) is the patient id, for a leak-free split."),
    groups_csv: Optional[str] = typer.Option(None, help="CSV file,group giving each image's patient."),
    label_colors: Optional[str] = typer.Option(None, help="Class colours 'name=r,g,b;...' or a labels.json path."),
    num_classes: Optional[int] = typer.Option(None, help="Expected number of classes incl. background."),
    epochs: int = typer.Option(500, help="Maximum epochs."),
    iterations: int = typer.Option(50, help="Training steps per epoch."),
    batch_size: int = typer.Option(8, help="Patches per step."),
    patch_size: Optional[str] = typer.Option(None, help="Training patch HxW; default: whole images up to 128 px a side on CPU (256 on GPU)."),
    lr: float = typer.Option(1e-3, help="Learning rate."),
    optimizer: str = typer.Option("adam", help="adam | adamw | sgd."),
    schedule: str = typer.Option("cosine", help="constant | cosine | poly."),
    patience: int = typer.Option(30, help="Early stopping: epochs without improvement (0 = off)."),
    monitor: str = typer.Option("val_loss", help="val_loss | val_dice."),
    time_budget: Optional[str] = typer.Option(None, help="Training time budget, e.g. 15m; the LR schedule fits it."),
    seed: int = typer.Option(0, help="Random seed."),
    device: str = typer.Option("auto", help="auto | cpu | cuda | cuda:N."),
    threads: Optional[int] = typer.Option(None, help="CPU threads (default: all cores)."),
    augment: bool = typer.Option(True, help="Flips, rotation/scaling and intensity augmentation."),
) -> None:
    """Train a segmentation model on a folder of images and masks."""
    from medseg.cli.progress import TrainProgress
    from medseg.data.dataset2d import DataOptions2D
    from medseg.data.preprocess2d import Preprocess2D
    from medseg.data.split import parse_fractions
    from medseg.training.config import TrainConfig, parse_duration
    from medseg.training.run2d import TrainSetup2D, setup_from_run, train_2d

    if resume is not None:
        setup = setup_from_run(resume)
    else:
        if data is None or out is None:
            raise ConfigError("give a data folder and --out RUN (or --resume RUN)", hint="medseg train DATA --out RUN")
        psize = parse_size(patch_size)
        setup = TrainSetup2D(
            data=str(data), out=str(out),
            data_options=DataOptions2D(images, masks, fov, pair_pattern, group_pattern, groups_csv, label_colors, num_classes),
            preprocess=Preprocess2D(size=parse_size(size), median=median, normalize=normalize),
            split=parse_fractions(split), split_seed=split_seed, model=model,
            model_kwargs={"features": features, "depth": depth, "dropout": dropout},
            train=TrainConfig(
                patch_size=psize or (128, 128), batch_size=batch_size, iterations_per_epoch=iterations, max_epochs=epochs,
                time_budget=parse_duration(time_budget), optimizer=optimizer, lr=lr, schedule=schedule,
                patience=patience, monitor=monitor, seed=seed, device=device, threads=threads, augment=augment,
            ),
            auto_patch=psize is None,
        )
        setup.model_kwargs = {k: v for k, v in setup.model_kwargs.items() if v is not None}
    hint = f"budget {setup.train.time_budget:.0f}s" if setup.train.time_budget else f"{setup.train.max_epochs} epochs max"
    with TrainProgress(console, hint) as progress:
        result = train_2d(setup, callbacks=progress, resume=resume is not None)
    console.print(
        f"[green]done[/]: {result.epochs} epochs in {result.elapsed:.0f} s, stopped by {result.stopped_by}; "
        f"best epoch {result.best_epoch} ({setup.train.monitor} {result.best_score:.4f})\nrun folder: {setup.out}",
        highlight=False,
    )
