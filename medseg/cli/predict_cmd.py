"""``medseg predict RUN INPUT... --out DIR`` (2D or 3D, as the run was trained)."""

from __future__ import annotations

from pathlib import Path

import typer

from medseg.cli.main import console
from medseg.errors import ConfigError, DataError


def predict(
    run: Path = typer.Argument(..., help="Run folder of `medseg train`."),
    inputs: list[Path] = typer.Argument(..., help="Image files or folders of images; for 3D runs volume files, folders of volumes, or DICOM series folders."),
    out: Path = typer.Option(..., "--out", "-o", help="Folder for the masks (and overlays)."),
    format: str = typer.Option("native", help="2D: native (the training masks' encoding) | index (class ids) | color."),
    overlay: bool = typer.Option(True, help="2D: also write <name>_overlay.png."),
    tta: bool = typer.Option(False, help="Mirroring test-time augmentation."),
    save_probabilities: bool = typer.Option(False, help="3D: also write <case>_probabilities (one channel per class)."),
    uncertainty: bool = typer.Option(False, help="Also write each input's entropy map (3D: <case>_entropy, float32 on the input grid; "
                                     "2D: <name>_entropy.png 8-bit 0..255 and <name>_entropy.npy float32; 0 certain, 1 uniform) "
                                     "and uncertainty.csv with a per-case score. Implies --tta."),
    calibration: bool = typer.Option(True, help="Apply the run's fitted temperature (RUN/calibration.json, `medseg calibrate`) "
                                     "to the probabilities; labels are unchanged."),
    device: str = typer.Option("auto", help="auto | cpu | cuda."),
    amp: bool = typer.Option(True, help="Run the network in bf16 (fp16 on older GPUs) where training would, as its "
                             "validation did; --no-amp: float32 throughout."),
) -> None:
    """Predict a mask per image, at the image's original size (3D: exactly on the input's grid)."""
    from medseg.runfolder import read_run_info

    tta = tta or uncertainty  # the entropy is that of the mirroring ensemble's mean

    if read_run_info(run).get("task") == "segmentation3d":
        from medseg.inference.predictor3d import Predictor3D

        predictor3d = Predictor3D.from_run(run, mirror=tta, device=device, calibration=calibration, amp=amp)
        written, failed = predictor3d.predict_files(inputs, out, save_probabilities=save_probabilities, uncertainty=uncertainty)
        _report(written, failed, out, "label maps", uncertainty)
        return
    if save_probabilities:
        raise ConfigError("--save-probabilities applies to 3D runs only", path=run)
    from medseg.data.discovery import list_image_files
    from medseg.inference.predictor import Predictor2D

    files: list[Path] = []
    for p in inputs:
        if p.is_dir():
            found = list_image_files(p)
            if not found:
                raise DataError("no images in this folder", path=p)
            files += found
        elif p.exists():
            files.append(p)
        else:
            raise DataError("input not found", path=p)
    predictor = Predictor2D.from_run(run, mirror=tta, device=device, calibration=calibration, amp=amp)
    written2d, failed2d = predictor.predict_files(files, out, fmt=format, overlays=overlay, uncertainty=uncertainty)
    _report(written2d, failed2d, out, "masks", uncertainty)


def _report(written: list, failed: list, out: Path, what: str, uncertainty: bool = False) -> None:
    console.print(f"wrote {len(written)} {what} to {out}", highlight=False)
    if uncertainty and written:
        from medseg.inference.uncertainty import UNCERTAINTY_CSV

        console.print(f"entropy maps beside them (<name>_entropy*), per-case scores in {out / UNCERTAINTY_CSV}", highlight=False)
    if failed:
        console.print(f"[red]{len(failed)} input(s) failed:[/]")
        for path, why in failed:
            console.print(f"  {path}: {why}", highlight=False)
        raise typer.Exit(1)
