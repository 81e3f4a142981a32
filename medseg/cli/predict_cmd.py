"""``medseg predict RUN INPUT... --out DIR`` (2D or 3D, as the run was trained)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from medseg.cli.main import console


def predict(
    run: Path = typer.Argument(..., help="Run folder of `medseg train`, or a bundle of `medseg export`."),
    inputs: Optional[list[Path]] = typer.Argument(None, help="Image files or folders of images; for 3D runs volume files, folders of volumes, or DICOM series folders."),
    out: Path = typer.Option(..., "--out", "-o", help="Folder for the masks (and overlays)."),
    format: str = typer.Option("native", help="2D: native (the training masks' encoding) | index (class ids) | color. "
                               "3D: native/nifti (the input's format; .nii.gz for DICOM series) | dicom-seg (a DICOM "
                               "Segmentation object referencing the input series; needs medseg[dicom])."),
    series_uid: str = typer.Option(None, "--series-uid", help="DICOM folders holding several series: the Series Instance UID "
                                   "to read (default: the largest image series)."),
    overlay: bool = typer.Option(True, help="2D: also write <name>_overlay.png."),
    tta: bool = typer.Option(False, help="Mirroring test-time augmentation."),
    save_probabilities: bool = typer.Option(False, help="Also write the class probabilities: 3D <case>_probabilities (one channel per class, on the input grid), 2D <name>_probabilities.npy (float32, K x H x W)."),
    uncertainty: bool = typer.Option(False, help="Also write each input's entropy map (3D: <case>_entropy, float32 on the input grid; "
                                     "2D: <name>_entropy.png 8-bit 0..255 and <name>_entropy.npy float32; 0 certain, 1 uniform) "
                                     "and uncertainty.csv with a per-case score. Implies --tta."),
    calibration: bool = typer.Option(True, help="Apply the run's fitted temperature (RUN/calibration.json, `medseg calibrate`) "
                                     "to the probabilities; labels are unchanged."),
    device: str = typer.Option("auto", help="auto | cpu | cuda."),
    force: bool = typer.Option(False, "--force", help="Allow an --out folder inside an input folder (never the folder "
                               "of the inputs themselves)."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace files already in --out that the outputs would "
                                   "replace (refused by default, before anything is written)."),
    backend: str = typer.Option("auto", help="torch | onnxruntime | auto (a bundle: onnxruntime; a run folder: torch). "
                                "A run with onnxruntime is exported to a temporary bundle first."),
    amp: bool = typer.Option(True, help="Run the network in bf16 (fp16 on older GPUs) where training would, as its "
                             "validation did; --no-amp: float32 throughout."),
    manifest: Optional[Path] = typer.Option(None, help="A cohort: a CSV with a 'path' column (and optionally 'id' and "
                                            "columns kept in the status file), or a folder of studies. Resumable: "
                                            "OUT/manifest_status.csv, failures in OUT/failures.csv, progress in OUT/cohort.log."),
    max_failures: Optional[int] = typer.Option(None, min=0, help="--manifest: stop when more studies than this have failed."),
    engine: str = typer.Option("inprocess", help="--manifest: inprocess (this process) | ray (Ray tasks and actors on a "
                               "local instance or a cluster; needs medseg[ray])."),
    address: Optional[str] = typer.Option(None, help="--engine ray: auto (the cluster of `ray start` on this machine) or "
                                          "HOST:PORT; default a new local instance bound to the loopback interface."),
    actors: Optional[int] = typer.Option(None, min=1, help="--engine ray: network actors, each loading the model once (default 1)."),
    gpus_per_actor: Optional[float] = typer.Option(None, min=0.0, help="--engine ray: GPUs per actor (0.5 packs two on one GPU; "
                                                   "default 0: the CPU)."),
    cpus_per_actor: Optional[float] = typer.Option(None, min=0.01, help="--engine ray: CPUs reserved per actor (its torch "
                                                   "threads: the nearest whole number; default 1); the rest read, preprocess and write."),
    in_flight: Optional[int] = typer.Option(None, min=1, help="--engine ray: studies in flight at most (default 2 per actor + 2): "
                                            "bounds the cluster's memory for a cohort of any size."),
    folds: Optional[str] = typer.Option(None, help="A cross-validated run (medseg train --folds): the folds to average, "
                                        "e.g. 0,2 (default all)."),
    postprocessing: bool = typer.Option(True, help="A cross-validated run: apply RUN/postprocessing.json (decided on the "
                                        "out-of-fold predictions); --no-postprocessing skips it."),
    qc: bool = typer.Option(True, help="Quality control (when the run has RUN/quality.json): quality.csv with each case's "
                            "score, predicted Dice and a 'check this case' flag with its reasons."),
) -> None:
    """Predict a mask per image, at the image's original size (3D: exactly on the input's grid)."""
    from medseg.cli.progress import case_progress
    from medseg.inference.bundle import OnnxNetwork

    from medseg.errors import ConfigError

    if (manifest is None) == (not inputs):
        raise ConfigError("give the inputs, or --manifest COHORT (not both)", hint="medseg predict RUN scans/ --out OUT")
    given = {"address": address, "actors": actors, "gpus_per_actor": gpus_per_actor, "cpus_per_actor": cpus_per_actor,
             "in_flight": in_flight}
    ray_options = {k: v for k, v in given.items() if v is not None}  # the rest: RayEngine's defaults
    ray_given = [f"--{k.replace('_', '-')}" for k in ray_options]
    if manifest is None and (max_failures is not None or engine != "inprocess"):
        raise ConfigError("--max-failures and --engine apply to --manifest cohorts")
    if engine not in ("inprocess", "ray"):
        raise ConfigError(f"unknown --engine '{engine}'", hint="inprocess or ray")
    if engine != "ray" and ray_given:
        raise ConfigError(f"{', '.join(ray_given)}: options of --engine ray")
    if manifest is not None:
        unsupported = [flag for flag, given in (("--save-probabilities", save_probabilities), ("--uncertainty", uncertainty),
                                                ("--force", force), ("--overwrite", overwrite)) if given]
        if unsupported:
            raise ConfigError(f"{', '.join(unsupported)}: not available with --manifest (a cohort writes one label file per "
                              "study and its status)", hint="leave them out, or predict the files without --manifest")
    tta = tta or uncertainty  # the entropy is that of the mirroring ensemble's mean
    fold_list = _fold_list(folds)
    predictor, handle = _predictor(run, backend, tta, device, calibration, amp, fold_list, postprocessing)
    running = "onnxruntime, float32" if isinstance(predictor.model, OnnxNetwork) else \
        f"torch, {str(predictor.amp_dtype).removeprefix('torch.') if predictor.amp_dtype else 'float32'}"
    console.print(f"backend: {running} on {predictor.device}" + (" (--backend auto)" if backend == "auto" else ""),
                  highlight=False, markup=False)
    if manifest is not None:
        try:
            _cohort(predictor, manifest, out, format, max_failures, series_uid, qc, ray_options if engine == "ray" else None)
        finally:
            if handle is not None:
                handle.cleanup()
        return
    try:
        with case_progress(console, "predicting") as on_case:
            written, failed = predictor.predict_files(inputs, out, fmt=format, overlays=overlay,
                                                      save_probabilities=save_probabilities, uncertainty=uncertainty,
                                                      force=force, overwrite=overwrite, quality=qc, series_uid=series_uid,
                                                      on_case=on_case)
    finally:
        if handle is not None:
            handle.cleanup()
    _report(written, failed, out, "masks" if predictor.dims == 2 else "label maps", uncertainty, qc and predictor.quality is not None)


def _cohort(predictor, manifest: Path, out: Path, fmt: str, max_failures, series_uid, qc: bool, ray_options: dict | None) -> None:
    from medseg.cli.progress import case_progress
    from medseg.inference.cohort import FAILURES_CSV, STATUS_CSV, read_manifest, run_cohort, studies_of

    if not qc:
        predictor.quality = None
    studies = studies_of([manifest], predictor.dims) if manifest.is_dir() else read_manifest(manifest, predictor.dims)
    engine = None
    if ray_options is not None:
        from medseg.inference.cohort_ray import RayEngine

        engine = RayEngine(**ray_options)
    try:
        if engine is not None:
            engine.connect()  # a missing Ray or a cluster too small is reported before anything is written
        with case_progress(console, "cohort") as on_study:
            result = run_cohort(predictor, studies, out, fmt=fmt, max_failures=max_failures, series_uid=series_uid,
                                roots=(manifest,) if manifest.is_dir() else (), on_study=on_study, engine=engine)
    finally:
        if engine is not None:
            engine.shutdown()
    console.print(f"cohort: {result.done} predicted, {result.skipped} already done, {len(result.failed)} failed "
                  f"of {len(studies)}; status in {out / STATUS_CSV}", highlight=False, markup=False)
    if result.failed:
        console.print(f"[red]{len(result.failed)} failed[/] (listed in {out / FAILURES_CSV})"
                      + ("; stopped by --max-failures" if result.stopped else "; rerun the command to retry them"), highlight=False)
        raise typer.Exit(1)


def _fold_list(folds: Optional[str]) -> Optional[list[int]]:
    from medseg.errors import ConfigError

    if folds is None:
        return None
    try:
        return [int(x) for x in folds.split(",") if x.strip()]
    except ValueError:
        raise ConfigError(f"--folds {folds}: give fold numbers separated by commas, e.g. 0,2") from None


def _predictor(run: Path, backend: str, tta: bool, device: str, calibration: bool, amp: bool, folds: Optional[list[int]] = None,
               postprocessing: bool = True):
    """The predictor of ``run`` (a run folder or a bundle) on ``backend``, and the temporary bundle to clean up."""
    from medseg.errors import ConfigError
    from medseg.inference.bundle import is_bundle, temporary_bundle
    from medseg.inference.predictor import Predictor

    if backend not in ("auto", "torch", "onnxruntime"):
        raise ConfigError(f"unknown --backend '{backend}'", hint="choose torch, onnxruntime or auto")
    if (is_bundle(run) or backend == "onnxruntime") and device not in ("auto", "cpu"):
        raise ConfigError(f"--device {device}: ONNX Runtime runs here on the CPU", path=run,
                          hint="leave out --device, or predict with the run folder and --backend torch")
    if is_bundle(run):
        if folds is not None:
            raise ConfigError("--folds applies to a cross-validated run folder, not a bundle", path=run)
        if backend == "torch":
            raise ConfigError("--backend torch: a bundle runs in ONNX Runtime; the torch backend needs the run folder", path=run,
                              hint="leave out --backend, or give the run folder")
        return Predictor.from_bundle(run, mirror=tta, calibration=calibration), None
    if backend != "onnxruntime":
        return Predictor.from_run(run, mirror=tta, device=device, calibration=calibration, amp=amp, folds=folds,
                                  postprocessing=postprocessing), None
    if folds is not None:
        raise ConfigError("--folds: ONNX bundles hold one network; predict a cross-validated run with --backend torch", path=run)
    bundle, handle = temporary_bundle(run)
    try:
        return Predictor.from_bundle(bundle, mirror=tta, calibration=calibration), handle
    except BaseException:
        handle.cleanup()
        raise


def _report(written: list, failed: list, out: Path, what: str, uncertainty: bool = False, qc: bool = False) -> None:
    console.print(f"wrote {len(written)} {what} to {out}", highlight=False, markup=False)
    if qc and written:
        import csv

        from medseg.inference.quality import QUALITY_CSV

        with (out / QUALITY_CSV).open(newline="") as f:
            flagged = [r for r in csv.DictReader(f) if r["check"] == "1"]
        console.print(f"quality control: {len(flagged)} of {len(written)} case(s) to check"
                      + (f" ({', '.join(r['case'] for r in flagged[:5])}{', ...' if len(flagged) > 5 else ''})" if flagged else "")
                      + f"; scores, predicted Dice and reasons in {out / QUALITY_CSV}", highlight=False, markup=False)
    if uncertainty and written:
        from medseg.inference.uncertainty import UNCERTAINTY_CSV

        console.print(f"entropy maps beside them (<name>_entropy*), per-case scores in {out / UNCERTAINTY_CSV}", highlight=False, markup=False)
    if failed:
        console.print(f"[red]{len(failed)} input(s) failed:[/]")
        for path, why in failed:
            console.print(f"  {path}: {why}", highlight=False, markup=False)
        raise typer.Exit(1)
