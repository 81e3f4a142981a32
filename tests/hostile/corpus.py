"""The hostile-input corpus (issue 16): bad, broken or dangerous inputs, each with what medseg must do.

A case builds its files under a fresh folder and returns the command line; the test runs it and checks
the exit status, that the message names the file (or option) at fault, and that no file that existed before
the command, the shared run folders included, changed. A refused command (exit 2) writes no file at all.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Callable


@dataclass(frozen=True)
class Runs:
    """Trained run folders and their data, made once per session; no case may change them."""

    data2d: Path
    run2d: Path
    data3d: Path
    run3d: Path
    bundle2d: Path  #: ``medseg export`` of run2d


Maker = Callable[[Path, Runs], list]


@dataclass(frozen=True)
class Case:
    name: str
    make: Maker
    code: int            #: the exit status
    names: str           #: text the message must hold: the file (or option) at fault
    says: str = ""       #: and, when given, this too (what is wrong or how to fix it)


CASES: list[Case] = []


def case(names: str, code: int = 2, says: str = "") -> Callable[[Maker], Maker]:
    """Register ``make`` as a corpus case named after the function."""

    def register(make: Maker) -> Maker:
        CASES.append(Case(make.__name__, make, code, names, says))
        return make

    return register


@contextmanager
def edited_json(path: Path) -> Iterator[dict]:
    """The object in the JSON file ``path``, written back when the block ends (a case's one changed entry)."""
    obj = json.loads(path.read_text())
    yield obj
    path.write_text(json.dumps(obj))
