"""Labels the user declares: ``--label-colors "background=0,0,0;lung=255,0,0"`` or a ``labels.json``."""

from __future__ import annotations

import json
import re
from pathlib import Path

from medseg.data.labels import color_tuple, default_names, fmt_color
from medseg.errors import ConfigError


def parse_label_colors(spec: str) -> dict[str, tuple[int, int, int]]:
    """Parse the CLI form ``"background=0,0,0;lung=255,0,0;tumour=#00ff00"``.

    Returns ``{name: (r, g, b)}`` in class order (the first entry is class 0).
    A single number is a gray level: ``vessel=255`` means ``(255, 255, 255)``.
    """
    if not isinstance(spec, str) or not spec.strip():
        raise ConfigError("empty --label-colors", hint='write e.g. "background=0,0,0;lung=255,0,0"')
    out: dict[str, tuple[int, int, int]] = {}
    for item in (p.strip() for p in re.split(r"[;\n]", spec)):
        if not item:
            continue
        if "=" not in item:
            raise ConfigError(f"--label-colors entry {item!r} has no '='",
                              hint='write each class as name=r,g,b, separated by ";", e.g. "background=0,0,0;lung=255,0,0"')
        name, value = (s.strip() for s in item.split("=", 1))
        if not name:
            raise ConfigError(f"--label-colors entry {item!r} has no class name")
        if name in out:
            raise ConfigError(f"--label-colors names class {name!r} twice")
        out[name] = color_tuple(value, f"--label-colors entry {item!r}")
    check_distinct(out, "--label-colors")
    return out


def check_distinct(colors: dict, where: str) -> None:
    seen: dict[tuple, str] = {}
    for name, c in colors.items():
        if c in seen:
            raise ConfigError(f"{where}: classes {seen[c]!r} and {name!r} have the same colour {fmt_color(c)}")
        seen[c] = name
    if not colors:
        raise ConfigError(f"{where}: no classes declared")


def load_labels_json(path) -> dict[str, tuple[int, int, int]]:
    """Read a ``labels.json``: ``{name: (r, g, b)}`` in class order.

    Two forms are accepted::

        {"labels": {"0": {"name": "background", "color": [0, 0, 0]},
                    "1": {"name": "lung", "color": "#ff0000"}}}
        {"background": [0, 0, 0], "lung": [255, 0, 0]}

    In the first, the keys must be the class ids 0..K-1. A colour may be
    ``[r, g, b]``, ``"#rrggbb"`` or a single gray level.
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError("labels file not found", path=path)
    try:
        data = json.loads(path.read_text(encoding="utf-8-sig"))
    except json.JSONDecodeError as e:
        raise ConfigError(f"not valid JSON (line {e.lineno}, column {e.colno}: {e.msg})", path=path) from None
    except UnicodeDecodeError as e:
        raise ConfigError(f"cannot read labels file: {e}", path=path, hint="save it as UTF-8 text") from None
    except (ValueError, RecursionError) as e:  # a number of 5000 digits, or nesting deeper than Python's stack
        raise ConfigError(f"not valid JSON ({str(e)[:200]})", path=path) from None
    hint = ('write {"labels": {"0": {"name": "background", "color": [0,0,0]}, "1": {...}}} '
            'or {"background": [0,0,0], "lung": [255,0,0]}')
    if not isinstance(data, dict) or not data:
        raise ConfigError("expected a JSON object of labels", path=path, hint=hint)
    out: dict[str, tuple[int, int, int]] = {}
    try:
        if "labels" in data and isinstance(data["labels"], dict):
            entries = data["labels"]
            try:
                ids = sorted(int(k) for k in entries)
            except ValueError:
                raise ConfigError("the keys of 'labels' must be class ids 0, 1, 2, ...", path=path, hint=hint) from None
            if ids != list(range(len(ids))):
                raise ConfigError(f"class ids must run 0..{len(ids) - 1} without gaps (found {ids})", path=path, hint=hint)
            by_id = {int(k): v for k, v in entries.items()}
            for i in ids:
                e = by_id[i]
                if not isinstance(e, dict) or "color" not in e:
                    raise ConfigError(f"class {i} needs a 'color'", path=path, hint=hint)
                name = str(e.get("name") or (default_names("color", i + 1)[i]))
                if name in out:
                    raise ConfigError(f"class name {name!r} is used twice", path=path)
                out[name] = color_tuple(e["color"], f"{path}: class {i}")
        else:
            for name, value in data.items():
                out[str(name)] = color_tuple(value, f"{path}: class {name!r}")
        check_distinct(out, str(path))
    except ConfigError as e:
        if e.path is None:
            raise ConfigError(e.message, path=path, hint=e.hint or hint) from None
        raise
    return out
