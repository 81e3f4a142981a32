"""A predictor rebuilt from a run folder alone, and prediction on image files.

``Predictor2D.from_run(RUN)`` reads the model config, weights, preprocessing and
label scheme from the run folder; ``predict(image)`` returns class ids and
probabilities at the image's original size. When the run folder holds a fitted
temperature (``calibration.json``, written by ``medseg calibrate``) the
probabilities are temperature-scaled (the labels never change; see
:mod:`medseg.evaluation.calibration`); ``uncertainty=True`` adds the normalised
entropy map and the per-case score (:mod:`medseg.inference.uncertainty`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from medseg.data.labels import LabelScheme
from medseg.data.preprocess2d import Preprocess2D
from medseg.errors import ConfigError, MedsegError
from medseg.io import ImageData, read_image
from medseg.models.weights import load_model
from medseg.inference.temperature import apply_temperature
from medseg.runfolder import run_temperature
from medseg.inference.sliding_window import predict_probabilities
from medseg.inference.uncertainty import (UNCERTAINTY_CSV, CaseUncertainty, case_uncertainty, entropy_png, normalized_entropy,
                                          save_npy, write_uncertainty_csv)
from medseg.runfolder import read_run_info
from medseg.runtime.device import amp_dtype_for, autocast_for, resolve_device

log = logging.getLogger(__name__)

#: ``native``: the training masks' own encoding (e.g. 0/255); ``index``: class ids 0..K-1;
#: ``color``: the training/display colours
OUTPUT_FORMATS = ("native", "index", "color")


@dataclass
class Prediction:
    labels: np.ndarray        # (H, W) uint8 class ids at the original size
    probabilities: np.ndarray  # (K, H, W) float32 (temperature-scaled when the run is calibrated)
    entropy: np.ndarray | None = None             # (H, W) float32 normalised entropy in [0, 1], when asked
    uncertainty: CaseUncertainty | None = None   # the per-case score, when asked


class Predictor2D:
    def __init__(self, model: torch.nn.Module, pre: Preprocess2D, scheme: LabelScheme, colors: list,
                 patch_size: tuple[int, ...], overlap: float = 0.5, mirror: bool = False, device: str = "auto",
                 temperature: float | None = None, amp: bool = True):
        self.device = resolve_device(device)
        self.amp_dtype = amp_dtype_for(self.device, amp)  # the precision training validated in
        self.model = model.to(self.device).eval()
        self.pre, self.scheme, self.colors = pre, scheme, [tuple(c) for c in colors]
        self.patch_size, self.overlap, self.mirror = tuple(patch_size), overlap, mirror
        self.temperature = temperature

    @classmethod
    def from_run(cls, run_dir: str | Path, *, overlap: float = 0.5, mirror: bool = False, device: str = "auto",
                 calibration: bool = True, amp: bool = True) -> "Predictor2D":
        """``calibration``: apply the temperature of ``RUN/calibration.json`` when there is one; ``amp``: the
        network runs under bf16/fp16 autocast where training would (as its validation did), else in float32."""
        run_dir = Path(run_dir)
        info = read_run_info(run_dir)
        if info.get("task") != "segmentation2d":
            raise ConfigError(f"run task '{info.get('task')}' is not 2D segmentation", path=run_dir)
        model = load_model(run_dir)
        scheme = LabelScheme.from_json(info["labels"])
        colors = info.get("display_colors") or scheme.colors()
        return cls(model, Preprocess2D.from_json(info["preprocess"]), scheme, colors,
                   tuple(info["train"]["patch_size"]), overlap, mirror, device, run_temperature(run_dir, calibration), amp)

    def predict(self, image: ImageData, uncertainty: bool = False) -> Prediction:
        """Class ids and probabilities at ``image``'s size (and its entropy map and score, if asked)."""
        x = torch.from_numpy(self.pre.image(image.array))
        with autocast_for(self.device, self.amp_dtype):
            probs = predict_probabilities(self.model, x, self.patch_size, overlap=self.overlap, batch_size=8,
                                          mirror_axes=(0, 1) if self.mirror else (), device=self.device).cpu()
        probs = self.pre.restore(probs, image.spatial_shape).numpy()
        if self.temperature:
            probs = apply_temperature(probs, self.temperature)
        labels = probs.argmax(0).astype(np.uint8)
        pred = Prediction(labels, probs)
        if uncertainty:
            pred.entropy = normalized_entropy(probs)
            pred.uncertainty = case_uncertainty(pred.entropy, labels > 0)
        return pred

    def predict_files(self, paths: list[Path], out_dir: str | Path, fmt: str = "native", overlays: bool = True,
                      uncertainty: bool = False) -> tuple[list[Path], list[tuple[Path, str]]]:
        """Predict each file and write ``<stem>.png`` (+ ``<stem>_overlay.png``) into ``out_dir``.

        ``uncertainty`` adds ``<stem>_entropy.png`` (8-bit, ``round(255 H)``),
        ``<stem>_entropy.npy`` (float32 ``(H, W)``) and ``uncertainty.csv`` (one row
        per image). A file that fails is reported and skipped; returns (written masks, failures).
        """
        from medseg.inference.overlays import save_overlay
        from medseg.io import write_image

        if fmt not in OUTPUT_FORMATS:
            raise ConfigError(f"unknown output format '{fmt}'", hint=f"choose one of: {', '.join(OUTPUT_FORMATS)}")
        out_dir = Path(out_dir)
        written, failed, rows = [], [], []
        for path in paths:
            try:
                img = read_image(path)
                pred = self.predict(img, uncertainty)
                stem = Path(path).stem
                target = out_dir / f"{stem}.png"
                if fmt == "color":
                    write_image(target, self._color(pred.labels))
                elif fmt == "native":
                    write_image(target, self.scheme.encode(pred.labels))
                else:
                    write_image(target, pred.labels[None])
                if overlays:
                    save_overlay(out_dir / f"{stem}_overlay.png", img.array, pred.labels, self.colors)
                if uncertainty:
                    write_image(out_dir / f"{stem}_entropy.png", entropy_png(pred.entropy)[None])
                    save_npy(out_dir / f"{stem}_entropy.npy", pred.entropy)
                    rows.append({"case": stem, **pred.uncertainty.row(), "entropy_map": f"{stem}_entropy.png"})
                written.append(target)
            except MedsegError as e:
                log.error("%s", e)
                failed.append((Path(path), str(e)))
        if uncertainty and rows:
            write_uncertainty_csv(out_dir / UNCERTAINTY_CSV, rows)
        return written, failed

    def _color(self, labels: np.ndarray) -> np.ndarray:
        palette = np.array(self.colors, dtype=np.uint8)
        return np.moveaxis(palette[labels], -1, 0)
