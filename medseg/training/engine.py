"""The training loop: patches → augmentation → Dice+CE → optimiser, with
validation, best-model and resumable checkpoints, early stopping and time budgets.

The loop knows nothing of file formats or 2D vs 3D: it takes a model, a patch
sampler, validation cases (already preprocessed arrays) and a
:class:`~medseg.training.config.TrainConfig`. Progress is reported through an
optional callback object, so the library prints nothing.

Speed: batches are augmented on the training device (:mod:`medseg.data.augment`);
with ``amp`` the forward passes (training and validation) run under bf16
autocast on GPUs that support it (fp16 with a gradient scaler on older ones) and
on CPUs with native bf16, while losses are computed in float32; 2D models use
channels-last on CUDA; ``compile`` wraps the model in ``torch.compile`` and
falls back to eager execution when compiling fails.

Checkpoints (``checkpoints/last.*``, see :mod:`medseg.training.checkpoint`) are
written atomically at the start, every ``checkpoint_every`` seconds (also
mid-epoch), at every new best score and at the end; they hold the loop position,
so ``fit(resume=True)`` continues from the step after the last one saved. With
``deterministic``, a resumed run ends with the same weights as an uninterrupted one.

DDP (:mod:`medseg.runtime.distributed`): each rank samples and augments its own
stream, rank 0 validates and writes, and its decisions are broadcast.

Debugging: with the environment variable ``MEDSEG_DEBUG_RANKS=1`` every rank
writes ``RUN/debug/rank<R>.json`` with a hash of each training batch it drew and
of its final weights (used by the DDP test).
"""

from __future__ import annotations

import hashlib
import logging
import math
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch

from medseg.data.augment import AugmentConfig, BatchAugment
from medseg.data.loader import BatchLoader
from medseg.data.sampling import PatchSampler
from medseg.errors import ConfigError
from medseg.evaluation.overlap import OverlapMetric, mean_foreground
from medseg.io.atomic import write_json
from medseg.models.weights import save_model
from medseg.planning.planner import VALIDATION_SHARE
from medseg.runtime import distributed
from medseg.runtime.device import (
    amp_dtype_for,
    autocast_for,
    compile_model,
    log_once,
    make_deterministic,
    resolve_device,
    seed_everything,
    single_threaded,
)
from medseg.training.checkpoint import LoopState, capture_rng, load_state, restore_rng, save_state, unwrap
from medseg.training.config import TrainConfig
from medseg.runfolder.history import read_history, write_history
from medseg.training.ema import WeightEMA
from medseg.training.losses import DiceCELoss
from medseg.training.validation import Validator, choose_final_model
from medseg.training.schedule import augment_strength, lr_factor

log = logging.getLogger(__name__)

STATE_STEM = "checkpoints/last"
#: the final model choice on the whole validation split may take at most this share of a time budget
FINAL_CHOICE_SHARE = 0.1
DEBUG_ENV = "MEDSEG_DEBUG_RANKS"


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


def _make_optimizer(model: torch.nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    params = model.parameters()
    if cfg.optimizer == "adam":
        return torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay or 1e-2)
    return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, nesterov=True, weight_decay=cfg.weight_decay)


def state_hash(model: torch.nn.Module) -> str:
    """SHA-1 of a model's weights (names and bytes), to compare models across processes."""
    h = hashlib.sha1()
    for k, v in sorted(unwrap(model).state_dict().items()):
        h.update(k.encode())
        h.update(v.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


class Trainer:
    """Trains ``model`` and writes into ``run_dir``.

    Args:
        model: a medseg network (built by ``create_model``).
        sampler: draws training patches.
        val_cases: ``(image (C,*S) float32, label (*S) int)`` pairs, evaluated whole by sliding window.
        config: the training settings.
        run_dir: where ``model.safetensors`` (best), ``checkpoints/last.*`` and ``history.csv`` go.
        num_classes: classes including background.
        callbacks: progress reports (give them on rank 0 only under DDP).
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
        self.dist = distributed.context()
        self.device = resolve_device(config.device)
        if config.threads:
            torch.set_num_threads(config.threads)
        if config.deterministic:
            make_deterministic()
            if config.time_budget:
                log.warning("--deterministic with a time budget: the learning rate follows the clock, so runs are not reproducible")
        stream_seed = config.seed + self.dist.rank
        seed_everything(stream_seed)
        self.net = model.to(self.device)  # the plain network (validated and saved unless ema_decay)
        if self.device.type == "cuda" and model.spatial_dims == 2:
            self.net = self.net.to(memory_format=torch.channels_last)
        self._eager = distributed.wrap(self.net, self.device)
        self.train_model = compile_model(self._eager) if config.compile else self._eager
        self._compiled = self.train_model is not self._eager
        self.sampler, self.val_cases = sampler, val_cases
        self.run_dir = Path(run_dir)
        self.num_classes = num_classes
        self.callbacks = callbacks
        self.loss_fn = DiceCELoss()
        self.ema = WeightEMA(self.net, config.ema_decay) if config.ema_decay else None
        self.optimizer = _make_optimizer(self.net, config)
        self.augment = BatchAugment(AugmentConfig.from_dict(config.augmentation)) if config.augment else None
        workers = config.loader_workers if config.loader_workers is not None else (2 if self.device.type == "cuda" else 0)
        self.loader = BatchLoader(sampler, config.batch_size, stream_seed, workers)
        self.step = 0  # the global step whose batch next_batch() gives next
        self.aug_gen = torch.Generator().manual_seed(stream_seed)
        self.amp_dtype = amp_dtype_for(self.device, config.amp)
        self.scaler = torch.amp.GradScaler("cuda") if self.amp_dtype == torch.float16 else None
        self.validator = Validator(val_cases, config.patch_size, config.val_overlap, num_classes,
                                   lambda: autocast_for(self.device, self.amp_dtype), config.val_max_cases, config.val_every)
        log_once(logging.INFO, "mixed precision on %s: %s", self.device.type,
                  str(self.amp_dtype).replace("torch.", "") if self.amp_dtype else "off (float32)")
        self._debug: dict[str, Any] | None = {"rank": self.dist.rank, "batches": []} if os.environ.get(DEBUG_ENV) else None
        self._last_save = time.perf_counter()

    @property
    def model(self) -> torch.nn.Module:
        """The network being trained (without DDP/compile wrappers)."""
        return self.net

    @property
    def eval_model(self) -> torch.nn.Module:
        """The network validated and saved: the weight average with ``ema_decay``, else :attr:`model`."""
        return self.ema.module if self.ema is not None else self.net

    def _extra_nets(self) -> dict[str, torch.nn.Module]:
        return {"ema": self.ema.module} if self.ema is not None else {}

    # ---- state ------------------------------------------------------------------------
    def _save_state(self, st: LoopState) -> None:
        """Checkpoint (collective under DDP: every rank's generators go into rank 0's file)."""
        rngs = distributed.gather(capture_rng({"augment": self.aug_gen}))
        if self.ema is not None:
            st.ema_updates = self.ema.updates
        if self.dist.is_main:
            save_state(self.run_dir / STATE_STEM, self.net, self.optimizer, asdict(st), rngs, self._extra_nets())
        self._last_save = time.perf_counter()

    def _load_state(self) -> LoopState:
        meta = load_state(self.run_dir / STATE_STEM, self.net, self.optimizer, self._extra_nets())
        rngs = meta.get("rng") or {}
        if isinstance(rngs, dict):  # a single-process state
            rngs = [rngs]
        if len(rngs) == self.dist.world_size:
            restore_rng(rngs[self.dist.rank], {"augment": self.aug_gen})
        else:
            log.warning("the checkpoint was written by %d process(es), this run has %d: random streams start afresh",
                        len(rngs), self.dist.world_size)
        st = LoopState.from_info(meta["info"])
        if self.ema is not None:
            self.ema.updates = st.ema_updates
        if st.val_cases is not None:
            self.validator.resize(st.val_cases, st.val_every or 1)
        return st

    def _checkpoint_due(self) -> bool:
        return time.perf_counter() - self._last_save >= self.cfg.checkpoint_every

    def _progress(self, epoch: int, iteration: int, elapsed: float) -> float:
        if self.cfg.time_budget:
            return elapsed / self.cfg.time_budget
        return (epoch + iteration / self.cfg.iterations_per_epoch) / self.cfg.max_epochs

    def _clock(self, epoch: int, iteration: int, elapsed: float, last_val_time: float) -> tuple[float, bool, bool]:
        """(progress, out of time, checkpoint due) — rank 0's values on every rank."""
        budget = self.cfg.time_budget
        out_of_time = bool(budget and elapsed + last_val_time + self._final_reserve(last_val_time) >= budget)
        values = [self._progress(epoch, iteration, elapsed), float(out_of_time), float(self._checkpoint_due())]
        progress, stop, due = distributed.broadcast_floats(values, self.device)
        return progress, bool(stop), bool(due)

    def _final_reserve(self, last_val_time: float) -> float:
        """Seconds kept from the budget for the final choice on the whole validation split (two passes,
        estimated from the last validation on the epoch subset), at most :data:`FINAL_CHOICE_SHARE` of it."""
        v = self.validator
        if not v.subset or not self.cfg.time_budget:
            return 0.0
        return min(2 * last_val_time * len(v.cases) / len(v.epoch_cases), FINAL_CHOICE_SHARE * self.cfg.time_budget)

    def _epoch_share(self, last_val_time: float) -> float:
        """The share of the time the epochs' validations may take: :data:`VALIDATION_SHARE` less what the final
        choice on the whole split will take of the budget (at least half of it is left to the epochs)."""
        final = self._final_reserve(last_val_time) / self.cfg.time_budget if self.cfg.time_budget else 0.0
        return max(VALIDATION_SHARE - final, VALIDATION_SHARE / 2)

    def _better(self, score: float, best: float) -> bool:
        if math.isnan(score):
            return False
        if math.isnan(best):
            return True
        return score < best if self.cfg.monitor == "val_loss" else score > best

    # ---- steps ------------------------------------------------------------------------
    def next_batch(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The next training batch (batch number ``self.step``, see :mod:`medseg.data.loader`),
        moved to the device (before augmentation)."""
        x_np, y_np = self.loader.get(self.step)
        self.step += 1
        if self._debug is not None:
            self._debug["batches"].append(hashlib.sha1(x_np.tobytes()).hexdigest()[:16])
        x = torch.from_numpy(x_np).to(self.device, non_blocking=True)
        y = torch.from_numpy(y_np).to(self.device, non_blocking=True)
        return x, y

    def _forward_backward(self, x: torch.Tensor, y: torch.Tensor):
        with autocast_for(self.device, self.amp_dtype):
            try:
                out = self.train_model(x)
            except ValueError as e:
                if "spatial element" not in str(e):
                    raise
                div = getattr(self.net, "size_divisor", "?")
                raise ConfigError(
                    f"patch {tuple(x.shape[2:])} is too small for this network: it downsamples by {div}, "
                    "leaving a 1-pixel bottleneck that its normalisation cannot handle",
                    hint="use larger images or --patch-size / --size, or a shallower network (--depth)",
                ) from None
        loss = self.loss_fn(out, y)  # float32 (the loss casts the logits)
        self.optimizer.zero_grad(set_to_none=True)
        if self.scaler is not None:
            self.scaler.scale(loss).backward()
        else:
            loss.backward()
        return out, loss

    def train_step(self, lr: float, metric: OverlapMetric | None = None,
                   batch: tuple[torch.Tensor, torch.Tensor] | None = None, augment: bool = True,
                   aug_strength: float = 1.0) -> float:
        """One optimiser step on the next sampled batch, or on ``batch`` (already on the device);
        ``augment=False`` skips augmentation (benchmarks of the model alone), ``aug_strength`` scales
        its probabilities (the augmentation warm-up). Returns the loss."""
        for g in self.optimizer.param_groups:
            g["lr"] = lr
        with single_threaded(self.device):
            x, y = self.next_batch() if batch is None else batch
            if self.augment is not None and augment:
                x, y = self.augment(x, y, self.aug_gen, aug_strength)
        if self.device.type == "cuda" and x.ndim == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        if self._compiled:
            try:
                out, loss = self._forward_backward(x, y)
            except ConfigError:
                raise
            except Exception as e:  # compilation happens at the first call(s)
                log.warning("torch.compile failed (%s: %s); continuing without it", type(e).__name__, str(e).splitlines()[0] if str(e) else "")
                self.train_model, self._compiled = self._eager, False
                out, loss = self._forward_backward(x, y)
        else:
            out, loss = self._forward_backward(x, y)
        if self.scaler is not None:
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            self.optimizer.step()
        if self.ema is not None:
            self.ema.update(self.net)
        if metric is not None:
            main = out[0] if isinstance(out, (list, tuple)) else out
            metric.update(main.detach().max(1).indices, y)  # (argmax over dim 1 is ~10x slower on CPU)
        return float(loss.detach())

    def validate(self, whole: bool = False) -> dict[str, Any]:
        """Mean loss, mean Dice and pooled per-class Dice/accuracy of :attr:`eval_model` on the epoch's
        validation cases (``whole``: every validation case); see :class:`~medseg.training.validation.Validator`."""
        return self.validator.run(self.eval_model, whole=whole)

    # ---- loop -------------------------------------------------------------------------
    def fit(self, resume: bool = False) -> TrainResult:
        cfg, main = self.cfg, self.dist.is_main
        if main:
            (self.run_dir / "checkpoints").mkdir(parents=True, exist_ok=True)
        history_path = self.run_dir / "history.csv"
        history: list[dict] = []
        if resume:
            st = self._load_state()
            history = [r for r in read_history(history_path) if r["epoch"] <= st.epoch]
            log.info("resuming at epoch %d, step %d (%.0f s trained so far)", st.epoch + 1, st.next_iteration, st.elapsed)
            if st.finished:
                log.info("this run had already finished (%s)", st.stopped_by)
                return TrainResult(st.epoch + 1, st.best_epoch, st.best, st.stopped_by or "finished", st.elapsed, history)
        else:
            st = LoopState()
            self._save_state(st)  # resumable from the very start

        t0 = time.perf_counter() - st.elapsed
        stopped_by = ""
        while not stopped_by:
            epoch = st.epoch + 1
            if epoch >= cfg.max_epochs:
                stopped_by = "max_epochs"
                break
            self.train_model.train()
            t_epoch = time.perf_counter()
            metric = OverlapMetric(self.num_classes)
            if st.train_cm is not None:
                metric.cm = np.asarray(st.train_cm, dtype=np.int64)
            out_of_time = False
            while st.next_iteration < cfg.iterations_per_epoch:
                it = st.next_iteration
                progress, out_of_time, due = self._clock(epoch, it, time.perf_counter() - t0, st.last_val_time)
                if out_of_time:
                    break
                lr = cfg.lr * lr_factor(cfg.schedule, progress, cfg.warmup)
                self.step = epoch * cfg.iterations_per_epoch + it
                loss = self.train_step(lr, metric, aug_strength=augment_strength(progress, cfg.augment_warmup))
                st.epoch_losses.append(loss)
                st.next_iteration += 1
                if self.callbacks:
                    self.callbacks.on_step(epoch, it, loss, progress)
                if due and st.next_iteration < cfg.iterations_per_epoch:
                    st.train_cm, st.elapsed = metric.cm.tolist(), time.perf_counter() - t0
                    self._save_state(st)
            if not st.epoch_losses:  # the time budget ran out before this epoch began
                stopped_by = "time_budget"
                break
            stopped_by, save = self._end_epoch(epoch, st, metric, out_of_time, t0, history, history_path,
                                               time.perf_counter() - t_epoch)
            if save and not stopped_by:  # (a stopped run is saved below)
                self._save_state(st)
        if main and self.validator.subset and st.best_epoch >= 0:
            self._choose_final_model(st)  # before the run is marked finished: an interrupted choice is redone on resume
        st.finished, st.stopped_by, st.elapsed = True, stopped_by, time.perf_counter() - t0
        self._save_state(st)
        self._write_debug()
        self.loader.close()
        log.debug("training stopped (%s) after %d epochs, %.0f s; best epoch %d", stopped_by, st.epoch + 1, st.elapsed, st.best_epoch)  # `medseg train` prints it
        return TrainResult(st.epoch + 1, st.best_epoch, st.best, stopped_by, st.elapsed, history)

    def _choose_final_model(self, st: LoopState) -> None:
        """See :func:`~medseg.training.validation.choose_final_model`."""
        choose_final_model(self.validator, self.eval_model, self.run_dir, st, self._better, self.cfg.monitor)

    def _end_epoch(self, epoch: int, st: LoopState, metric: OverlapMetric, out_of_time: bool, t0: float,
                   history: list[dict], history_path: Path, train_seconds: float = 0.0) -> tuple[str, bool]:
        """Validate (rank 0), record the epoch, save the best model, decide whether to stop and whether
        to checkpoint (rank 0's decisions on every rank); updates ``st``. After the first validation of a
        time-budgeted run, its measured cost is held to its share of the budget (:meth:`Validator.fit_to_share`)."""
        cfg = self.cfg
        stopped_by, save = "", False
        if self.dist.is_main:
            train = metric.aggregate()
            time_up = out_of_time or bool(cfg.time_budget and time.perf_counter() - t0 >= cfg.time_budget)
            has_val = bool(self.validator.cases)
            validating = has_val and (self.validator.due(epoch) or time_up or epoch + 1 >= cfg.max_epochs)
            tv = time.perf_counter()
            val = self.validate() if validating else {}
            if validating:
                st.last_val_time = time.perf_counter() - tv
            row: dict[str, Any] = {
                "epoch": epoch,
                "time": round(time.perf_counter() - t0, 2),
                "lr": self.optimizer.param_groups[0]["lr"],
                "train_loss": float(np.mean(st.epoch_losses)),
                "train_accuracy": train["accuracy"],
                "train_dice": mean_foreground(train["dice"]),
                **val,
                **({"val_seconds": round(st.last_val_time, 3)} if validating else {}),
            }
            # without validation cases, keep the latest model; epochs that do not validate change nothing
            score = row.get(cfg.monitor, float("nan")) if has_val else float(epoch)
            improved = (self._better(score, st.best) if validating else False) if has_val else True
            if improved:
                st.best, st.best_epoch, st.bad_epochs = score, epoch, 0
                save_model(self.run_dir, self.eval_model)
            elif validating:
                st.bad_epochs += self.validator.every
            row["best"] = int(improved)
            if validating and cfg.time_budget and not st.val_checked:
                st.val_checked = True
                if self.validator.fit_to_share(st.last_val_time, train_seconds, self._epoch_share(st.last_val_time)):
                    st.val_cases, st.val_every = len(self.validator.epoch_cases), self.validator.every
                    st.best, st.bad_epochs = float("nan"), 0  # scores on the new subset are not comparable with this one
            history.append(row)
            write_history(history_path, history)
            if self.callbacks:
                self.callbacks.on_epoch_end(row)
            if time_up or (cfg.time_budget and time.perf_counter() - t0 >= cfg.time_budget):
                stopped_by = "time_budget"
            elif (cfg.patience and val and st.bad_epochs >= max(cfg.patience, 3 * self.validator.every)
                  and self._progress(epoch + 1, 0, time.perf_counter() - t0) >= cfg.augment_warmup):
                stopped_by = "early_stopping"  # not while the augmentation warm-up still makes the task harder
            save = improved or self._checkpoint_due()
        shared = distributed.broadcast((stopped_by, save, st.best, st.best_epoch, st.bad_epochs, st.last_val_time))
        stopped_by, save, st.best, st.best_epoch, st.bad_epochs, st.last_val_time = shared
        st.epoch, st.next_iteration, st.epoch_losses, st.train_cm = epoch, 0, [], None
        st.elapsed = time.perf_counter() - t0
        return stopped_by, save

    def _write_debug(self) -> None:
        if self._debug is None:
            return
        self._debug["weights"] = state_hash(self.net)
        write_json(self.run_dir / "debug" / f"rank{self.dist.rank}.json", self._debug)
