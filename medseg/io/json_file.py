"""Reading a JSON file that must hold one object (``dataset.json``, ``medseg_run.json``, ``bundle.json``...)."""

from __future__ import annotations

import json
from pathlib import Path

from medseg.errors import DataError, MedsegError


def read_json_object(path: str | Path, error: type[MedsegError] = DataError) -> dict:
    """The object in the JSON file ``path``; an unreadable file, invalid JSON or another top-level value is an
    ``error`` naming the file."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as e:
        raise error(f"cannot read: {e}", path=path) from None
    except (json.JSONDecodeError, RecursionError) as e:
        raise error(f"invalid JSON: {e}", path=path, hint="fix the syntax (a trailing comma?)") from None
    if not isinstance(data, dict):
        raise error("expected a JSON object at the top level", path=path)
    return data
