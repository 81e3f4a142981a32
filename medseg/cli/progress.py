"""Progress display for training and for batches of cases (CLI only; the library reports through callbacks).

On a terminal, :class:`TrainProgress` shows a bar over the budget (time or epochs) that says what it is doing
("preparing data" until the first step, then the epoch), and ends at 100% when training ends, whatever stopped
it. Off a terminal (``nohup``, SLURM, a pipe), a live bar would print nothing until the end, so it writes one
plain line per epoch instead, flushed as it goes.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, Callable

from rich.console import Console
from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn,
                           TimeRemainingColumn)


def _number(value: Any, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return f"{value:.{digits}f}"


class TrainProgress:
    """Implements the engine's ``Callbacks``: a bar on a terminal, one line per epoch elsewhere."""

    def __init__(self, console: Console, total_hint: str):
        self.console, self.hint = console, total_hint
        self.live = console.is_terminal
        self.progress = Progress(
            TextColumn("[bold]{task.fields[phase]}"), BarColumn(), TextColumn("{task.percentage:>3.0f}%"),
            TextColumn("loss {task.fields[loss]}"), TextColumn("val dice {task.fields[dice]}"),
            TimeElapsedColumn(), TextColumn("eta"), TimeRemainingColumn(), console=console, transient=False,
        ) if self.live else None
        self.task = self.progress.add_task(total_hint, total=1000, phase="preparing data", loss="-", dice="-") \
            if self.progress else None

    def __enter__(self) -> "TrainProgress":
        if self.progress:
            self.progress.__enter__()
        else:
            self.console.print(f"training ({self.hint}); one line per epoch", highlight=False, markup=False)
        return self

    def __exit__(self, exc_type, *exc) -> None:
        if self.progress:
            if exc_type is None:  # training ended (budget, epochs or early stopping): the bar says so
                self.progress.update(self.task, completed=1000, phase="done")
            self.progress.__exit__(exc_type, *exc)

    def on_step(self, epoch: int, iteration: int, loss: float, progress: float) -> None:
        if self.progress:
            self.progress.update(self.task, completed=min(progress, 1.0) * 1000, phase=f"epoch {epoch}", loss=f"{loss:.3f}")

    def on_epoch_end(self, row: dict[str, Any]) -> None:
        dice = _number(row.get("val_dice"))
        if self.progress:
            self.progress.update(self.task, dice=dice + (" *" if row.get("best") else ""))
            return
        parts = [f"epoch {row['epoch']}", f"{row.get('time', 0):.0f} s", f"loss {_number(row.get('train_loss'), 4)}"]
        if "val_loss" in row:
            parts.append(f"val loss {_number(row.get('val_loss'), 4)}")
        if "val_dice" in row:
            parts.append(f"val dice {dice}" + (" (best)" if row.get("best") else ""))
        parts.append(f"lr {row.get('lr', 0):.2g}")
        self.console.print(", ".join(parts), highlight=False, markup=False)
        self.console.file.flush()


@contextmanager
def case_progress(console: Console, what: str) -> Iterator[Callable[[str, int, int], None]]:
    """A bar over the cases of a batch on a terminal (nothing elsewhere; the per-case log lines remain); yields
    the library's ``on_case(name, done, total)`` callback."""
    if not console.is_terminal:
        yield lambda name, done, total: None
        return
    with Progress(TextColumn(f"[bold]{what}"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[case]}"),
                  TimeElapsedColumn(), TextColumn("eta"), TimeRemainingColumn(), console=console, transient=True) as bar:
        task = bar.add_task(what, total=None, case="")
        yield lambda name, done, total: bar.update(task, completed=done, total=total or None, case=name)
