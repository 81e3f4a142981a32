"""The training loop: patches → augmentation → Dice+CE → optimiser, with
validation, best-model and resumable checkpoints, early stopping and time budgets.

The loop knows nothing of file formats or 2D vs 3D: it takes a model, a patch
sampler, validation cases (already preprocessed arrays) and a
:class:`~medseg.training.config.TrainConfig`. Progress is reported through an
optional callback object, so the library prints nothing.
"""

from __future__ import annotations

import logging
import math
import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
import torch.nn.functional as F

from medseg.data.augment import BatchAugment
from medseg.data.sampling import PatchSampler
from medseg.errors import ConfigError
from medseg.evaluation.overlap import OverlapMetric, mean_foreground, scores_from_confusion
from medseg.inference.sliding_window import predict_probabilities
from medseg.io.weights import save_model
from medseg.training.checkpoint import load_state, save_state
from medseg.training.config import TrainConfig
from medseg.training.history import read_history, write_history
from medseg.training.losses import DiceCELoss, soft_dice_loss
from medseg.training.schedule import lr_factor

log = logging.getLogger(__name__)

STATE_STEM = "checkpoints/last"


class Callbacks(Protocol):
    def on_step(self, epoch: int, iteration: int, loss: float, progress: float) -> None: ...
    def on_epoch_end(self, row: dict[str, Any]) -> None: ...


@dataclass
class TrainResult:
    epochs: int
    best_epoch: int
    best_score: float
    stopped_by: str
    elapsed: float
    history: list[dict] = field(default_factory=list)


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def _make_optimizer(model: torch.nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    params = model.parameters()
    if cfg.optimizer == "adam":
        return torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay or 1e-2)
    return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, nesterov=True, weight_decay=cfg.weight_decay)


def validation_loss(probs: torch.Tensor, target: torch.Tensor) -> float:
    """Dice+CE of class probabilities ``(K, *S)`` against ``target`` ``(*S)``."""
    log_probs = torch.log(probs.clamp_min(1e-8))[None]
    ce = F.nll_loss(log_probs, target[None].long())
    # soft_dice_loss takes logits; log-probabilities give back the same softmax
    dice = soft_dice_loss(log_probs, target[None])
    return float(ce + dice)


class Trainer:
    """Trains ``model`` and writes into ``run_dir``.

    Args:
        model: a medseg network (built by ``create_model``).
        sampler: draws training patches.
        val_cases: ``(image (C,*S) float32, label (*S) int)`` pairs, evaluated whole by sliding window.
        config: the training settings.
        run_dir: where ``model.safetensors`` (best), ``checkpoints/last.*`` and ``history.csv`` go.
        num_classes: classes including background.
    """

    def __init__(
        self,
        model: torch.nn.Module,
        sampler: PatchSampler,
        val_cases: list[tuple[np.ndarray, np.ndarray]],
        config: TrainConfig,
        run_dir: str | Path,
        num_classes: int,
        callbacks: Callbacks | None = None,
    ):
        self.cfg = config
        self.device = resolve_device(config.device)
        if config.threads:
            torch.set_num_threads(config.threads)
        self.model = model.to(self.device)
        if self.device.type == "cuda":
            self.model = self.model.to(memory_format=torch.channels_last) if model.spatial_dims == 2 else self.model
        self.sampler, self.val_cases = sampler, val_cases
        self.run_dir = Path(run_dir)
        self.num_classes = num_classes
        self.callbacks = callbacks
        self.loss_fn = DiceCELoss()
        self.optimizer = _make_optimizer(self.model, config)
        self.augment = BatchAugment() if config.augment else None
        self.np_rng = np.random.default_rng(config.seed)
        self.aug_gen = torch.Generator().manual_seed(config.seed)
        self.amp_dtype = None
        if config.amp and self.device.type == "cuda":
            self.amp_dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        self.scaler = torch.amp.GradScaler("cuda") if self.amp_dtype == torch.float16 else None

    # ---- state ------------------------------------------------------------------------
    def _save_state(self, info: dict) -> None:
        save_state(self.run_dir / STATE_STEM, self.model, self.optimizer, {"augment": self.aug_gen}, self.np_rng, info)

    def _progress(self, epoch: int, iteration: int, elapsed: float) -> float:
        if self.cfg.time_budget:
            return elapsed / self.cfg.time_budget
        return (epoch + iteration / self.cfg.iterations_per_epoch) / self.cfg.max_epochs

    def _better(self, score: float, best: float) -> bool:
        if math.isnan(score):
            return False
        if math.isnan(best):
            return True
        return score < best if self.cfg.monitor == "val_loss" else score > best

    # ---- steps ------------------------------------------------------------------------
    def _train_step(self, lr: float, metric: OverlapMetric) -> float:
        for g in self.optimizer.param_groups:
            g["lr"] = lr
        x_np, y_np = self.sampler.batch(self.cfg.batch_size, self.np_rng)
        x = torch.from_numpy(x_np).to(self.device, non_blocking=True)
        y = torch.from_numpy(y_np).to(self.device, non_blocking=True)
        if self.augment is not None:
            x, y = self.augment(x, y, self.aug_gen)
        if self.device.type == "cuda" and x.ndim == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        autocast = torch.autocast(self.device.type, dtype=self.amp_dtype) if self.amp_dtype else nullcontext()
        with autocast:
            try:
                out = self.model(x)
            except ValueError as e:
                if "spatial element" not in str(e):
                    raise
                div = getattr(self.model, "size_divisor", "?")
                raise ConfigError(
                    f"patch {tuple(self.cfg.patch_size)} is too small for this network: it downsamples by {div}, "
                    "leaving a 1-pixel bottleneck that its normalisation cannot handle",
                    hint="use larger images or --patch-size / --size, or a shallower network (--depth)",
                ) from None
            loss = self.loss_fn(out, y)
        self.optimizer.zero_grad(set_to_none=True)
        if self.scaler is not None:
            self.scaler.scale(loss).backward()
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            loss.backward()
            self.optimizer.step()
        main = out[0] if isinstance(out, (list, tuple)) else out
        metric.update(main.detach().argmax(1), y)
        return float(loss.detach())

    def validate(self) -> dict[str, Any]:
        """Mean loss and pooled per-class Dice/accuracy over the validation cases."""
        if not self.val_cases:
            return {}
        metric = OverlapMetric(self.num_classes)
        losses, dices = [], []
        for image, label in self.val_cases:
            probs = predict_probabilities(
                self.model, torch.from_numpy(np.array(image, dtype=np.float32)), self.cfg.patch_size, overlap=self.cfg.val_overlap, batch_size=8
            ).cpu()
            target = torch.from_numpy(np.asarray(label, dtype=np.int64))
            losses.append(validation_loss(probs, target))
            pred = probs.argmax(0)
            cm = metric.update(pred, target)
            dices.append(mean_foreground(scores_from_confusion(cm)["dice"]))
        agg = metric.aggregate()
        row = {"val_loss": float(np.mean(losses)), "val_accuracy": agg["accuracy"], "val_dice": float(np.nanmean(dices)) if not all(map(math.isnan, dices)) else float("nan")}
        for k in range(1, self.num_classes):
            row[f"val_dice_{k}"] = float(agg["dice"][k])
        return row

    # ---- loop -------------------------------------------------------------------------
    def fit(self, resume: bool = False) -> TrainResult:
        cfg = self.cfg
        (self.run_dir / "checkpoints").mkdir(parents=True, exist_ok=True)
        history_path = self.run_dir / "history.csv"
        start_epoch, elapsed_before, best, best_epoch, bad_epochs = 0, 0.0, float("nan"), -1, 0
        history: list[dict] = []
        if resume:
            info = load_state(self.run_dir / STATE_STEM, self.model, self.optimizer, {"augment": self.aug_gen}, self.np_rng)
            start_epoch = info["epoch"] + 1
            elapsed_before, best, best_epoch, bad_epochs = info["elapsed"], info["best"], info["best_epoch"], info["bad_epochs"]
            history = [r for r in read_history(history_path) if r["epoch"] < start_epoch]
            log.info("resuming at epoch %d (%.0f s trained so far)", start_epoch, elapsed_before)
            if info.get("finished"):
                log.info("this run had already finished (%s)", info.get("stopped_by"))
                return TrainResult(info["epoch"] + 1, best_epoch, best, info.get("stopped_by", "finished"), elapsed_before, history)

        t0 = time.perf_counter() - elapsed_before

        def info(epoch: int, stopped_by: str) -> dict[str, Any]:
            return {"epoch": epoch, "elapsed": time.perf_counter() - t0, "best": best, "best_epoch": best_epoch,
                    "bad_epochs": bad_epochs, "finished": bool(stopped_by), "stopped_by": stopped_by}

        last_val_time = 0.0
        stopped_by = "max_epochs"
        epoch = start_epoch - 1
        for epoch in range(start_epoch, cfg.max_epochs):
            self.model.train()
            metric = OverlapMetric(self.num_classes)
            losses = []
            out_of_time = False
            for it in range(cfg.iterations_per_epoch):
                elapsed = time.perf_counter() - t0
                if cfg.time_budget and elapsed + last_val_time >= cfg.time_budget:
                    out_of_time = True
                    break
                progress = self._progress(epoch, it, elapsed)
                lr = cfg.lr * lr_factor(cfg.schedule, progress, cfg.warmup)
                losses.append(self._train_step(lr, metric))
                if self.callbacks:
                    self.callbacks.on_step(epoch, it, losses[-1], progress)
            if not losses:  # the time budget ran out before this epoch began
                epoch -= 1
                stopped_by = "time_budget"
                self._save_state(info(epoch, stopped_by))
                break
            train = metric.aggregate()
            tv = time.perf_counter()
            val = self.validate()
            last_val_time = time.perf_counter() - tv
            row: dict[str, Any] = {
                "epoch": epoch,
                "time": round(time.perf_counter() - t0, 2),
                "lr": self.optimizer.param_groups[0]["lr"],
                "train_loss": float(np.mean(losses)) if losses else float("nan"),
                "train_accuracy": train["accuracy"],
                "train_dice": mean_foreground(train["dice"]),
                **val,
            }
            score = row.get(cfg.monitor, float("nan")) if val else -row["train_loss"]
            if not val:  # no validation cases: keep the latest model
                score = float(epoch)
            improved = self._better(score, best) if val else True
            if improved:
                best, best_epoch, bad_epochs = score, epoch, 0
                save_model(self.run_dir, self.model)
            else:
                bad_epochs += 1
            row["best"] = int(improved)
            history.append(row)
            write_history(history_path, history)
            if self.callbacks:
                self.callbacks.on_epoch_end(row)
            if out_of_time or (cfg.time_budget and time.perf_counter() - t0 >= cfg.time_budget):
                stopped_by = "time_budget"
            elif cfg.patience and val and bad_epochs >= cfg.patience:
                stopped_by = "early_stopping"
            else:
                stopped_by = ""
            self._save_state(info(epoch, stopped_by))
            if stopped_by:
                break
        else:
            stopped_by = "max_epochs"
            self._save_state(info(epoch, stopped_by))
        elapsed = time.perf_counter() - t0
        log.info("training stopped (%s) after %d epochs, %.0f s; best epoch %d", stopped_by, epoch + 1, elapsed, best_epoch)
        return TrainResult(epoch + 1, best_epoch, best, stopped_by, elapsed, history)
