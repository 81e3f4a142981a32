"""Validation during training, kept to a share of the budget.

Every epoch (or every ``val_every`` epochs) the network predicts each validation case whole by
sliding window and is scored by loss and Dice. When the split holds more validation cases than a
share of the budget allows, the plan sets ``val_max_cases``: each epoch then validates the same
fixed, evenly spaced subset. The final model choice still uses the whole split
(:meth:`Validator.final_choice`): the best checkpoint by the subset and the weights at the end are
both validated on every case, and the better one is kept.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from medseg.data.split import evenly_spaced
from medseg.evaluation.overlap import OverlapMetric, mean_foreground, scores_from_confusion
from medseg.inference.sliding_window import predict_probabilities
from medseg.planning.planner import MAX_VAL_EVERY, MIN_VALIDATION_CASES
from medseg.io.atomic import write_json
from medseg.io.weights import load_tensors
from medseg.models.weights import WEIGHTS_FILE, save_model
from medseg.training.losses import soft_dice_loss

log = logging.getLogger(__name__)

Case = tuple[np.ndarray, np.ndarray]


def validation_loss(probs: torch.Tensor, target: torch.Tensor) -> float:
    """Dice+CE of class probabilities ``(K, *S)`` against ``target`` ``(*S)``."""
    log_probs = torch.log(probs.clamp_min(1e-8))[None]
    ce = F.nll_loss(log_probs, target[None].long())
    dice = soft_dice_loss(log_probs, target[None])  # softmax of the log-probabilities gives them back
    return float(ce + dice)


class Validator:
    """Scores a network on validation cases: ``(image (C,*S) float32, label (*S) int)`` pairs.

    Args:
        cases: the whole validation split.
        patch_size, overlap: the sliding window.
        num_classes: classes including background.
        autocast: a context factory for the forward passes (mixed precision).
        max_cases: validate each epoch on this fixed subset of the cases (``None``: all).
        every: validate every this many epochs.
    """

    def __init__(self, cases: Sequence[Case], patch_size: Sequence[int], overlap: float, num_classes: int,
                 autocast: Callable[[], Any], max_cases: int | None = None, every: int = 1):
        self.cases = list(cases)
        self.epoch_cases = [self.cases[i] for i in evenly_spaced(len(self.cases), max_cases)]
        self.patch_size, self.overlap, self.num_classes = tuple(patch_size), overlap, num_classes
        self.autocast = autocast
        self.every = max(1, int(every))
        if self.subset:
            log.info("validating each epoch on a fixed subset of %d of the %d validation cases (the whole split "
                     "chooses the final model)", len(self.epoch_cases), len(self.cases))

    @property
    def subset(self) -> bool:
        """Whether epochs validate on fewer cases than the whole split."""
        return len(self.epoch_cases) < len(self.cases)

    def resize(self, cases: int, every: int) -> None:
        """Validate each epoch on a fixed, evenly spaced ``cases`` of the split, every ``every`` epochs."""
        self.epoch_cases = [self.cases[i] for i in evenly_spaced(len(self.cases), cases)]
        self.every = max(1, int(every))

    def fit_to_share(self, val_seconds: float, train_seconds: float, share: float) -> bool:
        """Shrink the epoch subset (or validate less often) when one validation took more than ``share`` of the
        time against an epoch of training (``train_seconds``), measured; returns whether it changed. Planning
        estimates the cost from windows; per-case overheads (small images) only show when measured."""
        per_epoch = val_seconds / self.every
        allowed = share / (1 - share) * train_seconds
        if not self.epoch_cases or per_epoch <= 1.1 * allowed:  # timings vary by some 10% from epoch to epoch
            return False
        afford = 0.9 * allowed / (val_seconds / len(self.epoch_cases))  # cases per epoch within the share, with headroom
        if afford >= MIN_VALIDATION_CASES:
            cases, every = int(afford), 1
        else:
            every = min(MAX_VAL_EVERY, max(1, math.ceil(min(len(self.epoch_cases), MIN_VALIDATION_CASES) / afford)))
            cases = max(1, int(afford * every))
        cases = min(cases, len(self.epoch_cases))
        log.info("validation took %.1f s against %.1f s of training (more than %.0f%%): from now on every %d epoch(s) on "
                 "a fixed %d of the %d validation cases (the whole split still chooses the final model)",
                 val_seconds, train_seconds, 100 * share, every, cases, len(self.cases))
        self.resize(cases, every)
        return True

    def due(self, epoch: int) -> bool:
        """Whether epoch ``epoch`` (0-based) is one that validates."""
        return (epoch + 1) % self.every == 0

    def run(self, model: torch.nn.Module, whole: bool = False) -> dict[str, Any]:
        """Mean loss, mean per-case Dice and pooled per-class Dice/accuracy (``{}`` without cases)."""
        cases = self.cases if whole else self.epoch_cases
        if not cases:
            return {}
        metric = OverlapMetric(self.num_classes)
        losses, dices = [], []
        for image, label in cases:
            with self.autocast():
                probs = predict_probabilities(model, torch.from_numpy(np.array(image, dtype=np.float32)), self.patch_size,
                                              overlap=self.overlap, batch_size=8).float().cpu()
            target = torch.from_numpy(np.asarray(label, dtype=np.int64))
            losses.append(validation_loss(probs, target))
            cm = metric.update(probs.max(0).indices, target)
            dices.append(mean_foreground(scores_from_confusion(cm)["dice"]))
        agg = metric.aggregate()
        row = {"val_loss": float(np.mean(losses)), "val_accuracy": agg["accuracy"],
               "val_dice": float(np.nanmean(dices)) if not all(map(math.isnan, dices)) else float("nan")}
        for k in range(1, self.num_classes):
            row[f"val_dice_{k}"] = float(agg["dice"][k])
        return row

    def final_choice(self, model: torch.nn.Module, best_state: dict[str, torch.Tensor] | None,
                     better: Callable[[float, float], bool], monitor: str) -> dict[str, Any]:
        """Validate the weights at the end and ``best_state`` (the best by the subset) on every case;
        load the better into ``model`` and say which (``{"kept": "best" | "final", ...}``)."""
        final = self.run(model, whole=True)
        out: dict[str, Any] = {"cases": len(self.cases), "subset": len(self.epoch_cases), "monitor": monitor,
                               "final": final.get(monitor), "best": None}
        if best_state is None:
            return {**out, "kept": "final"}
        end_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        model.load_state_dict(best_state)
        best = self.run(model, whole=True)
        out["best"] = best.get(monitor)
        if better(final.get(monitor, float("nan")), best.get(monitor, float("nan"))):
            model.load_state_dict(end_state)
            return {**out, "kept": "final"}
        return {**out, "kept": "best"}


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"


def choose_final_model(validator: Validator, model: torch.nn.Module, run_dir: Path, st: Any,
                       better: Callable[[float, float], bool], monitor: str) -> dict[str, Any]:
    """The final choice on every validation case: the best checkpoint by the epoch subset (``RUN/model.safetensors``),
    or ``model``'s weights at the end; the better becomes ``model.safetensors``, and the loop state ``st`` records
    which (``best_epoch``) and its score on the whole split (``best``). Written to ``validation.json`` and returned."""
    t = time.perf_counter()
    last = st.best_epoch == st.epoch  # the best checkpoint is the end's weights: one pass tells all
    best_state = None if last else load_tensors(run_dir / WEIGHTS_FILE)
    choice = validator.final_choice(model, best_state, better, monitor)
    if last:
        choice.update(kept="best", best=choice["final"])
    elif choice["kept"] == "final":
        save_model(run_dir, model)
        st.best_epoch = st.epoch
    st.best = choice[choice["kept"]]
    choice.update(best_epoch=st.best_epoch, seconds=round(time.perf_counter() - t, 2))
    write_json(run_dir / "validation.json", choice)
    log.info("final model chosen on all %d validation cases: %s, epoch %d (%s %s at the end, %s for the best by the subset)",
             choice["cases"], choice["kept"], st.best_epoch, monitor, _fmt(choice["final"]), _fmt(choice.get("best")))
    return choice
