"""``medseg train DATA --out RUN``: 2D image folders, or 3D volume datasets (detected)."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Optional

import typer
from rich.markup import escape

from medseg.cli.main import console
from medseg.cli.setup_options import given_options, with_setup_options
from medseg.errors import ConfigError, MedsegError
from medseg.training.options import SetupOptions


@with_setup_options()
def train(
    ctx: typer.Context,
    data: Optional[Path] = typer.Argument(None, help="Data folder: 2D images + masks, or a 3D dataset (dataset.json, imagesTr/, or images/ + labels/ with volumes). Not needed with --resume."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Run folder to create."),
    resume: Optional[Path] = typer.Option(None, "--resume", help="Continue the run in this folder after an interruption."),
    plan: Optional[Path] = typer.Option(None, "--plan", help="Use this plan.json (see `medseg plan`); flags given here override single entries. Default: plan from the data, saved as RUN/plan.json."),
    no_plan: bool = typer.Option(False, "--no-plan", help="Hand-set defaults instead of a plan (as before planning)."),
    folds: Optional[int] = typer.Option(None, "--folds", min=2, help="K-fold cross-validation on every labelled case "
                                        "(patients kept together): RUN/fold_<i> runs, out-of-fold evaluation in RUN/cv, "
                                        "and `medseg predict RUN` averages the folds. --time-budget covers all folds."),
    folds_file: Optional[Path] = typer.Option(None, "--folds-file", help="Your own folds: JSON {\"folds\": [[case, ...], ...]} "
                                              "holding every labelled case once."),
    *,
    options: SetupOptions,
) -> None:
    """Train a segmentation model on a folder of images and masks, or on a 3D volume dataset."""
    from medseg.cli.progress import TrainProgress
    from medseg.runtime import distributed
    from medseg.training.options import build_setup
    from medseg.training.run import train as run_training
    from medseg.training.setup import setup_from_run

    distributed.init_from_env(options.device)  # a no-op unless launched by torchrun
    given = given_options(ctx)
    from medseg.inference.ensemble import is_cross_validated

    if resume is not None and is_cross_validated(resume):
        if folds is not None or folds_file is not None or plan is not None:
            raise ConfigError("a resumed cross-validation keeps its folds and plan", hint=f"medseg train --resume {resume}")
        _cross_validate(None, None, None, resume, None, True, given)
        return
    if resume is not None:
        setup = setup_from_run(resume)
    else:
        if data is None or out is None:
            raise ConfigError("give a data folder and --out RUN (or --resume RUN)", hint="medseg train DATA --out RUN")
        setup = build_setup(data, out, options, given)
    if plan is not None and (resume is not None or no_plan):
        raise ConfigError("--plan cannot be combined with " + ("--resume" if resume is not None else "--no-plan"),
                          hint="a resumed run keeps its own settings" if resume is not None else "leave one of them out")
    main_rank = distributed.context().is_main  # under torchrun, rank 0 alone reports and writes
    if folds is not None or folds_file is not None:
        _cross_validate(setup, folds, folds_file, None, plan, no_plan, given)
        return
    try:
        with _nothing_left_if_stopped_early(Path(setup.out)) if resume is None and main_rank else nullcontext():
            if resume is None and not no_plan:
                _apply_plan(setup, plan, given)
            hint = f"budget {setup.train.time_budget:.0f}s" if setup.train.time_budget else f"{setup.train.max_epochs} epochs max"
            with TrainProgress(console, hint) if main_rank else nullcontext() as progress:
                result = run_training(setup, callbacks=progress, resume=resume is not None)
    except KeyboardInterrupt:
        if main_rank:
            _say_how_to_resume(Path(setup.out))
        raise typer.Exit(130) from None
    finally:
        distributed.cleanup()
    if not main_rank:
        return
    fit_quality_control(Path(setup.out))
    from medseg.evaluation.report import write_report

    console.print(f"report: {write_report(setup.out)}", highlight=False, markup=False)
    console.print(
        f"[green]done[/]: {result.epochs} epochs in {result.elapsed:.0f} s, stopped by {result.stopped_by}; "
        f"best epoch {result.best_epoch} ({setup.train.monitor} {result.best_score:.4f})\nrun folder: {escape(str(setup.out))}",
        highlight=False,
    )


def fit_quality_control(run: Path) -> None:
    """Fit the run's quality control on its validation cases (after the time budget, like the report); a failure
    is reported and leaves the run usable without it."""
    from medseg.cli.progress import case_progress
    from medseg.cli.qc_cmd import quality_summary
    from medseg.evaluation.quality_fit import fit_quality

    try:
        with case_progress(console, "quality control") as on_case:
            model = fit_quality(run, on_case=on_case)
    except (MedsegError, OSError, RuntimeError, ValueError) as e:
        console.print(f"quality control not fitted ({type(e).__name__}: {e}); fit it later with: medseg qc {run}",
                      highlight=False, markup=False)
        return
    console.print(quality_summary(model), highlight=False, markup=False)


def _cross_validate(setup, folds: Optional[int], folds_file: Optional[Path], resume: Optional[Path], plan, no_plan: bool,
                    given: set[str]) -> None:
    from medseg.cli.progress import TrainProgress
    from medseg.io.atomic import claim_folder
    from medseg.training.cross_validation import COMMAND, cross_validate

    from medseg.runtime import distributed

    if distributed.context().world_size > 1:
        raise ConfigError("--folds runs the folds one after the other in one process; under torchrun each fold would run "
                          "on every rank", hint="run `medseg train --folds` without torchrun")
    clash = sorted({"split", "split_file"} & given)
    if clash:
        raise ConfigError(f"--{clash[0].replace('_', '-')}: cross-validation splits by its folds (every case is validated once)",
                          hint="leave it out, or give your own folds with --folds-file")
    run = Path(resume if resume is not None else setup.out)
    try:
        with _nothing_left_if_stopped_early(run, run / "fold_0") if resume is None else nullcontext():
            if resume is None:
                from medseg.runfolder import check_new_run_folder

                check_new_run_folder(run)  # a run or a cross-validation there already: refused before anything is written
                claim_folder(run, COMMAND)  # the plan is written into it next
            if resume is None and not no_plan:
                _apply_plan(setup, plan, given)
            budget = setup.train.time_budget if resume is None else None
            with TrainProgress(console, f"budget {budget:.0f}s for all folds" if budget else "folds") as progress:
                result = cross_validate(None if resume is not None else setup, run, folds,
                                        str(folds_file) if folds_file else None, resume is not None,
                                        callbacks_for=lambda i, k: progress)
    except KeyboardInterrupt:
        console.print(f"interrupted; continue with: medseg train --resume {run}" if (run / "fold_0" / "checkpoints").is_dir()
                      else "interrupted before the first checkpoint; nothing to resume, start the command again",
                      highlight=False, markup=False)
        raise typer.Exit(130) from None
    classes = result.summary.get("classes", {})
    parts = []
    for name, metrics in classes.items():
        dice = (metrics or {}).get("dice", {})
        if "mean" in dice:
            ci = dice.get("ci95")
            parts.append(f"{name} {dice['mean']:.4f}" + (f" [{ci[0]:.3f}-{ci[1]:.3f}]" if ci else ""))
    console.print(f"[green]done[/]: {result.folds} folds in {sum(result.seconds):.0f} s; out-of-fold Dice: {', '.join(parts) or '-'}"
                  f"\nper-case table and summary in {escape(str(run / 'cv'))}; `medseg predict {escape(str(run))}` averages the folds",
                  highlight=False)


@contextmanager
def _nothing_left_if_stopped_early(out: Path, checkpointed: Path | None = None) -> Iterator[None]:
    """A new run refused while its data is read, or interrupted before its first checkpoint (in ``checkpointed``,
    default ``out``), leaves nothing behind but its preprocessed cache (the files it made, and the folder if it made
    that and nothing is left), so the same command can simply be run again."""
    existed = out.is_dir()
    before = set(out.iterdir()) if existed else set()
    try:
        yield
    except (MedsegError, KeyboardInterrupt):
        if out.is_dir() and not any(((checkpointed or out) / "checkpoints").glob("last*")):
            for p in set(out.iterdir()) - before - {out / "preprocessed"}:  # the 3D cache is kept: a rerun reuses it
                shutil.rmtree(p) if p.is_dir() and not p.is_symlink() else p.unlink()
            if not existed and not any(out.iterdir()):
                out.rmdir()
        raise


def _say_how_to_resume(run: Path) -> None:
    saved = sorted((run / "checkpoints").glob("last*"))
    if saved:
        console.print(f"interrupted; the last checkpoint is in {run / 'checkpoints'}. Continue with: "
                      f"medseg train --resume {run}",
                      highlight=False, markup=False)
    else:
        console.print("interrupted before the first checkpoint; nothing to resume, start the command again",
                      highlight=False, markup=False)


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
                  + (f"; overridden: {_overrides(overrides)}" if overrides else ""), highlight=False, markup=False)


def _overrides(overrides: dict) -> str:
    return ", ".join(f"{key} = {entry['used']}" for key, entry in overrides.items())
