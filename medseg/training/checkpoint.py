"""Resumable training state, without pickle, in one atomic file.

``save_state(stem, ...)`` writes ``<stem>.safetensors``: the model weights (and those of
``extra`` networks, such as the weight average), the optimizer tensors, with everything else (loop position, best score, optimizer
hyper-parameters, random-generator states) as JSON in the file's metadata. The
file is replaced atomically, so a ``kill -9`` at any moment leaves either the
previous or the new state, never a mix. ``<stem>.json`` is a readable copy of
the metadata, written after it (tools and tests read it; resuming does not).

Random-generator states (:func:`capture_rng` / :func:`restore_rng`) are plain
JSON: Python's ``random``, NumPy's global generator, torch's CPU (and CUDA)
generators and named ``torch.Generator`` objects. (Training batches need none:
they are drawn by step number, see :mod:`medseg.data.loader`.) Under DDP, the
engine stores one such entry per rank.
"""

from __future__ import annotations

import base64
import json
import random
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import safe_open

from medseg.errors import RunFolderError
from medseg.io.atomic import write_json
from medseg.io.weights import load_tensors, save_tensors

META_KEY = "medseg_state"


def unwrap(model: torch.nn.Module) -> torch.nn.Module:
    """The plain network inside a DDP and/or ``torch.compile`` wrapper."""
    model = getattr(model, "_orig_mod", model)
    model = getattr(model, "module", model)
    return getattr(model, "_orig_mod", model)


def _b64(t: torch.Tensor) -> str:
    return base64.b64encode(t.cpu().numpy().tobytes()).decode("ascii")


def _unb64(s: str) -> torch.Tensor:
    return torch.frombuffer(bytearray(base64.b64decode(s)), dtype=torch.uint8)


def capture_rng(generators: dict[str, torch.Generator] | None = None) -> dict[str, Any]:
    """Every random-generator state this process uses, as JSON-able data."""
    py = random.getstate()
    npg = np.random.get_state()
    state: dict[str, Any] = {
        "python": [py[0], list(py[1]), py[2]],
        "numpy_global": [npg[0], npg[1].tolist(), int(npg[2]), int(npg[3]), float(npg[4])],
        "torch": _b64(torch.get_rng_state()),
        "generators": {k: _b64(g.get_state()) for k, g in (generators or {}).items()},
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = [_b64(s) for s in torch.cuda.get_rng_state_all()]
    return state


def restore_rng(state: dict[str, Any], generators: dict[str, torch.Generator] | None = None) -> None:
    """Put back what :func:`capture_rng` captured (entries absent from ``state`` are left alone)."""
    if "python" in state:
        v, internal, gauss = state["python"]
        random.setstate((v, tuple(internal), gauss))
    if "numpy_global" in state:
        name, keys, pos, has_gauss, cached = state["numpy_global"]
        np.random.set_state((name, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached))
    if "torch" in state:
        torch.set_rng_state(_unb64(state["torch"]))
    for k, g in (generators or {}).items():
        if k in state.get("generators", {}):
            g.set_state(_unb64(state["generators"][k]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([_unb64(s) for s in state["cuda"]])


def save_state(stem: str | Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
               info: dict[str, Any], rng: Any = None, extra: dict[str, torch.nn.Module] | None = None) -> None:
    """Write the training state (see the module docstring); ``rng``: JSON-able generator states;
    ``extra``: more networks (e.g. ``{"ema": averaged}``), stored under their name as prefix."""
    stem = Path(stem)
    tensors: dict[str, torch.Tensor] = {}
    for prefix, net in {"model": model, **(extra or {})}.items():
        for k, v in unwrap(net).state_dict().items():
            tensors[f"{prefix}.{k}"] = v.detach().cpu().contiguous()
    opt = optimizer.state_dict()
    scalars: dict[str, dict[str, Any]] = {}
    for idx, st in opt["state"].items():
        for name, value in st.items():
            if torch.is_tensor(value):
                tensors[f"optim.{idx}.{name}"] = value.detach().cpu().contiguous()
            else:
                scalars.setdefault(str(idx), {})[name] = value
    meta = {"info": info, "optimizer": {"param_groups": opt["param_groups"], "scalars": scalars}, "rng": rng}
    save_tensors(stem.with_suffix(".safetensors"), tensors, metadata={META_KEY: json.dumps(meta)})
    write_json(stem.with_suffix(".json"), meta)


def read_state_meta(stem: str | Path) -> dict[str, Any]:
    """The metadata of a saved state (from the tensor file; the JSON copy for older runs)."""
    stem = Path(stem)
    path = stem.with_suffix(".safetensors")
    if not path.is_file():
        raise RunFolderError("no training state to resume from", path=path, hint="start a new run without --resume")
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = (f.metadata() or {}).get(META_KEY)
    except Exception as e:  # safetensors raises several types for a damaged file
        raise RunFolderError(f"cannot read the training state ({e})", path=path, hint="the file is truncated or corrupt") from None
    if meta is not None:
        return json.loads(meta)
    legacy = stem.with_suffix(".json")
    if not legacy.is_file():
        raise RunFolderError("no training state to resume from", path=legacy, hint="start a new run without --resume")
    old = json.loads(legacy.read_text())
    return {"info": old["info"], "optimizer": old["optimizer"], "rng": None}


def load_state(stem: str | Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
               extra: dict[str, torch.nn.Module] | None = None) -> dict[str, Any]:
    """Restore the model and optimizer saved by :func:`save_state` (and the ``extra`` networks found
    in the file; those absent are left as they are); returns the metadata (``info`` and ``rng``;
    restoring the generators is the caller's, see :func:`restore_rng`)."""
    stem = Path(stem)
    meta = read_state_meta(stem)
    tensors = load_tensors(stem.with_suffix(".safetensors"))
    device = next(unwrap(model).parameters()).device
    for prefix, net in {"model": model, **(extra or {})}.items():
        saved = {k[len(prefix) + 1:]: v for k, v in tensors.items() if k.startswith(prefix + ".")}
        if saved or net is model:
            unwrap(net).load_state_dict(saved)
    state: dict[int, dict[str, Any]] = {}
    for k, v in tensors.items():
        if k.startswith("optim."):
            _, idx, name = k.split(".", 2)
            state.setdefault(int(idx), {})[name] = v.to(device) if name != "step" else v
    for idx, sc in meta["optimizer"]["scalars"].items():
        state.setdefault(int(idx), {}).update(sc)
    optimizer.load_state_dict({"state": state, "param_groups": meta["optimizer"]["param_groups"]})
    return meta


@dataclass
class LoopState:
    """Where the loop is; saved in every checkpoint as ``info``."""

    epoch: int = -1                 # the last completed epoch
    next_iteration: int = 0         # steps already made in epoch ``epoch + 1`` (mid-epoch checkpoints)
    elapsed: float = 0.0            # training seconds so far, validation included
    best: float = float("nan")
    best_epoch: int = -1
    bad_epochs: int = 0
    last_val_time: float = 0.0
    epoch_losses: list[float] = field(default_factory=list)
    train_cm: list | None = None    # the running epoch's training confusion matrix
    finished: bool = False
    stopped_by: str = ""
    ema_updates: int = 0            # steps averaged into the EMA weights (``ema_decay``)
    val_checked: bool = False       # the first validation's cost was checked against its share of the budget
    val_cases: int | None = None    # the epoch subset that check chose (None: as planned)
    val_every: int | None = None

    @classmethod
    def from_info(cls, info: dict[str, Any]) -> "LoopState":
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in info.items() if k in known})
