"""Tensors as safetensors files, written atomically: nothing is unpickled, so a file from elsewhere is
safe to load. A network's weights with its constructor arguments: :mod:`medseg.models.weights`.
"""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from medseg.errors import RunFolderError
from medseg.io.atomic import atomic_path

WEIGHTS_FILE = "model.safetensors"


def save_tensors(path: str | Path, tensors: dict[str, torch.Tensor], metadata: dict[str, str] | None = None) -> None:
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata=metadata)


def load_tensors(path: str | Path) -> dict[str, torch.Tensor]:
    path = Path(path)
    if not path.is_file():
        raise RunFolderError("weights file not found", path=path)
    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError) as e:
        raise RunFolderError(f"cannot read weights ({e})", path=path, hint="the file is truncated or corrupt") from None
