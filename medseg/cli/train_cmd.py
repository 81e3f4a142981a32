"""``medseg train DATA --out RUN``: 2D image folders, or 3D volume datasets (detected)."""

from __future__ import annotations

from contextlib import nullcontext
from pathlib import Path
from typing import Optional

import typer

from medseg.cli.main import console
from medseg.cli.options import parse_size, parse_size_3d, parse_spacing
from medseg.errors import ConfigError


def train(
    ctx: typer.Context,
    data: Optional[Path] = typer.Argument(None, help="Data folder: 2D images + masks, or a 3D dataset (dataset.json, imagesTr/, or images/ + labels/ with volumes). Not needed with --resume."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Run folder to create."),
    resume: Optional[Path] = typer.Option(None, "--resume", help="Continue the run in this folder after an interruption."),
    model: str = typer.Option("unet", help="Network name (see `medseg models`)."),
    features: Optional[int] = typer.Option(None, help="Width: channels of the first stage (U-Net default 16 on CPU, 32 on GPU; the classic U-Net is 64)."),
    depth: Optional[int] = typer.Option(None, help="Downsampling steps of U-Net-style models."),
    dropout: Optional[float] = typer.Option(None, help="Bottleneck dropout rate."),
    size: Optional[str] = typer.Option(None, help="Resize images to HxW (e.g. 256 or 256x320); default: the planned working resolution."),
    scale: Optional[float] = typer.Option(None, "--scale", min=0.01, max=4.0, help="2D working resolution: resample every image by this factor (0.5 halves each side); default: planned from the objects' sizes."),
    long_side: Optional[int] = typer.Option(None, "--long-side", min=8, help="2D working resolution: resample each image so that its longer side has this many pixels."),
    median: int = typer.Option(0, help="Median-filter size in pixels (0 = off)."),
    normalize: str = typer.Option("zscore", "--normalize", "--normalization", help="zscore | minmax | none; 3D also ct (clip and scale by the training foreground's statistics)."),
    split: str = typer.Option("60/20/20", help="train/val/test percentages (or fractions)."),
    split_file: Optional[Path] = typer.Option(None, help='JSON {"train": [cases], "val": [cases], "test": [cases]} fixing the split (case names or file names); without "val", validation cases are drawn from "train" in the proportion of --split.'),
    target_spacing: Optional[str] = typer.Option(None, help="3D: network grid spacing in mm, e.g. 1 or 0.8x0.8x2.5 (default: median of the training cases)."),
    crop_nonzero: bool = typer.Option(True, help="3D: crop each volume to its non-zero box first."),
    cache_dir: Optional[Path] = typer.Option(None, help="3D: folder for the preprocessed cases (default RUN/preprocessed)."),
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
    batch_size: Optional[int] = typer.Option(None, help="Patches per step (default 8 in 2D; 3D: 2 on CPU, 4 on GPU)."),
    patch_size: Optional[str] = typer.Option(None, help="Training patch: HxW in 2D, XxYxZ in 3D (one number: all axes); default: whole images up to 128 px a side on CPU (256 on GPU), in 3D the median volume up to 128 per axis."),
    lr: float = typer.Option(1e-3, help="Learning rate."),
    optimizer: str = typer.Option("adam", help="adam | adamw | sgd."),
    schedule: str = typer.Option("cosine", help="constant | cosine | poly."),
    patience: int = typer.Option(30, help="Early stopping: epochs without improvement (0 = off)."),
    monitor: str = typer.Option("val_loss", help="val_loss | val_dice (a plan sets val_dice; --no-plan keeps val_loss)."),
    time_budget: Optional[str] = typer.Option(None, help="Training time budget, e.g. 15m; the LR schedule fits it."),
    seed: int = typer.Option(0, help="Random seed."),
    device: str = typer.Option("auto", help="auto | cpu | cuda | cuda:N."),
    threads: Optional[int] = typer.Option(None, help="CPU threads (default: all cores)."),
    augment: bool = typer.Option(True, help="Flips, rotation/scaling and intensity augmentation."),
    augment_warmup: float = typer.Option(0.0, "--augment-warmup", min=0.0, max=0.99, help="Fraction of training over which the augmentation's probabilities rise from 0 to full (e.g. 0.5); 0: full from the start."),
    checkpoint_every: str = typer.Option("5m", help="Interval of resumable checkpoints (also mid-epoch), e.g. 5m or 30s; one is also written at every new best score."),
    deterministic: bool = typer.Option(False, "--deterministic", help="Deterministic algorithms and saved random states: a resumed run ends with the same weights as an uninterrupted one (epoch-based schedules)."),
    compile_model: bool = typer.Option(False, "--compile", help="torch.compile the model (falls back to eager with a warning when that fails)."),
    ema: float = typer.Option(0.0, "--ema", min=0.0, max=0.9999, help="Validate and save an exponential moving average of the weights with this per-step decay (e.g. 0.995); 0: off."),
    loader_workers: Optional[int] = typer.Option(None, "--loader-workers", min=0, help="Threads cropping the next batches during each step (default: 2 on CUDA, 0 on CPU); the batches are the same for any number."),
    deep_supervision: Optional[bool] = typer.Option(None, "--deep-supervision/--no-deep-supervision", help="unet/resunet: also train outputs at lower scales (loss weights halving per scale, as nnU-Net)."),
    plan: Optional[Path] = typer.Option(None, "--plan", help="Use this plan.json (see `medseg plan`); flags given here override single entries. Default: plan from the data, saved as RUN/plan.json."),
    no_plan: bool = typer.Option(False, "--no-plan", help="Hand-set defaults instead of a plan (as before planning)."),
) -> None:
    """Train a segmentation model on a folder of images and masks, or on a 3D volume dataset."""
    from medseg.cli.progress import TrainProgress
    from medseg.data.dataset2d import DataOptions2D
    from medseg.data.layouts import is_volume_dataset
    from medseg.data.preprocess2d import Preprocess2D
    from medseg.data.split import parse_fractions
    from medseg.runfolder import read_run_info, run_task
    from medseg.runtime import distributed
    from medseg.training.config import TrainConfig
    from medseg.units import parse_duration
    from medseg.training.run2d import TrainSetup2D, setup_from_run, train_2d
    from medseg.training.run3d import TrainSetup3D, setup_from_run_3d, train_3d

    distributed.init_from_env(device)  # a no-op unless launched by torchrun
    if resume is not None:
        task = read_run_info(resume, require_model=False).get("task")
        setup = setup_from_run_3d(resume) if task == run_task(3) else setup_from_run(resume)
    else:
        if data is None or out is None:
            raise ConfigError("give a data folder and --out RUN (or --resume RUN)", hint="medseg train DATA --out RUN")
        volumes = is_volume_dataset(data)
        psize = parse_size_3d(patch_size) if volumes else parse_size(patch_size)
        train_cfg = TrainConfig(
            patch_size=psize or ((64, 64, 64) if volumes else (128, 128)), batch_size=batch_size or 8,
            iterations_per_epoch=iterations, max_epochs=epochs, time_budget=parse_duration(time_budget),
            optimizer=optimizer, lr=lr, schedule=schedule, patience=patience, monitor=monitor, seed=seed,
            device=device, threads=threads, augment=augment, augment_warmup=augment_warmup, checkpoint_every=parse_duration(checkpoint_every),
            deterministic=deterministic, compile=compile_model, loader_workers=loader_workers,
            ema_decay=ema,
        )
        model_kwargs = {k: v for k, v in {"features": features, "depth": depth, "dropout": dropout}.items() if v is not None}
        if volumes:
            two_d = {"--size": size, "--scale": scale, "--long-side": long_side, "--median": median or None, "--images": images, "--masks": masks, "--fov": fov,
                     "--pair-pattern": pair_pattern, "--group-pattern": group_pattern, "--groups-csv": groups_csv,
                     "--label-colors": label_colors, "--num-classes": num_classes}
            given = [k for k, v in two_d.items() if v is not None]
            if given:
                raise ConfigError(f"{', '.join(given)} appl{'ies' if len(given) == 1 else 'y'} to 2D image folders, "
                                  f"but {data} is a 3D dataset", hint="leave them out")
            setup = TrainSetup3D(
                data=str(data), out=str(out), target_spacing=parse_spacing(target_spacing), normalization=normalize,
                crop_to_nonzero=crop_nonzero, split_file=str(split_file) if split_file else None,
                split=parse_fractions(split), split_seed=split_seed, model=model, model_kwargs=model_kwargs,
                train=train_cfg, auto_patch=psize is None, auto_batch=batch_size is None,
                cache_dir=str(cache_dir) if cache_dir else None,
            )
        else:
            three_d = {"--target-spacing": target_spacing, "--cache-dir": cache_dir,
                       "--no-crop-nonzero": None if crop_nonzero else True}
            given = [k for k, v in three_d.items() if v is not None]
            if given:
                raise ConfigError(f"{', '.join(given)} appl{'ies' if len(given) == 1 else 'y'} to 3D datasets, "
                                  f"but {data} holds 2D images", hint="leave them out, or point to a 3D dataset folder")
            setup = TrainSetup2D(
                data=str(data), out=str(out),
                data_options=DataOptions2D(images, masks, fov, pair_pattern, group_pattern, groups_csv, label_colors, num_classes),
                preprocess=Preprocess2D(size=parse_size(size), median=median, normalize=normalize, scale=scale, long_side=long_side),
                split=parse_fractions(split), split_seed=split_seed, split_file=str(split_file) if split_file else None,
                model=model, model_kwargs=model_kwargs, train=train_cfg, auto_patch=psize is None,
            )
    if resume is None and not no_plan:
        _apply_plan(setup, plan, _given_options(ctx))
    elif plan is not None:
        raise ConfigError("--plan cannot be combined with " + ("--resume" if resume is not None else "--no-plan"),
                          hint="a resumed run keeps its own settings" if resume is not None else "leave one of them out")
    if deep_supervision is not None and resume is None:
        if setup.model not in ("unet", "resunet"):
            raise ConfigError(f"--deep-supervision applies to unet and resunet, not {setup.model}", hint="leave it out")
        setup.model_kwargs["deep_supervision"] = deep_supervision
    run = train_3d if isinstance(setup, TrainSetup3D) else train_2d
    hint = f"budget {setup.train.time_budget:.0f}s" if setup.train.time_budget else f"{setup.train.max_epochs} epochs max"
    main_rank = distributed.context().is_main  # under torchrun, rank 0 alone reports and writes
    try:
        with TrainProgress(console, hint) if main_rank else nullcontext() as progress:
            result = run(setup, callbacks=progress, resume=resume is not None)
    finally:
        distributed.cleanup()
    if not main_rank:
        return
    from medseg.evaluation.report import write_report

    console.print(f"report: {write_report(setup.out)}", highlight=False)
    console.print(
        f"[green]done[/]: {result.epochs} epochs in {result.elapsed:.0f} s, stopped by {result.stopped_by}; "
        f"best epoch {result.best_epoch} ({setup.train.monitor} {result.best_score:.4f})\nrun folder: {setup.out}",
        highlight=False,
    )


def _given_options(ctx: typer.Context) -> set[str]:
    """Names of the options given on the command line (not left at their defaults)."""
    return {name for name in ctx.params if getattr(ctx.get_parameter_source(name), "name", "") == "COMMANDLINE"}


def _apply_plan(setup, plan_file: Optional[Path], given: set[str]) -> None:
    """The plan (``--plan FILE``, or one made from the data with a progress bar) into ``setup``;
    the options in ``given`` (given on the command line) override its entries."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from medseg.training.planned import plan_for_training

    with Progress(TextColumn("fingerprint"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=console, transient=True) as bar:
        task = bar.add_task("cases", total=None)
        _, plan, overrides = plan_for_training(setup, plan_file, given,
                                               progress=lambda done, total: bar.update(task, completed=done, total=total))
    p = plan.sections
    console.print(f"plan ({'from ' + str(plan_file) if plan_file else 'made from the data'}, saved as {setup.out}/plan.json): "
                  f"{p['configuration']['value']}, patch {'x'.join(map(str, setup.train.patch_size))}, "
                  f"batch {setup.train.batch_size}, {setup.model} depth {setup.model_kwargs.get('depth', '-')}"
                  + (f"; overridden: {', '.join(overrides)}" if overrides else ""), highlight=False)
