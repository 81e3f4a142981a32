"""The training options of ``medseg train`` and ``medseg compare``, built from one declaration.

:func:`with_setup_options` adds every field of :class:`~medseg.training.options.SetupOptions` to a
command as a typer option (its help, flag names and limits come from the field), and hands the
command one ``options: SetupOptions``; per-command defaults may differ where the commands differ.
"""

from __future__ import annotations

import functools
import inspect
import types
import typing
from dataclasses import MISSING, fields
from typing import Any, Callable, Optional

import typer

from medseg.training.options import SetupOptions


def _annotation(tp: Any) -> Any:
    """``X | None`` as ``Optional[X]`` (what typer reads)."""
    if isinstance(tp, types.UnionType) or typing.get_origin(tp) is typing.Union:
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        return Optional[args[0]] if len(args) == 1 else tp
    return tp


def with_setup_options(**defaults: Any) -> Callable:
    """Decorate a command ``f(..., options: SetupOptions)``: typer sees every option of :class:`SetupOptions`
    (after ``f``'s own parameters), with ``defaults`` replacing single fields' defaults."""
    hints = typing.get_type_hints(SetupOptions)
    unknown = set(defaults) - {f.name for f in fields(SetupOptions)}
    if unknown:
        raise TypeError(f"unknown setup options {sorted(unknown)}")

    def decorate(command: Callable) -> Callable:
        own = [p for p in inspect.signature(command).parameters.values() if p.name != "options"]
        added = []
        for f in fields(SetupOptions):
            default = defaults.get(f.name, f.default if f.default is not MISSING else None)
            meta = f.metadata
            added.append(inspect.Parameter(
                f.name, inspect.Parameter.KEYWORD_ONLY, annotation=_annotation(hints[f.name]),
                default=typer.Option(default, *meta.get("flags", ()), help=meta.get("help"), **meta.get("typer", {}))))

        @functools.wraps(command)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            options = SetupOptions(**{f.name: kwargs.pop(f.name) for f in fields(SetupOptions)})
            return command(*args, options=options, **kwargs)

        params = [p.replace(kind=inspect.Parameter.KEYWORD_ONLY) if p.kind == inspect.Parameter.VAR_KEYWORD else p for p in own]
        wrapper.__signature__ = inspect.Signature([*params, *added])  # type: ignore[attr-defined]
        wrapper.__annotations__ = {p.name: p.annotation for p in [*params, *added]}
        return wrapper

    return decorate


def given_options(ctx: typer.Context) -> set[str]:
    """Names of the options given on the command line (not left at their defaults)."""
    return {name for name in ctx.params if getattr(ctx.get_parameter_source(name), "name", "") == "COMMANDLINE"}
