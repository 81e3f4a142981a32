"""Where and how tensors run: the device, mixed precision, seeding, determinism and ``torch.compile``.

Shared by training and inference (inference runs in the precision training validated in), so that
neither imports the other.
"""

from __future__ import annotations

import logging
import os
import random
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from typing import Any

import numpy as np
import torch

from medseg.runtime import distributed

log = logging.getLogger(__name__)
_logged_once: set[str] = set()


def log_once(level: int, msg: str, *args: Any) -> None:
    text = msg % args
    if text not in _logged_once:
        _logged_once.add(text)
        log.log(level, text)


def resolve_device(name: str) -> torch.device:
    """``auto`` → CUDA when available, else CPU; under DDP ``cuda`` means this rank's GPU."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    ctx = distributed.context()
    if name == "cuda" and ctx.enabled:
        return torch.device("cuda", ctx.local_rank)
    return torch.device(name)


def cpu_bf16_supported() -> bool:
    """Whether this CPU runs bf16 natively (oneDNN: avx512_bf16 or AMX); emulated bf16 is slower than fp32."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def amp_dtype_for(device: torch.device, enabled: bool = True) -> torch.dtype | None:
    """The autocast dtype for ``device``: bf16 (CUDA with bf16, or CPU with native bf16), fp16 on older GPUs, else ``None``."""
    if not enabled:
        return None
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if device.type == "cpu" and cpu_bf16_supported():
        return torch.bfloat16
    return None


def autocast_for(device: torch.device, dtype: torch.dtype | None):
    """An autocast context (or a null one when ``dtype`` is ``None``)."""
    return torch.autocast(device.type, dtype=dtype) if dtype is not None else nullcontext()


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def make_deterministic() -> None:
    """Deterministic kernels where PyTorch has them (warning where it has none)."""
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(True, warn_only=True)
    torch.backends.cudnn.benchmark = False
    torch.backends.cudnn.deterministic = True


@contextmanager
def single_threaded(device: torch.device) -> Iterator[None]:
    """On CPUs, run the enclosed (small) tensor operations on one thread: batch sampling and
    augmentation are too small to gain from more, and a contended core makes multi-threaded
    small operations many times slower."""
    n = torch.get_num_threads()
    if device.type != "cpu" or n == 1:
        yield
        return
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(n)


def compile_model(model: torch.nn.Module) -> torch.nn.Module:
    """``torch.compile(model)``, or ``model`` itself (with a warning) when that is unavailable or fails."""
    try:
        return torch.compile(model)
    except Exception as e:  # no compiler, unsupported platform or Python, ...
        log.warning("torch.compile is unavailable (%s: %s); training without it", type(e).__name__, e)
        return model
