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

from medseg.errors import RunFolderError
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


def load_model(folder: str | Path, name: str = "model", map_location: str | torch.device = "cpu") -> nn.Module:
    """Rebuild the network saved by :func:`save_model` and load its weights."""
    folder = Path(folder)
    cfg_path = folder / f"{name}.json"
    if not cfg_path.is_file():
        raise RunFolderError(f"no {cfg_path.name} here; this is not a medseg model folder", path=folder)
    try:
        config = json.loads(cfg_path.read_text())
    except json.JSONDecodeError as e:
        raise RunFolderError(f"invalid JSON ({e})", path=cfg_path) from None
    model = model_from_config(config)
    state = load_tensors(folder / f"{name}.safetensors")
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
