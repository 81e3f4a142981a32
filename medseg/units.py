"""Quantities as users write them: durations (``"15m"``, ``"1h30m"``)."""

from __future__ import annotations

import re

from medseg.errors import ConfigError


def parse_duration(text: str | float | int | None) -> float | None:
    """``"15m"``, ``"90s"``, ``"1h30m"``, ``"2.5h"`` or a number of seconds → seconds."""
    if text is None or text == "":
        return None
    if isinstance(text, (int, float)):
        return float(text)
    s = text.strip().lower()
    if re.fullmatch(r"\d+(\.\d+)?", s):
        return float(s)
    parts = re.findall(r"(\d+(?:\.\d+)?)\s*([hms])", s)
    if not parts or "".join(n + u for n, u in parts) != s.replace(" ", ""):
        raise ConfigError(f"cannot read duration '{text}'", hint="write e.g. 90s, 15m, 1h30m")
    return sum(float(n) * {"h": 3600, "m": 60, "s": 1}[u] for n, u in parts)
