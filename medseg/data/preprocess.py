"""One preprocessing interface for 2D and 3D: :class:`Preprocessing`.

``image(array, spacing) -> (x, context)`` turns a reader's ``(C, *S)`` array into network input,
``restore(probabilities, context, probabilities=False) -> (class ids, probabilities or None)`` maps
the network's output back onto the input's own grid. :class:`~medseg.data.preprocess2d.Preprocess2D`
(channels, working resolution, normalisation) and :class:`~medseg.data.preprocess3d.Preprocess3D`
(crop, normalisation, resampling to a target spacing) implement it; :func:`preprocess_from_json`
rebuilds either from a run folder.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

import numpy as np

from medseg.data.preprocess2d import Preprocess2D
from medseg.data.preprocess3d import Preprocess3D


class Preprocessing(Protocol):
    def image(self, array: np.ndarray, spacing: Sequence[float]) -> tuple[np.ndarray, Any]: ...

    def restore(self, probs: np.ndarray, ctx: Any, probabilities: bool = False) -> tuple[np.ndarray, np.ndarray | None]: ...

    def to_json(self) -> dict: ...


def preprocess_from_json(d: dict) -> Preprocessing:
    """The preprocessing a run folder stored: 3D when it has a target spacing, else 2D."""
    return Preprocess3D.from_json(d) if "target_spacing" in d else Preprocess2D.from_json(d)
