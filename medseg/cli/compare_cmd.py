"""``medseg compare DATA --out DIR --models unet,fcn --budget 10m``."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Optional

import typer
from rich import box
from rich.table import Table

from medseg.cli.main import console
from medseg.cli.options import parse_size
from medseg.errors import ConfigError

DEFAULT_BUDGET = "10m"


def _num(v, fmt: str) -> str:
    return "-" if v is None or (isinstance(v, float) and math.isnan(v)) else format(v, fmt)


def print_comparison(rows: list[dict], title: str) -> None:
    """The rows of :func:`~medseg.training.compare.compare_models` as a table; the best mean Dice in bold."""
    classes = []
    for r in rows:
        classes += [k for k in r if k.startswith("dice_") and k not in classes]
    table = Table(
        title=title, box=box.SIMPLE_HEAD, padding=(0, 0, 0, 1), pad_edge=False, show_edge=False,
        caption="test split: Dice per class, mean Dice, IoU and HD95 (pixels/mm) over classes (means over images); ms: inference per image",
    )
    table.add_column("model", no_wrap=True)
    for col in ("params", "train s", "epochs", *(c[5:] for c in classes), "Dice", "IoU", "HD95", "ms"):
        table.add_column(col, justify="right", min_width=6 if col == "params" else None)
    ok = [r for r in rows if not r.get("error") and not math.isnan(r["mean_dice"])]
    best = max((r["mean_dice"] for r in ok), default=None)
    for r in rows:
        if r.get("error"):
            table.add_row(r["model"], "[red]failed[/]", *([""] * (len(table.columns) - 2)))
            continue
        dice = _num(r["mean_dice"], ".3f")
        table.add_row(
            r["model"], f"{r['params'] / 1e6:.2f}M", _num(r["train_seconds"], ".1f"), str(r["epochs"]),
            *(_num(r.get(c), ".3f") for c in classes),
            f"[bold]{dice}[/]" if r["mean_dice"] == best and len(ok) > 1 else dice, _num(r["iou_mean"], ".3f"),
            _num(r.get("hd95_mean"), ".2f"), _num(r["inference_ms"], ".1f"),
        )
    console.print(table)
    for r in rows:
        if r.get("error"):
            console.print(f"[red]{r['model']} failed:[/] {r['error']}", highlight=False, soft_wrap=True)


def compare(
    data: Path = typer.Argument(..., help="Data folder (images + masks)."),
    out: Path = typer.Option(..., "--out", "-o", help="Comparison folder: one run folder per model + comparison.csv/json/png."),
    models: Optional[str] = typer.Option(None, help="Comma-separated model names (default: every registered model; see `medseg models`)."),
    budget: Optional[str] = typer.Option(None, help=f"Training time budget of EACH model, e.g. 10m (default {DEFAULT_BUDGET} unless --epochs is given)."),
    epochs: Optional[int] = typer.Option(None, help="Maximum epochs of each model (alone: an epoch budget with no time limit)."),
    features: Optional[int] = typer.Option(None, help="Width (first-stage channels) of every model that has a `features` argument."),
    size: Optional[str] = typer.Option(None, help="Resize images to HxW (e.g. 256 or 256x320); default keeps their size."),
    median: int = typer.Option(0, help="Median-filter size in pixels (0 = off)."),
    normalize: str = typer.Option("zscore", help="zscore | minmax | none."),
    split: str = typer.Option("60/20/20", help="train/val/test percentages; the test part is where models are compared."),
    split_seed: int = typer.Option(0, help="Seed of the split (the same for every model)."),
    images: Optional[str] = typer.Option(None, help="Image subfolder (detected by default)."),
    masks: Optional[str] = typer.Option(None, help="Mask subfolder (detected by default)."),
    fov: Optional[str] = typer.Option(None, help="Field-of-view mask subfolder (detected by default)."),
    pair_pattern: Optional[str] = typer.Option(None, help="Regex on file names whose group 'key' (or group 1) pairs images and masks."),
    group_pattern: Optional[str] = typer.Option(None, help="Regex whose group 'group' (or group 1) is the patient id."),
    groups_csv: Optional[str] = typer.Option(None, help="CSV file,group giving each image's patient."),
    label_colors: Optional[str] = typer.Option(None, help="Class colours 'name=r,g,b;...' or a labels.json path."),
    num_classes: Optional[int] = typer.Option(None, help="Expected number of classes incl. background."),
    iterations: int = typer.Option(50, help="Training steps per epoch."),
    batch_size: int = typer.Option(8, help="Patches per step."),
    patch_size: Optional[str] = typer.Option(None, help="Training patch HxW; default: whole images up to 128 px a side on CPU (256 on GPU)."),
    lr: float = typer.Option(1e-3, help="Learning rate."),
    optimizer: str = typer.Option("adam", help="adam | adamw | sgd."),
    schedule: str = typer.Option("cosine", help="constant | cosine | poly."),
    patience: int = typer.Option(30, help="Early stopping: epochs without improvement (0 = off)."),
    seed: int = typer.Option(0, help="Random seed (the same for every model)."),
    device: str = typer.Option("auto", help="auto | cpu | cuda | cuda:N."),
    threads: Optional[int] = typer.Option(None, help="CPU threads (default: all cores)."),
    augment: bool = typer.Option(True, help="Flips, rotation/scaling and intensity augmentation."),
    monitor: str = typer.Option("val_dice", help="Checkpoint kept (and early stopping): val_dice | val_loss."),
    test_data: Optional[Path] = typer.Option(None, help="Labelled folder (e.g. an official test set) to evaluate every model on, instead of the split's test part (then e.g. --split 85/15/0)."),
) -> None:
    """Train several models on the same split with the same budget; compare test Dice, IoU, size, time."""
    from medseg.cli.progress import TrainProgress
    from medseg.data.dataset2d import DataOptions2D
    from medseg.data.preprocess2d import Preprocess2D
    from medseg.data.split import parse_fractions
    from medseg.training.compare import CSV_NAME, JSON_NAME, PLOT_NAME, check_models, compare_models
    from medseg.models import list_models
    from medseg.training.config import TrainConfig
    from medseg.units import parse_duration
    from medseg.training.run2d import TrainSetup2D

    names = check_models(models.split(",") if models is not None else list_models())
    budget_s = parse_duration(budget if budget is not None else (None if epochs is not None else DEFAULT_BUDGET))
    if features is not None and features < 1:
        raise ConfigError(f"--features must be at least 1, got {features}")
    psize = parse_size(patch_size)
    base = TrainSetup2D(
        data=str(data), out=str(out),
        data_options=DataOptions2D(images, masks, fov, pair_pattern, group_pattern, groups_csv, label_colors, num_classes),
        preprocess=Preprocess2D(size=parse_size(size), median=median, normalize=normalize),
        split=parse_fractions(split), split_seed=split_seed,
        train=TrainConfig(
            patch_size=psize or (128, 128), batch_size=batch_size, iterations_per_epoch=iterations,
            max_epochs=epochs if epochs is not None else 500, time_budget=budget_s, optimizer=optimizer, lr=lr,
            schedule=schedule, patience=patience, seed=seed, device=device, threads=threads, augment=augment,
            monitor=monitor,
        ),
        auto_patch=psize is None,
    )
    per_model = f"{budget_s:.0f} s" if budget_s else f"{epochs} epochs"
    console.print(f"comparing {', '.join(names)}: {per_model} each, same split and settings", highlight=False)

    def progress(name: str) -> TrainProgress:
        console.rule(name)
        return TrainProgress(console, per_model)

    rows = compare_models(data, out, names, budget_s, epochs, base, common_kwargs={"features": features}, progress=progress,
                          test_data=test_data)
    console.rule("comparison")
    n_test = next((r["test_images"] for r in rows if not r.get("error") and not math.isnan(r["mean_dice"])), 0)
    print_comparison(rows, f"{len(rows)} models, {per_model} each; {'test split' if test_data is None else test_data}: {n_test} images")
    written = [out / CSV_NAME, out / JSON_NAME] + ([out / PLOT_NAME] if n_test else [])
    console.print(f"written: {', '.join(str(p) for p in written)}; run folders in {out}/<model>", highlight=False)
    if all(r.get("error") for r in rows):
        raise typer.Exit(1)
