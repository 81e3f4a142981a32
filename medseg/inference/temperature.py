"""Temperature scaling of class probabilities: ``softmax(log p / T)`` (the temperature is fitted by
``medseg calibrate``, :mod:`medseg.evaluation.calibration`, and stored in the run folder)."""

from __future__ import annotations

import numpy as np

_TINY = 1e-12


def log_probabilities(probs: np.ndarray, axis: int = 0) -> np.ndarray:
    """``log p`` (float32, ``p`` clipped at 1e-12): the "logits" that temperature scaling divides."""
    return np.log(np.maximum(np.asarray(probs, dtype=np.float32), _TINY), dtype=np.float32)


def apply_temperature(probs: np.ndarray, temperature: float, axis: int = 0) -> np.ndarray:
    """``softmax(log p / T)`` along ``axis`` (float32); ``T == 1`` returns ``probs`` unchanged."""
    if temperature == 1.0:
        return probs
    z = log_probabilities(probs)
    z /= np.float32(temperature)
    z -= z.max(axis=axis, keepdims=True)
    np.exp(z, out=z)
    z /= z.sum(axis=axis, keepdims=True)
    return z
