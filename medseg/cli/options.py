"""Small parsers shared by the subcommands."""

from __future__ import annotations

from medseg.errors import ConfigError


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
