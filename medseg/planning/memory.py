"""Memory and compute of a U-Net training step, and the memory a device offers.

- :func:`unet_training_memory`: bytes one training step of :class:`medseg.models.unet.UNet`
  needs at a patch and batch size: the activations autograd keeps for the backward pass
  (estimated per stage, calibrated against torch's saved tensors, see
  ``tests/test_planning_memory.py``), plus weights, gradients and Adam's two moments.
- :func:`unet_step_flops`: floating-point operations of a training step (forward + backward
  ≈ 3 x forward), to keep CPU steps as short as the hand-set defaults.
- :func:`device_memory`: the memory budget when none is given: half the available RAM on
  a CPU (``/proc/meminfo`` ``MemAvailable``), 90 % of the free memory of a CUDA device.
- :func:`parse_bytes` / :func:`format_bytes`: ``"8GiB"`` <-> bytes.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Sequence

from medseg.errors import ConfigError
from medseg.planning.topology import Topology, stage_features

#: activation values autograd keeps per stage, in units of ``channels x voxels`` of that stage:
#: encoder (2 conv-norm-act: conv input, norm input and output, act output; pooling), decoder
#: (upsampling, the concatenation, 2 conv-norm-act). Calibrated with saved-tensor hooks.
ACTIVATIONS_PER_STAGE = 13.0
#: extra factor for the backward pass's transient buffers and the allocator's slack
WORKSPACE_FACTOR = 1.3
#: of the available RAM a CPU plan may use (the rest: the data, the OS, other programs)
CPU_MEMORY_SHARE = 0.5
#: of the free memory of a CUDA device a plan may use
CUDA_MEMORY_SHARE = 0.9

_UNITS = {"": 1, "b": 1, "k": 1e3, "kb": 1e3, "m": 1e6, "mb": 1e6, "g": 1e9, "gb": 1e9, "t": 1e12, "tb": 1e12,
          "kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40}


def parse_bytes(text: str | int | float) -> int:
    """``"8GiB"``, ``"8 GB"``, ``"512MiB"``, ``"2.5g"`` or a number of bytes → bytes."""
    if isinstance(text, (int, float)) and not isinstance(text, bool):
        if text <= 0:
            raise ConfigError(f"a memory size must be positive, got {text}")
        return int(text)
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*", str(text))
    unit = m.group(2).lower() if m else None
    if not m or unit not in _UNITS or float(m.group(1)) <= 0:
        raise ConfigError(f"cannot read memory size '{text}'", hint="write e.g. 8GiB, 512MiB, 16GB or a number of bytes")
    return int(float(m.group(1)) * _UNITS[unit])


def format_bytes(n: float) -> str:
    """Bytes as ``"1.5 GiB"`` (binary units)."""
    for unit, size in (("TiB", 2**40), ("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if abs(n) >= size:
            return f"{n / size:.1f} {unit}"
    return f"{int(n)} B"


def _stage_voxels(patch: Sequence[int], topo: Topology) -> list[float]:
    voxels = [float(math.prod(patch))]
    for s in topo.strides:
        voxels.append(voxels[-1] / math.prod(s))
    return voxels


def unet_parameters(in_channels: int, num_classes: int, features: int, topo: Topology, max_features: int) -> int:
    """Weights of the U-Net (convolutions; norms and biases are negligible)."""
    ch = stage_features(features, topo.depth, max_features)
    k = [math.prod(kk) for kk in topo.kernel_sizes]
    n = k[0] * (in_channels * ch[0] + ch[0] * ch[0])
    for i in range(topo.depth):
        n += k[i + 1] * (ch[i] * ch[i + 1] + ch[i + 1] ** 2)          # encoder stage i + 1
        n += math.prod(topo.strides[i]) * ch[i + 1] * ch[i]           # transposed convolution
        n += k[i] * (2 * ch[i] * ch[i] + ch[i] * ch[i])               # decoder double conv at stage i
    return int(n + ch[0] * num_classes)


def unet_step_flops(patch: Sequence[int], batch: int, in_channels: int, num_classes: int, features: int,
                    topo: Topology, max_features: int) -> float:
    """Floating-point operations of one training step (3 x the forward pass)."""
    ch = stage_features(features, topo.depth, max_features)
    vox = _stage_voxels(patch, topo)
    k = [math.prod(kk) for kk in topo.kernel_sizes]
    macs = vox[0] * k[0] * (in_channels * ch[0] + ch[0] * ch[0]) + vox[0] * ch[0] * num_classes
    for i in range(topo.depth):
        macs += vox[i + 1] * k[i + 1] * (ch[i] * ch[i + 1] + ch[i + 1] ** 2)
        macs += vox[i] * ch[i + 1] * ch[i]                            # transposed conv (kernel = stride)
        macs += vox[i] * k[i] * (3 * ch[i] * ch[i])                   # decoder double conv
    return 3.0 * 2.0 * macs * batch


def unet_activation_values(patch: Sequence[int], in_channels: int, num_classes: int, features: int,
                           topo: Topology, max_features: int) -> float:
    """Activation values (not bytes) autograd keeps for one sample."""
    ch = stage_features(features, topo.depth, max_features)
    vox = _stage_voxels(patch, topo)
    values = sum(c * v for c, v in zip(ch, vox)) * ACTIVATIONS_PER_STAGE
    return values + vox[0] * (in_channels + 4 * num_classes)  # input, logits, softmax and loss terms


def unet_training_memory(patch: Sequence[int], batch: int, in_channels: int, num_classes: int, features: int,
                         topo: Topology, max_features: int, bytes_per_value: float = 4.0) -> int:
    """Bytes of one training step: activations x batch, plus weights, gradients and Adam state (fp32)."""
    act = unet_activation_values(patch, in_channels, num_classes, features, topo, max_features)
    params = unet_parameters(in_channels, num_classes, features, topo, max_features)
    return int(act * batch * bytes_per_value * WORKSPACE_FACTOR + params * 4 * 4)


def available_ram() -> int:
    """Available RAM in bytes (``MemAvailable``; total RAM when that cannot be read)."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
    except (ValueError, OSError, AttributeError):
        return 8 * 2**30


def device_memory(kind: str) -> tuple[int, str]:
    """``(bytes a plan may use, how that was found)`` on ``cpu`` or ``cuda``."""
    if kind == "cuda":
        import torch

        if torch.cuda.is_available():
            free, total = torch.cuda.mem_get_info()
            budget = int(free * CUDA_MEMORY_SHARE)
            return budget, (f"{CUDA_MEMORY_SHARE:.0%} of the free memory of {torch.cuda.get_device_name()} "
                            f"({format_bytes(free)} free of {format_bytes(total)})")
        raise ConfigError("--device cuda, but torch sees no CUDA device",
                          hint="plan for --device cpu, or give --memory-budget for the GPU you will train on")
    ram = available_ram()
    return int(ram * CPU_MEMORY_SHARE), f"{CPU_MEMORY_SHARE:.0%} of the available RAM ({format_bytes(ram)})"
