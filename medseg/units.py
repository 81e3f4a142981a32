"""Quantities as users write them: durations (``"15m"``, ``"1h30m"``), sizes (``"256x320"``) and spacings."""

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


def parse_size(text: str | None) -> tuple[int, int] | None:
    """``"256"`` → (256, 256); ``"256x320"`` → (256, 320) as (H, W); ``None`` stays ``None``."""
    if text in (None, "", "none", "native"):
        return None
    try:
        parts = [int(p) for p in str(text).lower().replace("*", "x").split("x")]
    except ValueError:
        raise ConfigError(f"cannot read size '{text}'", hint="write e.g. 256 or 256x320 (height x width)") from None
    if len(parts) == 1:
        parts = parts * 2
    if len(parts) != 2 or min(parts) < 8:
        raise ConfigError(f"cannot read size '{text}'", hint="write e.g. 256 or 256x320 (height x width), at least 8")
    return (parts[0], parts[1])


def _numbers(text: str, cast, what: str, example: str) -> list:
    try:
        return [cast(p) for p in str(text).lower().replace("*", "x").replace(",", "x").split("x")]
    except ValueError:
        raise ConfigError(f"cannot read {what} '{text}'", hint=f"write e.g. {example}") from None


def parse_size_3d(text: str | None) -> tuple[int, int, int] | None:
    """``"64"`` → (64, 64, 64); ``"40x56x40"`` → (40, 56, 40) in array axis order (x, y, z)."""
    if text in (None, ""):
        return None
    parts = _numbers(text, int, "patch size", "64 or 40x56x40")
    if len(parts) == 1:
        parts = parts * 3
    if len(parts) != 3 or min(parts) < 4:
        raise ConfigError(f"cannot read 3D patch size '{text}'", hint="write e.g. 64 or 40x56x40 (x, y, z), each at least 4")
    return (parts[0], parts[1], parts[2])


def parse_spacing(text: str | None) -> tuple[float, float, float] | None:
    """``"1"`` → (1.0, 1.0, 1.0); ``"0.8x0.8x2.5"`` (or with commas) → three spacings in mm."""
    if text in (None, ""):
        return None
    parts = _numbers(text, float, "spacing", "1 or 0.8x0.8x2.5")
    if len(parts) == 1:
        parts = parts * 3
    if len(parts) != 3 or min(parts) <= 0:
        raise ConfigError(f"cannot read spacing '{text}'", hint="write one or three positive numbers in mm, e.g. 0.8x0.8x2.5")
    return (parts[0], parts[1], parts[2])
