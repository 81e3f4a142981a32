"""Per-epoch training history as CSV (rewritten atomically after every epoch)."""

from __future__ import annotations

import csv
import io
import math
from pathlib import Path

from medseg.io.atomic import write_text


def write_history(path: str | Path, rows: list[dict]) -> None:
    fields: list[str] = []
    for r in rows:
        fields += [k for k in r if k not in fields]
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=fields)
    w.writeheader()
    for r in rows:
        w.writerow({k: ("" if v is None or (isinstance(v, float) and math.isnan(v)) else v) for k, v in r.items()})
    write_text(path, buf.getvalue())


def read_history(path: str | Path) -> list[dict]:
    path = Path(path)
    if not path.is_file():
        return []
    rows = []
    with path.open(newline="") as f:
        for r in csv.DictReader(f):
            rows.append({k: (float(v) if v not in ("", None) else None) for k, v in r.items()})
    for r in rows:
        r["epoch"] = int(r["epoch"])
    return rows
