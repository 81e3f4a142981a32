"""What a run folder holds for the report: every piece is optional except ``medseg_run.json``.

A file that is absent leaves its field ``None`` (or empty); a file that cannot be
parsed adds a line to :attr:`RunContents.notes`, shown in the report, instead of
failing it: a report is written at the end of training and evaluation and must
not stop either.
"""

from __future__ import annotations

import csv
import json
import logging
import math
from dataclasses import dataclass, field
from pathlib import Path

from medseg.data.labels import LabelScheme
from medseg.errors import MedsegError
from medseg.runfolder import read_run_info, run_task
from medseg.runfolder.history import read_history

log = logging.getLogger(__name__)

PER_CASE_FILES = ("per_case.csv", "per_image.csv")


@dataclass
class PerCaseTable:
    """The evaluation's per-case CSV: ``rows`` of parsed values (floats for numeric columns, NaN when empty)."""

    path: Path
    columns: list[str]
    numeric: list[bool]
    rows: list[list]
    case_column: int

    def column(self, name: str) -> list:
        i = self.columns.index(name)
        return [r[i] for r in self.rows]

    def case_names(self) -> list[str]:
        return [str(r[self.case_column]) for r in self.rows]


@dataclass
class RunContents:
    run_dir: Path
    info: dict
    eval_dir: Path
    scheme: LabelScheme | None = None
    colors: list[tuple[int, int, int]] = field(default_factory=list)
    split: dict | None = None
    plan: dict | None = None
    fingerprint: dict | None = None
    history: list[dict] = field(default_factory=list)
    train_state: dict | None = None
    final_choice: dict | None = None  #: validation.json: the final model chosen on the whole validation split
    summary: dict | None = None
    per_case: PerCaseTable | None = None
    cases: dict[str, dict] | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def is_3d(self) -> bool:
        return self.info.get("task") == run_task(3)

    @property
    def class_names(self) -> list[str]:
        """Foreground class names: the label scheme's, then any others the summary names."""
        names = list(self.scheme.names[1:]) if self.scheme else []
        for name in ((self.summary or {}).get("classes") or {}):
            if name not in names:
                names.append(str(name))
        return names


def _read_json(path: Path, notes: list[str]) -> dict | list | None:
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        notes.append(f"{path.name} could not be read ({e}); its part of the report is left out.")
        log.warning("%s: cannot read (%s)", path, e)
        return None


def _parse_float(text: str) -> float | None:
    try:
        return float(text)
    except ValueError:
        return None


def read_per_case_csv(path: Path) -> PerCaseTable:
    """The case column (``case``, else the first) is text, even when the names are numbers (DRIVE's ``01``);
    other columns whose non-empty values all parse as numbers are numeric (empty cells become NaN)."""
    with path.open(newline="", encoding="utf-8") as f:
        reader = csv.reader(f)
        columns = next(reader, [])
        raw = [r + [""] * (len(columns) - len(r)) for r in reader if r]
    case_column = columns.index("case") if "case" in columns else 0
    numeric = []
    for i in range(len(columns)):
        values = [r[i].strip() for r in raw if r[i].strip()]
        numeric.append(i != case_column and bool(values) and all(_parse_float(v) is not None for v in values))
    rows = [[(_parse_float(v.strip()) if v.strip() else math.nan) if n else v for v, n in zip(r, numeric)] for r in raw]
    return PerCaseTable(path, columns, numeric, rows, case_column)


def _cases_map(obj) -> dict[str, dict] | None:
    """``cases.json`` as ``{case: {"image", "label", "prediction", "fov"}}`` (a list of entries with "case" also works)."""
    if isinstance(obj, dict) and isinstance(obj.get("cases"), (dict, list)):
        obj = obj["cases"]
    if isinstance(obj, list):
        obj = {str(e.get("case", e.get("key"))): e for e in obj if isinstance(e, dict)}
    if not isinstance(obj, dict):
        return None
    return {str(k): v for k, v in obj.items() if isinstance(v, dict)}


def _colors(run_dir: Path, info: dict, scheme: LabelScheme | None, notes: list[str]) -> list[tuple[int, int, int]]:
    """Display colour per class id: labels.json, else the run's display colours, else the scheme's palette."""
    labels = _read_json(run_dir / "labels.json", notes)
    try:
        if isinstance(labels, dict) and isinstance(labels.get("labels"), dict):
            by_id = {int(k): v["color"] for k, v in labels["labels"].items()}
            return [tuple(int(x) for x in by_id[i][:3]) for i in range(len(by_id))]
        if info.get("display_colors"):
            return [tuple(int(x) for x in c[:3]) for c in info["display_colors"]]
    except (KeyError, TypeError, ValueError):
        pass
    return list(scheme.colors()) if scheme else []


def read_run_contents(run_dir: str | Path, evaluation: str | Path | None = None) -> RunContents:
    """Gather everything the report shows. Raises :class:`RunFolderError` only when ``medseg_run.json`` is missing or unreadable."""
    run_dir = Path(run_dir)
    info = read_run_info(run_dir, require_model=False)
    eval_dir = Path(evaluation) if evaluation else run_dir / "evaluation"
    c = RunContents(run_dir=run_dir, info=info, eval_dir=eval_dir)
    try:
        c.scheme = LabelScheme.from_json(info["labels"]) if info.get("labels") else None
    except (MedsegError, KeyError, TypeError, ValueError) as e:
        c.notes.append(f"the run's label scheme could not be read ({e}).")
    c.colors = _colors(run_dir, info, c.scheme, c.notes)
    split = _read_json(run_dir / "split.json", c.notes)
    c.split = split if isinstance(split, dict) else None
    for name in ("plan", "fingerprint"):
        obj = _read_json(run_dir / f"{name}.json", c.notes)
        setattr(c, name, obj if isinstance(obj, (dict, list)) else None)
    choice = _read_json(run_dir / "validation.json", c.notes)
    c.final_choice = choice if isinstance(choice, dict) else None
    try:
        c.history = read_history(run_dir / "history.csv")
    except (OSError, ValueError, KeyError, TypeError) as e:
        c.notes.append(f"history.csv could not be read ({e}); no training curves.")
    state = _read_json(run_dir / "checkpoints" / "last.json", c.notes)
    c.train_state = state.get("info") if isinstance(state, dict) and isinstance(state.get("info"), dict) else None
    summary = _read_json(eval_dir / "summary.json", c.notes)
    c.summary = summary if isinstance(summary, dict) else None
    for name in PER_CASE_FILES:
        path = eval_dir / name
        if path.is_file():
            try:
                c.per_case = read_per_case_csv(path)
            except (OSError, UnicodeDecodeError, csv.Error) as e:
                c.notes.append(f"{name} could not be read ({e}).")
            break
    c.cases = _cases_map(_read_json(eval_dir / "cases.json", c.notes))
    return c
