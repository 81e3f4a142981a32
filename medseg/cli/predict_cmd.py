"""``medseg predict RUN INPUT... --out DIR``."""

from __future__ import annotations

from pathlib import Path

import typer

from medseg.cli.main import console
from medseg.errors import DataError


def predict(
    run: Path = typer.Argument(..., help="Run folder of `medseg train`."),
    inputs: list[Path] = typer.Argument(..., help="Image files or folders of images."),
    out: Path = typer.Option(..., "--out", "-o", help="Folder for the masks and overlays."),
    format: str = typer.Option("native", help="native (the training masks' encoding) | index (class ids) | color."),
    overlay: bool = typer.Option(True, help="Also write <name>_overlay.png."),
    tta: bool = typer.Option(False, help="Mirroring test-time augmentation."),
    device: str = typer.Option("auto", help="auto | cpu | cuda."),
) -> None:
    """Predict a mask per image, at the image's original size."""
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
    predictor = Predictor2D.from_run(run, mirror=tta, device=device)
    written, failed = predictor.predict_files(files, out, fmt=format, overlays=overlay)
    console.print(f"wrote {len(written)} masks to {out}", highlight=False)
    if failed:
        console.print(f"[red]{len(failed)} file(s) failed:[/]")
        for path, why in failed:
            console.print(f"  {path}: {why}", highlight=False)
        raise typer.Exit(1)
