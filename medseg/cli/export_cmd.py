"""``medseg export RUN --out BUNDLE``: the run as a self-contained ONNX bundle (:mod:`medseg.inference.bundle`)."""

from __future__ import annotations

from pathlib import Path

import typer

from medseg.cli.main import console


def export(
    run: Path = typer.Argument(..., help="Run folder of `medseg train`."),
    out: Path = typer.Option(..., "--out", "-o", help="Bundle folder to create (new or empty)."),
    format: str = typer.Option("onnx", "--format", help="onnx (the only format: see the README's Deployment section)."),
    overlap: float = typer.Option(0.5, min=0.0, max=0.95, help="Sliding-window overlap written into the bundle."),
) -> None:
    """Export a trained run as model.onnx plus bundle.json (preprocessing, sliding window, labels, temperature)."""
    from medseg.errors import ConfigError
    from medseg.inference.bundle import export_bundle

    if format != "onnx":
        raise ConfigError(f"unknown export format '{format}'", hint="use --format onnx")
    path = export_bundle(run, out, overlap=overlap)
    console.print(f"bundle written: {path.parent} (model.onnx, bundle.json); predict with: "
                  f"medseg predict {path.parent} INPUT --out DIR", highlight=False, markup=False)
