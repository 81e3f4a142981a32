"""Training settings. The constructor arguments are the whole configuration;
it is saved in the run folder and restored by ``--resume``."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields

from medseg.errors import ConfigError
from medseg.inference.sliding_window import VALIDATION_OVERLAP

OPTIMIZERS = ("adam", "adamw", "sgd")
MONITORS = ("val_loss", "val_dice")


@dataclass
class TrainConfig:
    """How to train.

    Attributes:
        patch_size: spatial size of training patches.
        batch_size: patches per step.
        iterations_per_epoch: steps between validations.
        max_epochs: upper bound on epochs.
        time_budget: seconds of training (validation included); the LR schedule is
            laid over the budget so that it anneals as the budget ends. ``None``: epochs only.
        optimizer, lr, weight_decay, momentum: the optimiser (``adam``, ``adamw``, ``sgd`` with Nesterov).
        schedule: ``constant``, ``cosine`` or ``poly``; ``warmup``: fraction of progress for linear warm-up.
        patience: epochs without improvement of ``monitor`` before early stopping (0 = off); when validating
            every few epochs (``val_every``), at least three validations without improvement.
        monitor: ``val_loss`` (lower is better) or ``val_dice`` (higher is better).
        val_overlap: sliding-window overlap during validation.
        val_max_cases: validate each epoch on a fixed, evenly spaced subset of at most this many
            validation cases (``None``: all); the whole split still chooses the final model (the best
            checkpoint or the weights at the end), and time for that is kept from the budget.
        val_every: validate every this many epochs (and when training stops).
        foreground_fraction: share of patches centred on foreground.
        augment: whether to augment (see :class:`medseg.data.augment.AugmentConfig`).
        augment_warmup: fraction of training (progress, as the LR schedule's) over which the
            augmentation's strength (every probability) rises linearly from 0 to its full value; the
            network first learns the cases as they are, then is regularised. ``0``: full strength throughout.
        augmentation: overrides of :class:`~medseg.data.augment.AugmentConfig` fields, e.g.
            ``{"flip_axes": [0, 1], "elastic_prob": 0.2}`` (mirror only the in-plane axes of thick-slice data).
        seed: seeds sampling, augmentation and initialisation (under DDP, rank ``r`` samples and
            augments with ``seed + r``; the model is initialised with ``seed`` everywhere).
        device: ``auto`` (CUDA when available), ``cpu``, ``cuda``, ``cuda:1``...
        amp: mixed precision: bf16 on CUDA where supported (else fp16 with a gradient scaler), and
            bf16 autocast on CPUs with native bf16 (oneDNN ``avx512_bf16``/AMX); losses stay float32.
        threads: CPU threads for torch (``None``: all cores).
        checkpoint_every: seconds between resumable checkpoints (``checkpoints/last.*``), written
            atomically, also mid-epoch; one is also written at every new best score and when training
            stops. ``0``: after every step (tests).
        deterministic: deterministic algorithms and every RNG (torch, numpy, python, sampler,
            augmentation) saved in checkpoints and restored, so that a resumed run ends with the same
            weights as an uninterrupted one. Needs an epoch-based schedule (no ``time_budget``).
        compile: ``torch.compile`` the model; falls back to eager (with a warning) when it fails.
        loader_workers: threads that crop the next batches while the model trains (see
            :mod:`medseg.data.loader`; batches are the same for any number). ``None``: 2 on CUDA,
            0 on the CPU, where the cores are busy training and cropping takes well under 1% of a step.
        ema_decay: validate and save an exponential moving average of the weights with this per-step
            decay (e.g. 0.995, about 200 steps; see :mod:`medseg.training.ema`). ``0``: the weights as trained.
    """

    patch_size: tuple[int, ...] = (128, 128)
    batch_size: int = 8
    iterations_per_epoch: int = 50
    max_epochs: int = 500
    time_budget: float | None = None
    optimizer: str = "adam"
    lr: float = 1e-3
    weight_decay: float = 0.0
    momentum: float = 0.99
    schedule: str = "cosine"
    warmup: float = 0.02
    patience: int = 30
    monitor: str = "val_loss"
    val_overlap: float = VALIDATION_OVERLAP
    val_max_cases: int | None = None
    val_every: int = 1
    foreground_fraction: float = 0.33
    augment: bool = True
    augment_warmup: float = 0.0
    seed: int = 0
    device: str = "auto"
    amp: bool = True
    threads: int | None = None
    augmentation: dict = field(default_factory=dict)
    checkpoint_every: float = 300.0
    deterministic: bool = False
    compile: bool = False
    loader_workers: int | None = None
    ema_decay: float = 0.0
    extra: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.patch_size = tuple(int(p) for p in self.patch_size)
        if self.optimizer not in OPTIMIZERS:
            raise ConfigError(f"unknown optimizer '{self.optimizer}'", hint=f"choose one of: {', '.join(OPTIMIZERS)}")
        if self.monitor not in MONITORS:
            raise ConfigError(f"unknown monitor '{self.monitor}'", hint=f"choose one of: {', '.join(MONITORS)}")
        if self.batch_size < 1 or self.iterations_per_epoch < 1 or self.max_epochs < 1:
            raise ConfigError("batch_size, iterations_per_epoch and max_epochs must be at least 1")
        if self.time_budget is not None and self.time_budget <= 0:
            raise ConfigError(f"time budget must be positive, got {self.time_budget}")
        if self.loader_workers is not None and self.loader_workers < 0:
            raise ConfigError(f"loader workers must not be negative, got {self.loader_workers}")
        if not 0.0 <= self.ema_decay < 1.0:
            raise ConfigError(f"EMA decay must be in [0, 1), got {self.ema_decay}", hint="e.g. 0.995; 0 switches it off")
        if not 0.0 <= self.augment_warmup < 1.0:
            raise ConfigError(f"augmentation warm-up must be a fraction of training in [0, 1), got {self.augment_warmup}")
        if self.val_max_cases is not None and self.val_max_cases < 1 or self.val_every < 1:
            raise ConfigError(f"validation needs at least one case, at least every epoch (val_max_cases {self.val_max_cases}, "
                              f"val_every {self.val_every})", hint="set training.val_max_cases (null: all) and "
                              "training.val_every (1 or more) in plan.json")
        if self.checkpoint_every < 0:
            raise ConfigError(f"checkpoint interval must not be negative, got {self.checkpoint_every}")
        from medseg.data.augment import AugmentConfig

        known = {f.name for f in fields(AugmentConfig)}
        unknown = sorted(set(self.augmentation) - known)
        if unknown:
            raise ConfigError(f"unknown augmentation setting(s) {', '.join(unknown)}", hint=f"known: {', '.join(sorted(known))}")

    def to_json(self) -> dict:
        d = asdict(self)
        d["patch_size"] = list(self.patch_size)
        return d

    @classmethod
    def from_json(cls, d: dict) -> "TrainConfig":
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in known})
