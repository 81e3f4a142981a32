"""Resumable training state, without pickle.

``save_state(path_stem, ...)`` writes ``<stem>.safetensors`` (model weights,
optimizer tensors, torch RNG states) and ``<stem>.json`` (epoch, scalars,
optimizer hyper-parameters, numpy RNG state), each atomically, JSON last, so a
JSON on disk always describes a complete tensor file.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch

from medseg.errors import RunFolderError
from medseg.io.atomic import write_json
from medseg.io.weights import load_tensors, save_tensors


def _unwrap(model: torch.nn.Module) -> torch.nn.Module:
    model = getattr(model, "module", model)
    return getattr(model, "_orig_mod", model)


def save_state(
    stem: str | Path,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    generators: dict[str, torch.Generator],
    numpy_rng: np.random.Generator,
    info: dict[str, Any],
) -> None:
    stem = Path(stem)
    tensors: dict[str, torch.Tensor] = {}
    for k, v in _unwrap(model).state_dict().items():
        tensors[f"model.{k}"] = v.detach().cpu().contiguous()
    opt = optimizer.state_dict()
    scalars: dict[str, dict[str, Any]] = {}
    for idx, state in opt["state"].items():
        for name, value in state.items():
            if torch.is_tensor(value):
                tensors[f"optim.{idx}.{name}"] = value.detach().cpu().contiguous()
            else:
                scalars.setdefault(str(idx), {})[name] = value
    tensors["rng.torch"] = torch.get_rng_state()
    for name, gen in generators.items():
        tensors[f"rng.gen.{name}"] = gen.get_state()
    save_tensors(stem.with_suffix(".safetensors"), tensors)
    write_json(
        stem.with_suffix(".json"),
        {
            "info": info,
            "optimizer": {"param_groups": opt["param_groups"], "scalars": scalars},
            "numpy_rng": numpy_rng.bit_generator.state,
        },
    )


def load_state(
    stem: str | Path,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    generators: dict[str, torch.Generator],
    numpy_rng: np.random.Generator,
) -> dict[str, Any]:
    """Restore everything saved by :func:`save_state`; returns its ``info``."""
    stem = Path(stem)
    meta_path = stem.with_suffix(".json")
    if not meta_path.is_file():
        raise RunFolderError("no training state to resume from", path=meta_path, hint="start a new run without --resume")
    meta = json.loads(meta_path.read_text())
    tensors = load_tensors(stem.with_suffix(".safetensors"))
    target = _unwrap(model)
    device = next(target.parameters()).device
    target.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("model.")})
    state: dict[int, dict[str, Any]] = {}
    for k, v in tensors.items():
        if k.startswith("optim."):
            _, idx, name = k.split(".", 2)
            state.setdefault(int(idx), {})[name] = v.to(device) if name != "step" else v
    for idx, sc in meta["optimizer"]["scalars"].items():
        state.setdefault(int(idx), {}).update(sc)
    optimizer.load_state_dict({"state": state, "param_groups": meta["optimizer"]["param_groups"]})
    torch.set_rng_state(tensors["rng.torch"])
    for name, gen in generators.items():
        gen.set_state(tensors[f"rng.gen.{name}"])
    numpy_rng.bit_generator.state = meta["numpy_rng"]
    return meta["info"]
