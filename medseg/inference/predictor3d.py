"""Prediction of 3D volumes from a run folder, written back exactly onto each input's grid.

``Predictor3D.from_run(RUN)`` rebuilds the network, the preprocessing and the
classes from the run folder. ``predict(image)``: crop to non-zero → normalise →
resample to the training spacing → Gaussian sliding window (optionally mirrored)
→ probabilities resampled back to the cropped shape (linear) → argmax → uncrop,
so the label map has the input's shape; written with the input's spacing, origin
and direction, it lies exactly on the input's grid. A fitted temperature
(``RUN/calibration.json``) scales the returned probabilities; ``uncertainty=True``
adds the normalised entropy map on the input grid and the per-case score
(:mod:`medseg.inference.uncertainty`).
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from medseg.data.labels import LabelScheme
from medseg.data.layouts import VolumeCase, load_case
from medseg.data.preprocess3d import Preprocess3D
from medseg.errors import ConfigError, DataError, MedsegError
from medseg.inference.temperature import apply_temperature
from medseg.runfolder import run_temperature
from medseg.inference.sliding_window import predict_probabilities
from medseg.inference.uncertainty import UNCERTAINTY_CSV, CaseUncertainty, case_uncertainty, normalized_entropy, write_uncertainty_csv
from medseg.io import ImageData, write_image
from medseg.io.base import file_suffix
from medseg.io.volume import VOLUME_SUFFIXES
from medseg.models.weights import load_model
from medseg.runfolder import read_run_info
from medseg.runtime.device import amp_dtype_for, autocast_for, resolve_device

log = logging.getLogger(__name__)

_CHANNEL_RE = re.compile(r"^(?P<case>.+)_(?P<channel>\d{4})$")


@dataclass
class Prediction3D:
    labels: np.ndarray                      # (x, y, z) label values on the input grid (uint8; uint16 for values > 255)
    probabilities: np.ndarray | None = None  # (K, x, y, z) float32 on the input grid, when asked for
    entropy: np.ndarray | None = None        # (x, y, z) float32 normalised entropy in [0, 1] on the input grid, when asked
    uncertainty: CaseUncertainty | None = None  # the per-case score, when asked


@dataclass
class VolumeInput:
    """One case to predict: its name (for the output file) and its channel file(s) or DICOM folder."""

    name: str
    paths: tuple[Path, ...]

    @property
    def suffix(self) -> str:
        """The output ending: the input's volume format, ``.nii.gz`` for DICOM series."""
        s = file_suffix(self.paths[0]) if self.paths[0].is_file() else ""
        return s if s in VOLUME_SUFFIXES else ".nii.gz"


def _is_dicom_folder(folder: Path) -> bool:
    files = [f for f in folder.iterdir() if f.is_file() and not f.name.startswith(".")]
    if any(f.suffix.lower() == ".dcm" for f in files):
        return True
    if not files or any(file_suffix(f) in VOLUME_SUFFIXES for f in files):
        return False
    from medseg.io.dicom import list_dicom_series

    try:
        return bool(list_dicom_series(folder))
    except DataError:
        return False


def _strip(name: str) -> str:
    s = file_suffix(name)
    return name[: len(name) - len(s)] if s else name


def collect_inputs(inputs: list[str | Path]) -> list[VolumeInput]:
    """The cases in ``inputs``: volume files, folders of volumes, DICOM series folders.

    Within the files gathered, names that all end in nnU-Net's ``_0000``-style
    channel numbers are grouped into multi-channel cases named without it
    (``CASE_0000.nii.gz`` → ``CASE``). A missing input or a folder without volumes
    is an error.
    """
    entries: list[tuple[str, Path]] = []
    for raw in inputs:
        p = Path(raw)
        if not p.exists():
            raise DataError("input not found", path=p)
        if p.is_file():
            entries.append((_strip(p.name), p))
        elif _is_dicom_folder(p):
            entries.append((p.name, p))
        else:
            found = []
            for f in sorted(x for x in p.iterdir() if not x.name.startswith(".")):
                if f.is_file() and file_suffix(f) in VOLUME_SUFFIXES:
                    found.append((_strip(f.name), f))
                elif f.is_dir() and _is_dicom_folder(f):
                    found.append((f.name, f))
            if not found:
                raise DataError("no volume files or DICOM series in this folder", path=p,
                                hint=f"medseg predicts {', '.join(VOLUME_SUFFIXES)} files and DICOM series folders")
            entries += found
    if entries and all(_CHANNEL_RE.match(name) for name, _ in entries):
        groups: dict[str, dict[int, Path]] = {}
        for name, p in entries:
            m = _CHANNEL_RE.match(name)
            groups.setdefault(m["case"], {})[int(m["channel"])] = p
        return [VolumeInput(k, tuple(g[c] for c in sorted(g))) for k, g in groups.items()]
    return [VolumeInput(name, (p,)) for name, p in entries]


class Predictor3D:
    def __init__(self, model: torch.nn.Module, pre: Preprocess3D, scheme: LabelScheme, patch_size: tuple[int, ...],
                 num_channels: int = 1, overlap: float = 0.5, mirror: bool = False, device: str = "auto",
                 batch_size: int = 2, temperature: float | None = None, amp: bool = True):
        self.device = resolve_device(device)
        self.amp_dtype = amp_dtype_for(self.device, amp)  # the precision training validated in
        self.model = model.to(self.device).eval()
        self.pre, self.scheme, self.num_channels = pre, scheme, num_channels
        self.patch_size, self.overlap, self.mirror, self.batch_size = tuple(patch_size), overlap, mirror, batch_size
        self.temperature = temperature

    @classmethod
    def from_run(cls, run_dir: str | Path, *, mirror: bool = False, overlap: float = 0.5, device: str = "auto",
                 calibration: bool = True, amp: bool = True) -> "Predictor3D":
        """``calibration``: apply the temperature of ``RUN/calibration.json`` when there is one; ``amp``: the
        network runs under bf16/fp16 autocast where training would (as its validation did), else in float32."""
        run_dir = Path(run_dir)
        info = read_run_info(run_dir)
        if info.get("task") != "segmentation3d":
            raise ConfigError(f"run task '{info.get('task')}' is not 3D segmentation", path=run_dir)
        return cls(load_model(run_dir), Preprocess3D.from_json(info["preprocess"]), LabelScheme.from_json(info["labels"]),
                   tuple(info["patch_size"]), int(info["dataset"]["num_channels"]), overlap, mirror, device,
                   temperature=run_temperature(run_dir, calibration), amp=amp)

    def predict(self, image: ImageData, probabilities: bool = False, uncertainty: bool = False) -> Prediction3D:
        """Label values ``(x, y, z)`` on ``image``'s own grid (and the class probabilities, the entropy map
        and the per-case uncertainty score, if asked)."""
        arr = image.array
        if arr.ndim != 4:
            raise DataError(f"expected a 3D volume (C, x, y, z), got an array of shape {arr.shape}", path=image.path)
        if arr.shape[0] != self.num_channels:
            raise DataError(f"image has {arr.shape[0]} channel(s), the model was trained on {self.num_channels}",
                            path=image.path, hint="give the same channels (modalities) as in training")
        x, ctx = self.pre.image(arr, image.geometry.spacing)
        mirror_axes = (0, 1, 2) if self.mirror else ()
        with autocast_for(self.device, self.amp_dtype):
            probs = predict_probabilities(self.model, torch.from_numpy(x), self.patch_size, overlap=self.overlap,
                                          batch_size=self.batch_size, mirror_axes=mirror_axes, device=self.device)
        ids, full = self.pre.restore(probs.cpu().numpy(), ctx, probabilities or uncertainty)
        if full is not None and self.temperature:
            full = apply_temperature(full, self.temperature)
        pred = Prediction3D(self.scheme.encode(ids)[0], full if probabilities else None)
        if uncertainty:
            pred.entropy = normalized_entropy(full)
            pred.uncertainty = case_uncertainty(pred.entropy, ids > 0)
        return pred

    def read(self, item: VolumeInput) -> ImageData:
        """The image of one input (channels stacked, same checks as for training data)."""
        image, _ = load_case(VolumeCase(item.name, item.paths, None, None, self.num_channels))
        return image

    def predict_files(self, inputs: list[str | Path], out_dir: str | Path, save_probabilities: bool = False,
                      uncertainty: bool = False) -> tuple[list[Path], list[tuple[str, str]]]:
        """Predict every case in ``inputs`` (see :func:`collect_inputs`) into ``out_dir``.

        Writes ``<case><ending>`` (the input's format; ``.nii.gz`` for DICOM) with the
        input's exact geometry, plus ``<case>_probabilities<ending>`` (K channels) when
        asked; ``uncertainty`` adds ``<case>_entropy<ending>`` (float32, the same grid)
        and ``uncertainty.csv`` (one row per case). A case that fails is logged and skipped; returns (written files,
        [(case, reason)] failures).
        """
        out_dir = Path(out_dir)
        items = collect_inputs(inputs)
        written: list[Path] = []
        failed: list[tuple[str, str]] = []
        seen: set[str] = set()
        rows: list[dict] = []
        for i, item in enumerate(items):
            where = str(item.paths[0])
            if item.name in seen:
                failed.append((where, f"a second input named '{item.name}'; its output would overwrite the first"))
                log.error("%s: skipped, a second input named '%s'", where, item.name)
                continue
            seen.add(item.name)
            try:
                image = self.read(item)
                pred = self.predict(image, save_probabilities, uncertainty)
                target = out_dir / f"{item.name}{item.suffix}"
                write_image(target, pred.labels[None], image.geometry)
                if pred.probabilities is not None:
                    write_image(out_dir / f"{item.name}_probabilities{item.suffix}", pred.probabilities, image.geometry)
                if uncertainty:
                    entropy_file = f"{item.name}_entropy{item.suffix}"
                    write_image(out_dir / entropy_file, pred.entropy[None], image.geometry)
                    rows.append({"case": item.name, **pred.uncertainty.row(), "entropy_map": entropy_file})
                written.append(target)
                log.info("[%d/%d] %s -> %s", i + 1, len(items), item.name, target)
            except MedsegError as e:
                log.error("%s", e)
                failed.append((where, str(e)))
            except (OSError, RuntimeError, ValueError, MemoryError) as e:  # one bad case must not stop a batch
                log.error("%s: prediction failed: %s: %s", where, type(e).__name__, e, exc_info=log.isEnabledFor(logging.DEBUG))
                failed.append((where, f"{type(e).__name__}: {e}"))
        if uncertainty and rows:
            write_uncertainty_csv(out_dir / UNCERTAINTY_CSV, rows)
        return written, failed
