"""``plan.json``: the editable training plan, versioned and validated on load.

A plan is a JSON object with ``"plan_version": 1`` and one section per decision; every
decision section carries a ``reason``::

    data            what the plan was made for: path, name, dims, channels, modality, classes, data_hash
    device          kind (cpu | cuda) and the memory_budget ("8.0 GiB") the batch was sized for
    configuration   value ("3d" | "2d"), the candidates considered
    spacing         target: mm per axis (array axis order), null for 2D images; 2D: the working resolution,
                    scale (one factor for every image) or long_side (pixels, per image), null: own pixels
    normalization   scheme: one per channel (zscore | ct | minmax | none; 2D also rgb), stats: null or per channel
    crop_to_nonzero value: true | false
    patch           size: voxels per axis
    batch           size, and the estimated memory of a training step
    network         model, features, depth, strides, kernel_sizes, max_features, dropout
    training        time_budget (seconds or "30m", null: none), max_epochs, iterations_per_epoch, monitor,
                    foreground_fraction, augment_warmup (optional; 0 when absent), val_max_cases (optional;
                    null: every validation case each epoch), val_every (optional; 1)
    overrides       entries a `medseg train` flag replaced: {"patch.size": {"plan": ..., "used": ...}}

:func:`load_plan` checks every key; an unknown key, a missing one or a bad value raises a
:class:`~medseg.errors.ConfigError` naming the file, the key (``"patch.size"``) and the
allowed values.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from medseg.errors import ConfigError
from medseg.io.atomic import write_json
from medseg.planning.memory import format_bytes, parse_bytes
from medseg.planning.normalization import NORMALIZATIONS_2D, NORMALIZATIONS_3D

PLAN_VERSION = 1
SECTIONS = ("data", "device", "configuration", "spacing", "normalization", "crop_to_nonzero", "patch", "batch",
            "network", "training")
STATS_KEYS = ("mean", "std", "p005", "p995")


class _Bad(Exception):
    """A value outside what a key allows; ``allowed`` describes what is."""

    def __init__(self, allowed: str):
        self.allowed = allowed


# --------------------------------------------------------------------------- value checkers


def _text(v):
    if not isinstance(v, str):
        raise _Bad("a string")
    return v


def _opt_text(v):
    return None if v is None else _text(v)


def _choice(*options: str) -> Callable:
    def check(v):
        if v not in options:
            raise _Bad(" | ".join(options))
        return v
    return check


def _int(lo: int = 1, hi: int | None = None) -> Callable:
    def check(v):
        if isinstance(v, bool) or not isinstance(v, int) or v < lo or (hi is not None and v > hi):
            raise _Bad(f"an integer >= {lo}" + (f" and <= {hi}" if hi is not None else ""))
        return v
    return check


def _number(lo: float, hi: float, *, open_lo: bool = False) -> Callable:
    def check(v):
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) \
                or v < lo or v > hi or (open_lo and v == lo):
            raise _Bad(f"a number {'>' if open_lo else '>='} {lo:g} and <= {hi:g}")
        return float(v)
    return check


def _bool(v):
    if not isinstance(v, bool):
        raise _Bad("true | false")
    return v


def _memory(v):
    try:
        return format_bytes(parse_bytes(v))
    except ConfigError:
        raise _Bad('a size such as "8 GiB", "512 MiB" or a number of bytes') from None


def _opt_memory(v):
    return None if v is None else _memory(v)


def _duration(v):
    from medseg.units import parse_duration

    if v is None:
        return None
    try:
        seconds = parse_duration(v)
    except ConfigError:
        seconds = None
    if seconds is None or seconds <= 0:
        raise _Bad('null (no budget), seconds (e.g. 1800) or a duration such as "30m", "1h30m"')
    return seconds


def _int_list(v):
    if not isinstance(v, list) or not v or any(isinstance(x, bool) or not isinstance(x, int) or x < 1 for x in v):
        raise _Bad("a list of positive integers, one per axis")
    return v


def _nested_int_lists(v):
    if not isinstance(v, list) or not all(isinstance(x, list) for x in v):
        raise _Bad("a list of per-axis lists of positive integers, e.g. [[2, 2, 1], [2, 2, 2]]")
    return [_int_list(x) for x in v]


def _opt_spacing(v):
    if v is None:
        return None
    if not isinstance(v, list) or not v or any(isinstance(x, bool) or not isinstance(x, (int, float)) or not x > 0 for x in v):
        raise _Bad("null or a list of positive numbers (mm), one per axis")
    return [float(x) for x in v]


def _opt_scale(v):
    if v is None:
        return None
    return _number(0.0, 4.0, open_lo=True)(v)


def _opt_int(lo: int) -> Callable:
    def check(v):
        if v is None:
            return None
        try:
            return _int(lo)(v)
        except _Bad:
            raise _Bad(f"null or an integer >= {lo}") from None
    return check


def _opt_long_side(v):
    return None if v is None else _int(8, 65536)(v)


def _schemes(v):
    if isinstance(v, str):
        v = [v]
    if not isinstance(v, list) or not v or not all(isinstance(x, str) for x in v):
        raise _Bad("a list with one scheme per channel")
    return v


def _opt_stats(v):
    if v is None:
        return None
    ok = isinstance(v, list) and v and all(
        isinstance(d, dict) and all(isinstance(d.get(k), (int, float)) and not isinstance(d.get(k), bool) for k in STATS_KEYS)
        for d in v)
    if not ok:
        raise _Bad(f"null (computed from the training cases) or one object per channel with {', '.join(STATS_KEYS)}")
    return v


def _dict(v):
    if not isinstance(v, dict):
        raise _Bad("an object")
    return v


def _list(v):
    if not isinstance(v, list):
        raise _Bad("a list")
    return v


def _any(v):
    return v


# --------------------------------------------------------------------------- the schema

#: section -> key -> (checker, required)
SCHEMA: dict[str, dict[str, tuple[Callable, bool]]] = {
    "data": {"path": (_text, True), "name": (_text, False), "dims": (_int(2, 3), True), "channels": (_int(1), True),
             "modality": (_list, False), "num_classes": (_int(2), True), "class_names": (_list, False),
             "num_cases": (_int(0), False), "data_hash": (_opt_text, False), "fingerprint": (_opt_text, False)},
    "device": {"kind": (_choice("cpu", "cuda"), True), "memory_budget": (_memory, True), "source": (_text, False),
               "reason": (_text, False)},
    "configuration": {"value": (_choice("2d", "3d"), True), "candidates": (_list, False), "reason": (_text, False)},
    "spacing": {"target": (_opt_spacing, True), "scale": (_opt_scale, False), "long_side": (_opt_long_side, False),
                "reason": (_text, False)},
    "normalization": {"scheme": (_schemes, True), "stats": (_opt_stats, False), "reason": (_text, False)},
    "crop_to_nonzero": {"value": (_bool, True), "reason": (_text, False)},
    "patch": {"size": (_int_list, True), "reason": (_text, False)},
    "batch": {"size": (_int(1, 4096), True), "estimated_memory": (_opt_memory, False),
              "estimated_step_gflop": (_any, False), "reason": (_text, False)},
    "network": {"model": (_text, True), "features": (_int(1, 4096), False), "depth": (_int(1, 12), False),
                "strides": (_nested_int_lists, False), "kernel_sizes": (_nested_int_lists, False),
                "max_features": (_int(1, 8192), False), "dropout": (_number(0.0, 0.99), False), "reason": (_text, False)},
    "training": {"time_budget": (_duration, True), "max_epochs": (_int(1), True), "iterations_per_epoch": (_int(1), True),
                 "foreground_fraction": (_number(0.0, 1.0), True), "monitor": (_choice("val_dice", "val_loss"), False),
                 "augment_warmup": (_number(0.0, 0.99), False), "val_max_cases": (_opt_int(1), False),
                 "val_every": (_int(1, 1000), False), "reason": (_text, False)},
}


def _error(path: Path | None, key: str, value: Any, allowed: str, problem: str = "has an invalid value") -> ConfigError:
    shown = json.dumps(value) if not isinstance(value, str) else repr(value)
    if len(shown) > 80:
        shown = shown[:77] + "..."
    return ConfigError(f"plan key '{key}' {problem}: {shown}", path=path, hint=f"allowed: {allowed}")


@dataclass
class Plan:
    """A validated plan; ``sections`` maps each of :data:`SECTIONS` to its dict."""

    sections: dict[str, dict[str, Any]]
    overrides: dict[str, Any] = field(default_factory=dict)
    medseg_version: str = ""
    created: str = ""

    # -- convenient reads
    def __getitem__(self, section: str) -> dict[str, Any]:
        return self.sections[section]

    @property
    def dims(self) -> int:
        return int(self.sections["data"]["dims"])

    @property
    def patch_size(self) -> tuple[int, ...]:
        return tuple(self.sections["patch"]["size"])

    def to_json(self) -> dict[str, Any]:
        return {"plan_version": PLAN_VERSION, "medseg_version": self.medseg_version, "created": self.created,
                **{s: self.sections[s] for s in SECTIONS}, "overrides": self.overrides}

    @classmethod
    def new(cls, sections: dict[str, dict[str, Any]]) -> "Plan":
        import medseg

        plan = cls({s: dict(sections[s]) for s in SECTIONS}, {}, medseg.__version__, time.strftime("%Y-%m-%dT%H:%M:%S"))
        return validate_plan(plan.to_json())

    def save(self, path: str | Path) -> Path:
        write_json(path, self.to_json())
        return Path(path)


def validate_plan(raw: Any, path: str | Path | None = None) -> Plan:
    """Check a plan's JSON object key by key (see :data:`SCHEMA`) and across keys; return the :class:`Plan`."""
    p = Path(path) if path is not None else None
    if not isinstance(raw, dict):
        raise ConfigError("a plan is a JSON object", path=p, hint="make it with `medseg plan DATA`")
    version = raw.get("plan_version")
    if version != PLAN_VERSION:
        raise _error(p, "plan_version", version, str(PLAN_VERSION),
                     "is missing" if version is None else "is not one this medseg reads")
    known = {"plan_version", "medseg_version", "created", "overrides", *SECTIONS}
    for key in raw:
        if key not in known:
            raise _error(p, key, raw[key], "the keys " + ", ".join(sorted(known)), "is unknown")
    sections: dict[str, dict[str, Any]] = {}
    for name in SECTIONS:
        if name not in raw:
            raise _error(p, name, None, "an object with the keys " + ", ".join(SCHEMA[name]), "is missing")
        sec = raw[name]
        if not isinstance(sec, dict):
            raise _error(p, name, sec, "an object with the keys " + ", ".join(SCHEMA[name]))
        spec = SCHEMA[name]
        out: dict[str, Any] = {}
        for key, value in sec.items():
            if key not in spec:
                raise _error(p, f"{name}.{key}", value, "the keys " + ", ".join(spec), "is unknown")
            try:
                out[key] = spec[key][0](value)
            except _Bad as e:
                raise _error(p, f"{name}.{key}", value, e.allowed) from None
        for key, (check, required) in spec.items():
            if required and key not in sec:
                try:
                    check(None)
                    allowed = "see `medseg plan`"
                except _Bad as e:
                    allowed = e.allowed
                raise _error(p, f"{name}.{key}", None, allowed, "is missing")
        sections[name] = out
    _cross_check(sections, p)
    overrides = raw.get("overrides") or {}
    if not isinstance(overrides, dict):
        raise _error(p, "overrides", overrides, "an object")
    return Plan(sections, overrides, str(raw.get("medseg_version", "")), str(raw.get("created", "")))


def _cross_check(s: dict[str, dict[str, Any]], p: Path | None) -> None:
    dims, channels = s["data"]["dims"], s["data"]["channels"]
    axes = f"{dims} values (one per axis)"
    if s["configuration"]["value"] != f"{dims}d":
        raise _error(p, "configuration.value", s["configuration"]["value"], f"{dims}d",
                     f"cannot be used for {dims}D data" + (" (slice-wise training of volumes is listed as a candidate "
                                                            "but not implemented yet)" if dims == 3 else ""))
    target = s["spacing"]["target"]
    if dims == 3 and (target is None or len(target) != 3):
        raise _error(p, "spacing.target", target, "three positive numbers in mm, e.g. [1.0, 1.0, 2.5]")
    if dims == 2 and target is not None:
        raise _error(p, "spacing.target", target, "null (2D: the working resolution is spacing.scale or spacing.long_side)")
    scale, side = s["spacing"].get("scale"), s["spacing"].get("long_side")
    if dims == 3 and (scale is not None or side is not None):
        raise _error(p, "spacing.scale" if scale is not None else "spacing.long_side", scale if scale is not None else side,
                     "null (3D volumes are resampled to spacing.target)")
    if scale is not None and side is not None:
        raise _error(p, "spacing.scale", scale, "null when spacing.long_side is set (one of the two)")
    schemes = s["normalization"]["scheme"]
    allowed = NORMALIZATIONS_3D if dims == 3 else NORMALIZATIONS_2D
    for sch in schemes:
        if sch not in allowed:
            raise _error(p, "normalization.scheme", schemes, f"one of {' | '.join(allowed)} per channel")
    if len(schemes) not in (1, channels):
        raise _error(p, "normalization.scheme", schemes, f"one scheme, or {channels} (one per channel)")
    if dims == 2 and len(set(schemes)) > 1:
        raise _error(p, "normalization.scheme", schemes, "one scheme for all channels of a 2D image")
    stats = s["normalization"].get("stats")
    if stats is not None and len(stats) != channels:
        raise _error(p, "normalization.stats", stats, f"null or {channels} object(s), one per channel")
    if "ct" in schemes and len(set(schemes)) > 1 and stats is None:
        raise _error(p, "normalization.stats", stats, "per-channel statistics when CT is mixed with other schemes")
    patch = s["patch"]["size"]
    if len(patch) != dims:
        raise _error(p, "patch.size", patch, axes)
    net = s["network"]
    depth, strides, kernels = net.get("depth"), net.get("strides"), net.get("kernel_sizes")
    from medseg.models import list_models

    models = list_models()
    if net["model"] not in models:
        raise _error(p, "network.model", net["model"], " | ".join(models))
    if strides is not None:
        if depth is None or len(strides) != depth or any(len(x) != dims for x in strides):
            raise _error(p, "network.strides", strides, f"network.depth ({depth}) lists of {axes}")
        div = [math.prod(x[a] for x in strides) for a in range(dims)]
        if any(n % d for n, d in zip(patch, div)):
            raise _error(p, "patch.size", patch, f"multiples of the network's downsampling {div} per axis "
                         "(or change network.strides)", "does not fit the network")
    if kernels is not None:
        if depth is None or len(kernels) != depth + 1 or any(len(x) != dims for x in kernels):
            raise _error(p, "network.kernel_sizes", kernels, f"network.depth + 1 ({(depth or 0) + 1}) lists of {axes}")
        if any(k % 2 == 0 for x in kernels for k in x):
            raise _error(p, "network.kernel_sizes", kernels, "odd kernel sizes (1, 3, 5, ...)")


def load_plan(path: str | Path) -> Plan:
    """Read and validate ``plan.json``; any problem is a :class:`ConfigError` naming the file and key."""
    path = Path(path)
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError("plan file not found", path=path, hint="make one with `medseg plan DATA --out plan.json`") from None
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"cannot read the plan: {e}", path=path) from None
    except (ValueError, RecursionError) as e:  # JSONDecodeError; also a number of 5000 digits, or deep nesting
        raise ConfigError(f"the plan is not valid JSON: {str(e)[:200]}", path=path,
                          hint="fix the syntax (a trailing comma?)") from None
    try:
        return validate_plan(raw, path)
    except ConfigError:
        raise
    except (TypeError, ValueError, LookupError, ArithmeticError, AttributeError) as e:  # a value no check expected
        raise ConfigError(f"the plan holds a value medseg cannot use ({type(e).__name__}: {str(e)[:200]})", path=path,
                          hint="compare it with a plan made by `medseg plan`, or make a new one") from None
