"""``medseg deidentify IN OUT``: DICOM files de-identified by the PS3.15 Basic Profile."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from medseg.cli.main import console


def deidentify(
    src: Path = typer.Argument(..., help="Folder of DICOM files (searched recursively); never altered."),
    out: Path = typer.Argument(..., help="New or empty folder for the de-identified files (same relative paths)."),
    mapping: Optional[Path] = typer.Option(None, help="CSV of original and new UIDs; default OUT.uid_mapping.csv beside "
                                           "OUT (not inside it): keep it private, or delete it."),
    keep_dates: bool = typer.Option(False, help="Retain Longitudinal Temporal Information with Full Dates Option: keep dates and times."),
    keep_patient_characteristics: bool = typer.Option(False, help="Retain Patient Characteristics Option: keep sex, age, "
                                                      "size, weight, ethnic group, smoking and pregnancy status."),
    allow_burned_in: bool = typer.Option(False, help="Write files whose Burned In Annotation is YES (flagged); "
                                         "by default they are not written."),
) -> None:
    """De-identify DICOM files: the Basic Application Level Confidentiality Profile (PS3.15 Annex E), UIDs replaced
    consistently (a SEG keeps referencing its images), private tags removed, pixels unchanged (checked by checksum)."""
    from medseg.errors import ConfigError
    from medseg.io.atomic import OWNER_MARK, claim_folder
    from medseg.io.deidentify import deidentify_folder

    from medseg.io.deidentify import check_paths

    out = out.resolve()
    mapping = mapping or out.with_name(out.name + ".uid_mapping.csv")
    check_paths(src, out, mapping)
    if mapping.exists() and not (out / OWNER_MARK).is_file():
        raise ConfigError("the UID mapping file exists and was not written by an earlier run into this folder", path=mapping,
                          hint="choose another --mapping, or move that file away")
    claim_folder(out, "deidentify")
    result = deidentify_folder(src, out, mapping_file=mapping, keep_dates=keep_dates,
                               keep_patient_characteristics=keep_patient_characteristics, allow_burned_in=allow_burned_in)
    console.print(f"de-identified {len(result.written)} file(s) into {out}; UID mapping (keep private): {mapping}",
                  highlight=False, markup=False)
    for path, why in result.flagged:
        console.print(f"[yellow]check[/] {path}: {why}", highlight=False)
    if result.refused:
        for path, why in result.refused:
            console.print(f"[red]not written[/] {path}: {why}", highlight=False)
        raise typer.Exit(1)
