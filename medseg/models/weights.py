"""A network saved as safetensors weights plus a JSON of its constructor arguments.

``save_model(dir, model)`` writes ``model.safetensors`` and ``model.json``; ``load_model(dir)``
rebuilds the network from the JSON alone and loads the weights. Nothing is unpickled, so a run
folder from elsewhere is safe to load.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import nn
from torch.nn.modules.module import register_module_parameter_registration_hook

from medseg.errors import MedsegError, RunFolderError
from medseg.io.atomic import write_json
from medseg.io.weights import WEIGHTS_FILE, load_tensors, save_tensors
from medseg.models.registry import model_config, model_from_config

CONFIG_FILE = "model.json"
__all__ = ["CONFIG_FILE", "WEIGHTS_FILE", "load_model", "save_model"]


def _state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    model = getattr(model, "module", model)  # unwrap DDP / compiled
    model = getattr(model, "_orig_mod", model)
    return {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}


def save_model(folder: str | Path, model: nn.Module, name: str = "model") -> None:
    """Write ``{name}.safetensors`` and ``{name}.json`` (the model's config) into ``folder``."""
    folder = Path(folder)
    inner = getattr(getattr(model, "module", model), "_orig_mod", getattr(model, "module", model))
    save_tensors(folder / f"{name}.safetensors", _state_dict(model))
    write_json(folder / f"{name}.json", model_config(inner))


#: No integer in a model.json (widths, layer counts, kernel sizes, strides) is anywhere near this.
MAX_CONFIG_INT = 2**16


class _TooLarge(Exception):
    pass


def _check_config(config, cfg_path: Path) -> None:
    """A JSON object with the model's name, whose integers stay below :data:`MAX_CONFIG_INT`: a corrupt
    count (``"depth": 1000000000``) would otherwise make the constructor loop or allocate without end."""
    if not isinstance(config, dict) or not isinstance(config.get("name"), str):
        raise RunFolderError('expected a JSON object with the model\'s "name" and constructor arguments', path=cfg_path)
    stack = [config]
    while stack:
        value = stack.pop()
        if isinstance(value, dict):
            stack.extend(value.values())
        elif isinstance(value, list):
            stack.extend(value)
        elif isinstance(value, int) and not isinstance(value, bool) and abs(value) > MAX_CONFIG_INT:
            raise RunFolderError(f"holds the number {value}, far beyond any network's sizes or counts", path=cfg_path,
                                 hint="the file is corrupt; use the model.json saved with the weights")


def _build(config: dict, state: dict[str, torch.Tensor], cfg_path: Path) -> nn.Module:
    """Build the network of ``config``, first on the meta device (no memory), where it is refused as soon as it
    has more weights than ``state`` holds: a corrupt width must not allocate terabytes."""
    left = {"tensors": len(state), "values": sum(t.numel() for t in state.values())}

    def spend(module, name, param):
        left["tensors"] -= 1
        left["values"] -= param.numel()
        if left["tensors"] < 0 or left["values"] < 0:
            raise _TooLarge

    try:
        handle = register_module_parameter_registration_hook(spend)
        try:
            with torch.device("meta"):
                model_from_config(config)
        finally:
            handle.remove()
        return model_from_config(config)
    except _TooLarge:
        raise RunFolderError(f"weights do not match the model config: it describes a network with more weights than "
                             f"{cfg_path.stem}.safetensors holds ({len(state)} tensors, "
                             f"{sum(t.numel() for t in state.values())} values)", path=cfg_path,
                             hint=f"the weights and {cfg_path.name} must come from the same run") from None
    except MedsegError as e:  # an unknown model or argument
        raise RunFolderError(e.message, path=cfg_path, hint=e.hint) from None
    except (TypeError, ValueError, LookupError, ArithmeticError, AttributeError, RuntimeError) as e:
        raise RunFolderError(f"does not describe a network medseg can build ({type(e).__name__}: {e})", path=cfg_path,
                             hint="the file is corrupt; use the model.json saved with the weights") from None


def load_model(folder: str | Path, name: str = "model", map_location: str | torch.device = "cpu") -> nn.Module:
    """Rebuild the network saved by :func:`save_model` and load its weights."""
    folder = Path(folder)
    cfg_path = folder / f"{name}.json"
    if not cfg_path.is_file():
        raise RunFolderError(f"no {cfg_path.name} here; this is not a medseg model folder", path=folder)
    try:
        config = json.loads(cfg_path.read_text(encoding="utf-8"))
    except (ValueError, RecursionError) as e:  # bad JSON or UTF-8, a number of 5000 digits, deep nesting
        raise RunFolderError(f"invalid JSON ({type(e).__name__}: {str(e)[:200]})", path=cfg_path) from None
    _check_config(config, cfg_path)
    state = load_tensors(folder / f"{name}.safetensors")
    model = _build(config, state, cfg_path)
    try:
        missing, unexpected = model.load_state_dict(state, strict=False)
    except RuntimeError as e:  # a tensor of another shape than the config builds
        first = str(e).split("\n\t", 2)[1] if "\n\t" in str(e) else str(e)
        raise RunFolderError(f"weights do not match the model config: {first.strip()}", path=folder / f"{name}.safetensors",
                             hint=f"the weights and {cfg_path.name} must come from the same run") from None
    if missing or unexpected:
        raise RunFolderError(
            f"weights do not match the model config (missing: {missing[:5]}, unexpected: {unexpected[:5]})",
            path=folder,
        )
    return model.to(map_location)
