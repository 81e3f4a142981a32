"""``medseg synth`` (the demo phantom) and ``medseg show`` (images beside their labels)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from medseg.cli.main import console


def synth(
    out: Path = typer.Argument(..., help="Folder to write the phantom dataset into."),
    patients: int = typer.Option(12, min=1, help="Number of synthetic patients."),
    slices: int = typer.Option(5, min=1, help="Slices per patient."),
    size: int = typer.Option(256, min=32, help="Image side in pixels (at least 32)."),
    seed: int = typer.Option(0, help="Random seed (same seed, same files)."),
) -> None:
    """Write a deterministic synthetic CT-slice dataset (body, lungs, tumours) into a new or empty folder."""
    from medseg.data.phantom import make_phantom_dataset
    import shutil

    from medseg.io.atomic import OWNER_MARK, claim_folder

    again = (out / OWNER_MARK).is_file()
    claim_folder(out, "synth")
    if again:  # synth's own folder: the earlier phantom goes, so that two phantoms never mix
        for name in ("images", "masks", "masks_color"):
            shutil.rmtree(out / name, ignore_errors=True)
        (out / "labels.json").unlink(missing_ok=True)
    make_phantom_dataset(out, n_patients=patients, slices_per_patient=slices, size=size, seed=seed)
    console.print(f"wrote {patients * slices} phantom slices to {out} (images/, masks/, masks_color/, labels.json)", highlight=False, markup=False)


def show(
    data: Path = typer.Argument(..., help="Data folder (images + masks)."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="PNG to write (default ./preview.png)."),
    n: int = typer.Option(6, help="How many images to show."),
    images: Optional[str] = typer.Option(None, help="Image subfolder."),
    masks: Optional[str] = typer.Option(None, help="Mask subfolder."),
    pair_pattern: Optional[str] = typer.Option(None, help="Regex pairing images and masks."),
    label_colors: Optional[str] = typer.Option(None, help="Class colours 'name=r,g,b;...' or a labels.json path."),
    channels: Optional[int] = typer.Option(None, "--channels", help="Show every image as 1 (grey) or 3 (colour) channels "
                                           "(needed when grey and colour images are mixed)."),
) -> None:
    """Save a grid PNG of images beside their labels and overlays."""
    from medseg.data.dataset2d import DataOptions2D, prepare_dataset
    from medseg.data.mask_reading import read_mask
    from medseg.evaluation.plots import image_label_grid
    from medseg.io import read_image

    ds = prepare_dataset(data, DataOptions2D(images=images, masks=masks, pair_pattern=pair_pattern, label_colors=label_colors,
                                             channels=channels))
    step = max(1, len(ds.cases) // n)
    items = []
    for case in ds.cases[::step][:n]:
        items.append((case.image.name, read_image(case.image).array, read_mask(case.masks, ds.scheme)))
    out = out or Path("preview.png")
    image_label_grid(items, ds.display_colors, out, max_items=n, names=ds.scheme.names)
    console.print(f"{len(ds.cases)} cases, {ds.scheme.num_classes} classes ({', '.join(ds.scheme.names)}); grid: {out}", highlight=False, markup=False)
