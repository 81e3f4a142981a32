"""What `medseg train` needs, for 2D image folders and 3D volume datasets alike: one :class:`TrainSetup`.

A 2D image is treated as a volume one slice thick: the same setup, split, run folder and training
loop serve both; what differs is how cases are read and preprocessed (:mod:`medseg.training.data`)
and the hand-set defaults used without a plan (:data:`HAND_SET`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from medseg.data.dataset2d import DataOptions2D
from medseg.data.dataset_kind import is_volume_dataset
from medseg.data.preprocess import Preprocessing, preprocess_from_json
from medseg.errors import ConfigError
from medseg.models.registry import model_arguments
from medseg.planning.topology import plan_topology
from medseg.runfolder import read_run_info, run_dims
from medseg.training.config import TrainConfig

#: Without a plan: the U-Net's width (GPU, CPU), depth (GPU, CPU), dropout, and the batch size (GPU, CPU; 2D: the
#: configured one) per number of spatial axes. A 3D U-Net also gets per-axis strides and kernels for its patch.
HAND_SET = {
    2: {"features": (32, 16), "depth": (4, 4), "dropout": 0.1, "batch": None, "patch_cap": (256, 128)},
    3: {"features": (32, 16), "depth": (4, 3), "dropout": None, "batch": (4, 2), "patch_cap": (128, 128)},
}


@dataclass
class TrainSetup:
    """Everything `medseg train` needs (JSON-serialisable).

    Attributes:
        data, out: dataset folder and run folder.
        dims: spatial axes of the data (2 or 3); ``None``: from the folder (a 3D dataset layout, or 2D images).
        data_options: 2D folders: where images, masks and FOVs are, pairing and grouping (detected by default).
        preprocess: a fixed preprocessing (2D: channels, working resolution, normalisation; a resumed run's);
            ``None``: 2D defaults, or in 3D one built from ``target_spacing``/``normalization``/``crop_to_nonzero``.
        target_spacing, normalization, crop_to_nonzero: 3D preprocessing (``None`` spacing: the training cases' median).
        split, split_seed, split_file: seeded train/val/test fractions, or a file with the lists.
        model, model_kwargs: network name and arguments (hand-set defaults fill the gaps for ``unet``).
        train: the training settings; ``patch_size``/``batch_size`` are set from the data when
            ``auto_patch``/``auto_batch``.
        cache_dir: 3D: where preprocessed cases go (default ``RUN/preprocessed``).
    """

    data: str
    out: str
    dims: int | None = None
    data_options: DataOptions2D = field(default_factory=DataOptions2D)
    preprocess: Preprocessing | None = None
    target_spacing: tuple[float, ...] | None = None
    normalization: Any = "zscore"
    crop_to_nonzero: bool = True
    split: tuple[float, float, float] = (0.6, 0.2, 0.2)
    split_seed: int = 0
    split_file: str | None = None
    model: str = "unet"
    model_kwargs: dict[str, Any] = field(default_factory=dict)
    train: TrainConfig = field(default_factory=TrainConfig)
    auto_patch: bool = True
    auto_batch: bool = True
    cache_dir: str | None = None

    def __post_init__(self) -> None:
        if self.dims is None:
            self.dims = 3 if self.data and is_volume_dataset(self.data) else 2
        if self.dims not in HAND_SET:
            raise ConfigError(f"data with {self.dims} spatial axes cannot be trained", hint="2D images or 3D volumes")

    def split_meta(self) -> dict[str, Any]:
        """How the split is made, as ``medseg_run.json`` and ``split.json`` record it."""
        return {"fractions": list(self.split), "seed": self.split_seed,
                "file": str(Path(self.split_file).resolve()) if self.split_file else None}


def hand_set_model_kwargs(setup: TrainSetup, on_gpu: bool, patch: tuple[int, ...], spacing) -> dict[str, Any]:
    """The network's arguments: the setup's own win; a ``unet`` gets the hand-set width, depth and dropout,
    and in 3D the strides and kernels that suit its patch at ``spacing`` (:func:`plan_topology`)."""
    given = {k: v for k, v in setup.model_kwargs.items() if v is not None}
    if setup.model == "resunet":
        return fit_resunet_stages(given, patch, spacing)
    if setup.model != "unet":
        return given
    hand = HAND_SET[setup.dims]  # type: ignore[index]
    pick = 0 if on_gpu else 1
    kwargs = {"features": hand["features"][pick], "depth": hand["depth"][pick],
              **({"dropout": hand["dropout"]} if hand["dropout"] is not None else {}), **given}
    if setup.dims == 3 and "strides" not in given:
        kwargs.update(plan_topology(patch, spacing, int(kwargs["depth"])).to_json())
    return kwargs


def fit_resunet_stages(given: dict[str, Any], patch: tuple[int, ...], spacing) -> dict[str, Any]:
    """A residual U-Net whose stages fit ``patch``: ``depth`` (if given, else its default stage count) caps the
    downsampling steps, and strides and kernels are planned as for the U-Net (:func:`plan_topology`), so a small
    patch keeps a bottleneck of a few pixels instead of failing; stages beyond the patch are dropped."""
    if "strides" in given:
        return given
    kwargs = dict(given)
    blocks = [int(b) for b in kwargs.get("blocks_per_stage") or model_arguments("resunet")["blocks_per_stage"].default]
    depth = int(kwargs.pop("depth", len(blocks) - 1))
    spacing = tuple(spacing) if spacing is not None and len(spacing) == len(patch) else (1.0,) * len(patch)
    topology = plan_topology(patch, spacing, depth)
    stages = topology.depth + 1
    kwargs["blocks_per_stage"] = (blocks + [blocks[-1]] * stages)[:stages]
    kwargs["strides"] = [list(s) for s in topology.strides]
    kwargs["kernel_sizes"] = [list(k) for k in topology.kernel_sizes]
    return kwargs


def auto_patch_size(shapes, dims: int, on_gpu: bool, multiple: int | None = None) -> tuple[int, ...]:
    """The hand-set patch: 2D, whole images up to a cap (the largest, rounded up to 16); 3D, the median shape
    rounded up to a multiple of 8, capped per axis (:data:`HAND_SET`)."""
    import numpy as np

    cap = HAND_SET[dims]["patch_cap"][0 if on_gpu else 1]
    a = np.asarray([list(s) for s in shapes], dtype=np.float64)
    size, step = (a.max(0), multiple or 16) if dims == 2 else (np.median(a, 0), multiple or 8)
    return tuple(int(min(cap, -(-int(np.ceil(v)) // step) * step)) for v in size)


def setup_from_run(run_dir: str | Path) -> TrainSetup:
    """Rebuild the :class:`TrainSetup` of an existing run (for ``--resume``): its data, own split, preprocessing,
    patch, batch and network."""
    run_dir = Path(run_dir)
    info = read_run_info(run_dir, require_model=False)
    model = dict(info["model"])
    split = info.get("split") or {}
    cache = info.get("cache_dir")
    return TrainSetup(
        data=info["data"], out=str(run_dir), dims=run_dims(info), data_options=DataOptions2D(**(info.get("data_options") or {})),
        preprocess=preprocess_from_json(info["preprocess"]), split=tuple(split.get("fractions") or (0.6, 0.2, 0.2)),
        split_seed=split.get("seed") or 0, split_file=str(run_dir / "split.json"), model=model.pop("name"),
        model_kwargs=model, train=TrainConfig.from_json(info["train"]), auto_patch=False, auto_batch=False,
        cache_dir=str(run_dir / cache) if cache else None,  # a relative cache lies inside the run folder
    )
