"""Model size and cost: parameter counts and forward GFLOPs (used by ``medseg models``).

FLOPs are counted by ``torch.utils.flop_counter.FlopCounterMode`` (matmuls and
convolutions, one multiply-add = 2 FLOPs) for one eval-mode forward pass.
``model_table`` builds every model on the ``meta`` device, so it allocates no
weights and runs no arithmetic: the whole table takes well under a second.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode, sdpa_flop_count

from medseg.models.registry import create_model, list_models

REFERENCE_SIZE = {2: (256, 256), 3: (64, 64, 64)}


def _sdpa_flops(query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs) -> int:
    return sdpa_flop_count(query_shape, key_shape, value_shape)


# attention kernels the counter does not know (CPU flash attention, torch >= 2.3)
_EXTRA_FLOPS = {
    op: _sdpa_flops
    for op in [getattr(torch.ops.aten, "_scaled_dot_product_flash_attention_for_cpu", None)]
    if op is not None
}


def count_parameters(model: nn.Module, trainable_only: bool = False) -> int:
    """Number of parameters (elements), all or only those with ``requires_grad``."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


def count_gflops(model: nn.Module, input_shape: Sequence[int]) -> float:
    """GFLOPs of one forward pass on a zero input of ``input_shape`` (eval mode, no grad).

    The input is made on the model's device (``meta`` works and costs nothing). The
    model's train/eval mode is restored afterwards. PyTorch's fused transformer
    "fast path" is switched off meanwhile, since the counter cannot see inside it, and
    CPU flash attention is counted like the other attention kernels.
    """
    param = next(model.parameters(), None)
    device = param.device if param is not None else torch.device("cpu")
    x = torch.zeros(tuple(input_shape), device=device)
    was_training, fastpath = model.training, torch.backends.mha.get_fastpath_enabled()
    counter = FlopCounterMode(display=False, custom_mapping=_EXTRA_FLOPS)
    try:
        model.eval()
        torch.backends.mha.set_fastpath_enabled(False)
        with torch.no_grad(), counter:
            model(x)
    finally:
        model.train(was_training)
        torch.backends.mha.set_fastpath_enabled(fastpath)
    return counter.get_total_flops() / 1e9


def model_table(spatial_dims: int, reference_size: int | Sequence[int] | None = None) -> list[dict]:
    """``{"name", "params", "gflops", "input_shape"}`` for every registered model at its default arguments.

    GFLOPs are for one single-channel input of ``reference_size`` (default 256x256 in
    2D, 64x64x64 in 3D), with ``num_classes=2``.
    """
    if reference_size is None:
        size = REFERENCE_SIZE[spatial_dims]
    elif isinstance(reference_size, int):
        size = (reference_size,) * spatial_dims
    else:
        size = tuple(reference_size)
    rows = []
    for name in list_models():
        with torch.device("meta"):
            model = create_model(name, spatial_dims=spatial_dims)
        rows.append({
            "name": name,
            "params": count_parameters(model),
            "gflops": count_gflops(model, (1, 1, *size)),
            "input_shape": [1, 1, *size],
        })
    return rows
