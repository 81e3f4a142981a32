"""``medseg demo``: the whole pipeline on the embedded synthetic phantom.

synth → show → train → evaluate → predict, in a few minutes on a laptop CPU.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import typer

from medseg.cli.main import console


def _old_demo_folder(out: Path) -> bool:
    """Whether ``out`` is a demo's output from before demo marked its folders: nothing but the demo's entries, a
    phantom (``data/labels.json``) and a run trained on exactly ``out/data``."""
    import json

    if not out.is_dir() or not {p.name for p in out.iterdir()} <= {"data", "run", "predictions", "preview.png"}:
        return False
    try:
        info = json.loads((out / "run" / "medseg_run.json").read_text())
    except (OSError, ValueError):
        return False
    return (out / "data" / "labels.json").is_file() and isinstance(info, dict) and \
        Path(str(info.get("data", ""))).resolve() == (out / "data").resolve()


def demo(
    out: Path = typer.Option(Path("demo_out"), "--out", "-o", help="Folder for the data, the run and the predictions."),
    budget: str = typer.Option("150s", help="Training time budget."),
    size: int = typer.Option(128, help="Training resolution (the phantom is 256 px)."),
    seed: int = typer.Option(0, help="Seed of the phantom and the training."),
) -> None:
    """Generate the phantom, train a U-Net on it, evaluate, predict and show."""
    from medseg.cli.eval_cmd import print_summary
    from medseg.cli.progress import TrainProgress
    from medseg.data.dataset2d import DataOptions2D, prepare_dataset
    from medseg.data.mask_reading import read_mask
    from medseg.data.phantom import make_phantom_dataset
    from medseg.data.preprocess2d import Preprocess2D
    from medseg.evaluation.evaluate_run import evaluate_run
    from medseg.evaluation.plots import image_label_grid
    from medseg.inference.predictor import Predictor
    from medseg.io import read_image
    from medseg.io.atomic import OWNER_MARK, claim_folder, write_text
    from medseg.runfolder.split import read_split
    from medseg.training.config import TrainConfig
    from medseg.training.run import train
    from medseg.training.setup import TrainSetup
    from medseg.units import parse_duration

    time_budget = parse_duration(budget)  # a bad option is refused before anything is removed
    data, run, preds = out / "data", out / "run", out / "predictions"
    if _old_demo_folder(out):
        write_text(out / OWNER_MARK, "demo\n")  # a demo folder from before the mark existed
    claim_folder(out, "demo")  # a folder of the user's is refused; the demo's own is remade
    for folder in (data, run, preds):
        if folder.exists():
            shutil.rmtree(folder)
    console.rule("1/5 synthetic phantom")
    make_phantom_dataset(data, seed=seed)
    console.rule("2/5 show")
    ds = prepare_dataset(data, DataOptions2D())
    items = [(c.image.name, read_image(c.image).array, read_mask(c.masks, ds.scheme)) for c in ds.cases[::10][:6]]
    image_label_grid(items, ds.display_colors, out / "preview.png", names=ds.scheme.names)
    console.print(f"{len(ds.cases)} slices of {len({c.group for c in ds.cases})} patients; preview: {out / 'preview.png'}", highlight=False, markup=False)
    console.rule("3/5 train")
    setup = TrainSetup(
        data=str(data), out=str(run), dims=2, preprocess=Preprocess2D(size=(size, size)),
        model="unet", model_kwargs={"features": 16},
        train=TrainConfig(batch_size=8, iterations_per_epoch=25, time_budget=time_budget, lr=2e-3, seed=seed, patience=0),
    )
    with TrainProgress(console, budget) as progress:
        result = train(setup, callbacks=progress)
    console.print(f"{result.epochs} epochs in {result.elapsed:.0f} s; curves in {run / 'plots'}", highlight=False, markup=False)
    from medseg.cli.train_cmd import fit_quality_control

    fit_quality_control(run)  # the report's quality control, as `train` fits it
    console.rule("4/5 evaluate on the held-out test patients")
    summary = evaluate_run(run)
    print_summary(summary)
    from medseg.evaluation.report import write_report

    report = write_report(run)
    console.rule("5/5 predict")
    files = [e.images[0] for e in read_split(run)["test"][:4]]
    written, _ = Predictor.from_run(run).predict_files(files, preds, fmt="color")
    console.print(f"masks and overlays of {len(written)} test slices in {preds}", highlight=False, markup=False)
    console.rule("done")
    console.print(
        f"test mean Dice {summary['mean_dice']['mean']:.3f}\n"
        f"outputs: {out.resolve()}\n  run folder {run} (model, history.csv, plots/, evaluation/)\n  report {report}\n"
        f"  preview {out / 'preview.png'}\n  predictions {preds}",
        highlight=False, markup=False,
    )
