"""The U-Net's shape for a patch at a spacing: stages, pooling per axis, kernel sizes, widths.

Dimension-agnostic (2D and 3D). The rules follow nnU-Net's in simple form:

- an axis is pooled (stride 2) only while its feature map is at least ``2 * min_size``
  voxels long and its spacing at that stage is at most twice the finest one, so
  thick-slice axes stop shrinking until the others have caught up;
- kernels are 1 wide along an axis whose spacing is over twice the finest, until pooling
  the other axes has brought it within that factor (then 3 from that stage on);
- widths start at ``features`` and double per stage, up to ``max_features``.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

log = logging.getLogger(__name__)

#: an axis is not downsampled below this many voxels (nnU-Net's minimum feature-map edge)
MIN_FEATURE_SIZE = 4


@dataclass(frozen=True)
class Topology:
    """``depth`` downsampling steps; ``strides[i]`` leads from stage ``i`` to ``i + 1``;
    ``kernel_sizes`` has ``depth + 1`` entries (one per stage), each one value per axis."""

    depth: int
    strides: tuple[tuple[int, ...], ...]
    kernel_sizes: tuple[tuple[int, ...], ...]

    @property
    def divisor(self) -> tuple[int, ...]:
        """Total downsampling per axis: patch sizes should be multiples of it."""
        out = [1] * len(self.kernel_sizes[0])
        for s in self.strides:
            out = [o * si for o, si in zip(out, s)]
        return tuple(out)

    def to_json(self) -> dict:
        return {"depth": self.depth, "strides": [list(s) for s in self.strides],
                "kernel_sizes": [list(k) for k in self.kernel_sizes]}


def plan_topology(patch: Sequence[int], spacing: Sequence[float], max_depth: int,
                  min_size: int = MIN_FEATURE_SIZE) -> Topology:
    """Per-stage strides and kernel sizes of a U-Net for ``patch`` at ``spacing`` (same axis order).

    Stages where no axis can be downsampled any more are dropped, so ``depth`` may come
    out smaller than ``max_depth`` (at least 1: a tiny patch pools what it can).
    """
    size = [int(p) for p in patch]
    sp = [float(s) for s in spacing]
    if len(size) != len(sp):
        raise ValueError(f"patch {tuple(patch)} and spacing {tuple(spacing)} differ in length")
    full = [False] * len(sp)  # once an axis gets kernel 3 it keeps it

    def kernel() -> tuple[int, ...]:
        for a, s in enumerate(sp):
            full[a] = full[a] or s <= 2 * min(sp)
        return tuple(3 if f else 1 for f in full)

    strides: list[tuple[int, ...]] = []
    kernels = [kernel()]
    for _ in range(max_depth):
        st = tuple(2 if n >= 2 * min_size and s <= 2 * min(sp) else 1 for n, s in zip(size, sp))
        if max(st) == 1:
            break
        strides.append(st)
        size = [n // t for n, t in zip(size, st)]
        sp = [s * t for s, t in zip(sp, st)]
        kernels.append(kernel())
    if not strides:  # a tiny patch: one stage, pooling only what can be pooled
        strides = [tuple(2 if n >= 2 else 1 for n in size)]
        kernels.append(kernels[0])
    if len(strides) < max_depth:
        log.debug("U-Net depth %d -> %d: patch %s at spacing %s allows no further downsampling",
                  max_depth, len(strides), tuple(patch), tuple(spacing))
    return Topology(len(strides), tuple(strides), tuple(kernels))


def stage_features(features: int, depth: int, max_features: int) -> list[int]:
    """Channels per stage: ``features * 2**i`` capped at ``max_features`` (``depth + 1`` stages)."""
    return [min(features * 2**i, max_features) for i in range(depth + 1)]


def round_patch(patch: Sequence[float], divisor: Sequence[int], multiple: int = 1, up: bool = True) -> tuple[int, ...]:
    """Each axis rounded (up, or down but not below one step) to a multiple of ``max(divisor, multiple)``."""
    out = []
    for p, d in zip(patch, divisor):
        m = max(int(d), multiple if p >= multiple else 1)
        n = -(-int(round(p)) // m) * m if up else int(p) // m * m
        out.append(max(m, n))
    return tuple(out)


def fit_topology(patch: Sequence[float], spacing: Sequence[float], max_depth: int,
                 multiple: int = 1, up: bool = True) -> tuple[tuple[int, ...], Topology]:
    """A patch near ``patch`` that the planned network divides evenly, and that network.

    Planning depends on the patch and rounding on the network, so the two are
    iterated until they agree (a few rounds at most).
    """
    current = tuple(max(1, int(round(p))) for p in patch)
    topo = plan_topology(current, spacing, max_depth)
    for _ in range(8):
        rounded = round_patch(current, topo.divisor, multiple, up)
        new = plan_topology(rounded, spacing, max_depth)
        if new == topo and rounded == current:
            break
        current, topo = rounded, new
    return current, topo
