"""A predictor rebuilt from a run folder alone, and prediction on image files.

``Predictor2D.from_run(RUN)`` reads the model config, weights, preprocessing and
label scheme from the run folder; ``predict(image)`` returns class ids and
probabilities at the image's original size.
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
from medseg.io.weights import load_model
from medseg.inference.sliding_window import predict_probabilities
from medseg.runfolder import read_run_info
from medseg.training.engine import resolve_device

log = logging.getLogger(__name__)

#: ``native``: the training masks' own encoding (e.g. 0/255); ``index``: class ids 0..K-1;
#: ``color``: the training/display colours
OUTPUT_FORMATS = ("native", "index", "color")


@dataclass
class Prediction:
    labels: np.ndarray        # (H, W) uint8 class ids at the original size
    probabilities: np.ndarray  # (K, H, W) float32


class Predictor2D:
    def __init__(self, model: torch.nn.Module, pre: Preprocess2D, scheme: LabelScheme, colors: list,
                 patch_size: tuple[int, ...], overlap: float = 0.5, mirror: bool = False, device: str = "auto"):
        self.device = resolve_device(device)
        self.model = model.to(self.device).eval()
        self.pre, self.scheme, self.colors = pre, scheme, [tuple(c) for c in colors]
        self.patch_size, self.overlap, self.mirror = tuple(patch_size), overlap, mirror

    @classmethod
    def from_run(cls, run_dir: str | Path, *, overlap: float = 0.5, mirror: bool = False, device: str = "auto") -> "Predictor2D":
        run_dir = Path(run_dir)
        info = read_run_info(run_dir)
        if info.get("task") != "segmentation2d":
            raise ConfigError(f"run task '{info.get('task')}' is not 2D segmentation", path=run_dir)
        model = load_model(run_dir)
        scheme = LabelScheme.from_json(info["labels"])
        colors = info.get("display_colors") or scheme.colors()
        return cls(model, Preprocess2D.from_json(info["preprocess"]), scheme, colors,
                   tuple(info["train"]["patch_size"]), overlap, mirror, device)

    def predict(self, image: ImageData) -> Prediction:
        x = torch.from_numpy(self.pre.image(image.array))
        probs = predict_probabilities(self.model, x, self.patch_size, overlap=self.overlap, batch_size=8,
                                      mirror_axes=(0, 1) if self.mirror else (), device=self.device).cpu()
        probs = self.pre.restore(probs, image.spatial_shape)
        return Prediction(probs.argmax(0).numpy().astype(np.uint8), probs.numpy())

    def predict_files(self, paths: list[Path], out_dir: str | Path, fmt: str = "native", overlays: bool = True) -> tuple[list[Path], list[tuple[Path, str]]]:
        """Predict each file and write ``<stem>.png`` (+ ``<stem>_overlay.png``) into ``out_dir``.

        A file that fails is reported and skipped; returns (written masks, failures).
        """
        from medseg.evaluation.plots import save_overlay
        from medseg.io import write_image

        if fmt not in OUTPUT_FORMATS:
            raise ConfigError(f"unknown output format '{fmt}'", hint=f"choose one of: {', '.join(OUTPUT_FORMATS)}")
        out_dir = Path(out_dir)
        written, failed = [], []
        for path in paths:
            try:
                img = read_image(path)
                pred = self.predict(img)
                target = out_dir / f"{Path(path).stem}.png"
                if fmt == "color":
                    write_image(target, self._color(pred.labels))
                elif fmt == "native":
                    write_image(target, self.scheme.encode(pred.labels))
                else:
                    write_image(target, pred.labels[None])
                if overlays:
                    save_overlay(out_dir / f"{Path(path).stem}_overlay.png", img.array, pred.labels, self.colors)
                written.append(target)
            except MedsegError as e:
                log.error("%s", e)
                failed.append((Path(path), str(e)))
        return written, failed

    def _color(self, labels: np.ndarray) -> np.ndarray:
        palette = np.array(self.colors, dtype=np.uint8)
        return np.moveaxis(palette[labels], -1, 0)
