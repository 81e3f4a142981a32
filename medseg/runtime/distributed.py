"""Data-parallel training (DDP) under ``torchrun``; a no-op in a plain process.

Launch with torchrun, which sets ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK`` and the
rendezvous address; medseg has no launcher of its own::

    torchrun --nproc_per_node=4 -m medseg train DATA --out RUN ...
    torchrun --nnodes=2 --nproc_per_node=8 --rdzv-backend=c10d --rdzv-endpoint=HOST:29400 -m medseg train ...

Conventions (implemented by the CLI, the pipelines and :class:`~medseg.training.engine.Trainer`):

- every rank builds the same plan, split and model (initialised with the same
  seed; DDP also broadcasts rank 0's weights when it wraps the model);
- each rank draws its own patches and augmentations from ``seed + rank``, so the
  ranks see different data; the global batch is ``world_size * batch_size``;
- rank 0 alone writes: the run folder, checkpoints, history, curves and the best
  model; it also validates, and its decisions (learning-rate progress, early
  stopping, time budget) are broadcast so that all ranks stop together;
- backend ``nccl`` on CUDA, ``gloo`` on CPU; one GPU per rank (``cuda:LOCAL_RANK``).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DistContext:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    backend: str = ""

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


_context = DistContext()


def launched_by_torchrun() -> bool:
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def init_from_env(device: str = "auto") -> DistContext:
    """Join the process group described by torchrun's environment (once); a single process gets rank 0 of 1."""
    global _context
    if _context.enabled or not launched_by_torchrun():
        return _context
    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    local = int(os.environ.get("LOCAL_RANK", "0"))
    cuda = device != "cpu" and torch.cuda.is_available()
    backend = "nccl" if cuda else "gloo"
    if cuda:
        torch.cuda.set_device(local)
    if not dist.is_initialized():
        dist.init_process_group(backend=backend)
    _context = DistContext(rank, world, local, backend)
    log.info("DDP: rank %d of %d (local rank %d), backend %s", rank, world, local, backend)
    return _context


def context() -> DistContext:
    return _context


def is_main() -> bool:
    return _context.is_main


def barrier() -> None:
    if _context.enabled:
        dist.barrier()


@contextmanager
def main_first() -> Iterator[None]:
    """Rank 0 runs the block first (e.g. writing a cache); the other ranks run it after it, then all go on."""
    if not _context.is_main:
        barrier()
    yield
    if _context.is_main:
        barrier()


def broadcast(obj: Any, src: int = 0) -> Any:
    """Rank ``src``'s value of a small picklable object, on every rank."""
    if not _context.enabled:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def broadcast_floats(values: list[float], device: torch.device, src: int = 0) -> list[float]:
    """Rank ``src``'s numbers on every rank (one small tensor collective; cheap enough for every step)."""
    if not _context.enabled:
        return values
    t = torch.tensor(values, dtype=torch.float64, device=device)
    dist.broadcast(t, src=src)
    return t.tolist()


def gather(obj: Any) -> list[Any]:
    """Every rank's value of a picklable object, in rank order, on every rank."""
    if not _context.enabled:
        return [obj]
    out: list[Any] = [None] * _context.world_size
    dist.all_gather_object(out, obj)
    return out


def wrap(model: torch.nn.Module, device: torch.device) -> torch.nn.Module:
    """``DistributedDataParallel(model)`` under DDP, else ``model``."""
    if not _context.enabled:
        return model
    from torch.nn.parallel import DistributedDataParallel

    ids = [device.index] if device.type == "cuda" else None
    return DistributedDataParallel(model, device_ids=ids)


def cleanup() -> None:
    """Leave the process group (end of training)."""
    global _context
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
    _context = DistContext()
