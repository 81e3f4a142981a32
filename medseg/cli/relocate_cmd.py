"""``medseg relocate RUN NEW_DATA``: point a run at the new place of the data it was trained on."""

from __future__ import annotations

from pathlib import Path

import typer

from medseg.cli.main import console


def relocate(
    run: Path = typer.Argument(..., help="Run folder of `medseg train`."),
    data: Path = typer.Argument(..., help="The folder the run's data now lives in (the one `medseg train` was given)."),
) -> None:
    """Point a run at its data's new folder, after checking that every case of its split is there."""
    from medseg.runfolder.split import relocate as relocate_run

    n = relocate_run(run, data)
    console.print(f"{run}: the data of its {n} cases is now read from {data.resolve()}", highlight=False, markup=False)
