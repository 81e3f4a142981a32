"""Sliding-window inference with Gaussian weighting and optional mirroring TTA.

Windows come from MONAI's ``sliding_window_inference`` (Gaussian importance
weights, configurable overlap, batched windows). Inputs smaller than the window
are padded by it and cropped back.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import torch
from torch import nn

#: the Gaussian blending weights' sigma as a fraction of the patch side (MONAI's default, nnU-Net's 1/8)
GAUSSIAN_SIGMA_SCALE = 0.125
#: the window overlap of validation during training (prediction uses 0.5, nnU-Net's): fewer windows per case
VALIDATION_OVERLAP = 0.25


def _mirror_sets(axes: Sequence[int]) -> list[tuple[int, ...]]:
    axes = tuple(axes)
    return [c for r in range(len(axes) + 1) for c in itertools.combinations(axes, r)]


@torch.inference_mode()
def predict_probabilities(
    model: nn.Module,
    image: torch.Tensor,
    patch_size: Sequence[int],
    overlap: float = 0.5,
    batch_size: int = 4,
    mirror_axes: Sequence[int] = (),
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """Softmax probabilities ``(K, *S)`` for one image ``(C, *S)``.

    ``mirror_axes`` are spatial axes (0-based) to mirror for test-time
    augmentation; all ``2**len(axes)`` combinations are averaged.
    """
    from monai.inferers import sliding_window_inference

    device = torch.device(device) if device is not None else next(model.parameters()).device
    was_training = model.training
    model.eval()
    x = image[None].to(device, torch.float32)
    roi = [int(p) for p in patch_size]
    total = None
    sets = _mirror_sets(mirror_axes)
    for flip in sets:
        fx = x.flip([2 + a for a in flip]) if flip else x
        logits = sliding_window_inference(
            fx, roi_size=roi, sw_batch_size=batch_size, predictor=model, overlap=overlap, mode="gaussian",
            sigma_scale=GAUSSIAN_SIGMA_SCALE, progress=False
        )
        probs = logits.float().softmax(1)
        if flip:
            probs = probs.flip([2 + a for a in flip])
        total = probs if total is None else total + probs
    model.train(was_training)
    return (total / len(sets))[0]
