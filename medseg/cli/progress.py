"""Rich progress display for training (CLI only; the library reports through callbacks)."""

from __future__ import annotations

import math
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn


class TrainProgress:
    """Implements the engine's ``Callbacks``: a bar over the budget (time or epochs) with the latest numbers."""

    def __init__(self, console: Console, total_hint: str):
        self.progress = Progress(
            TextColumn("[bold]epoch {task.fields[epoch]}"), BarColumn(), TextColumn("{task.percentage:>3.0f}%"),
            TextColumn("loss {task.fields[loss]}"), TextColumn("val dice {task.fields[dice]}"),
            TimeElapsedColumn(), TextColumn("eta"), TimeRemainingColumn(), console=console, transient=False,
        )
        self.task = self.progress.add_task(total_hint, total=1000, epoch=0, loss="-", dice="-")

    def __enter__(self) -> "TrainProgress":
        self.progress.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        self.progress.__exit__(*exc)

    def on_step(self, epoch: int, iteration: int, loss: float, progress: float) -> None:
        self.progress.update(self.task, completed=min(progress, 1.0) * 1000, epoch=epoch, loss=f"{loss:.3f}")

    def on_epoch_end(self, row: dict[str, Any]) -> None:
        dice = row.get("val_dice")
        text = "-" if dice is None or (isinstance(dice, float) and math.isnan(dice)) else f"{dice:.3f}"
        self.progress.update(self.task, dice=text + (" *" if row.get("best") else ""))
