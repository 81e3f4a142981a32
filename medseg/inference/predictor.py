"""One predictor for 2D and 3D runs, rebuilt from a run folder alone, and prediction on files.

``Predictor.from_run(RUN)`` reads the model config, weights, preprocessing and label scheme from the
run folder. ``predict(image)``: the run's preprocessing (:mod:`medseg.data.preprocess`: 2D working
resolution and normalisation; 3D crop, normalisation and resampling to the training spacing) →
Gaussian sliding window, optionally mirrored along every spatial axis → the probabilities mapped back
onto the input's own grid → class ids. Written with the input's geometry (:mod:`medseg.inference.writers`),
a 3D label map lies exactly on the input's grid, a 2D mask has the image's size.

A fitted temperature (``RUN/calibration.json``, ``medseg calibrate``) scales the returned
probabilities (the labels never change); ``uncertainty=True`` adds the normalised entropy map and
the per-case score (:mod:`medseg.inference.uncertainty`).
"""

from __future__ import annotations

import copy
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from medseg.data.labels import LabelScheme
from medseg.data.preprocess import Preprocessing, preprocess_from_json
from medseg.errors import DataError, MedsegError
from medseg.inference.inputs import InputCase, check_output_files, check_output_folder, collect_inputs, read_input
from medseg.inference.quality import (QUALITY_CSV, QualityAssessment, QualityFeatures, QualityModel, pick_model, quality_models,
                                      write_quality_csv)
from medseg.inference.label_codes import label_codes
from medseg.inference.sliding_window import predict_probabilities
from medseg.inference.temperature import apply_temperature
from medseg.inference.uncertainty import UNCERTAINTY_CSV, CaseUncertainty, case_uncertainty, normalized_entropy, write_uncertainty_csv
from medseg.inference.writers import ImageWriter, VolumeWriter
from medseg.io import ImageData
from medseg.models.weights import load_model
from medseg.runfolder import read_run_info, run_dims, run_temperature
from medseg.runtime.device import amp_dtype_for, autocast_for, resolve_device

log = logging.getLogger(__name__)


@dataclass
class Prediction:
    labels: np.ndarray                       # (*S) uint8 class ids on the input's own grid
    probabilities: np.ndarray | None = None  # (K, *S) float32 there, when asked (temperature-scaled when calibrated)
    entropy: np.ndarray | None = None        # (*S) float32 normalised entropy in [0, 1], when asked
    uncertainty: CaseUncertainty | None = None  # the per-case score, when asked
    features: QualityFeatures | None = None     # the quality-control measures, when asked
    quality: QualityAssessment | None = None    # their assessment, when asked and the run has a quality model


class Predictor:
    """Predicts with a trained network.

    Args:
        model: the network (``model.spatial_dims`` spatial axes).
        pre: the run's preprocessing (:class:`~medseg.data.preprocess.Preprocessing`).
        scheme: the label scheme (class ids → the values written in ``native`` outputs).
        patch_size: the sliding window (the training patch).
        colors: display colours per class (2D overlays and ``color`` outputs).
        num_channels: the input channels a volume must have (``None``: 2D images are converted).
        overlap, mirror: the sliding window's overlap and mirroring TTA.
        batch_size: windows per forward pass.
        temperature: the fitted temperature, or ``None``.
        amp: run the network in bf16/fp16 where training would (as its validation did), else float32.
        quality: the run's quality-control model (:mod:`medseg.inference.quality`), or ``None``.
    """

    def __init__(self, model: torch.nn.Module, pre: Preprocessing, scheme: LabelScheme, patch_size: tuple[int, ...],
                 colors: list | None = None, num_channels: int | None = None, overlap: float = 0.5, mirror: bool = False,
                 device: str = "auto", batch_size: int = 2, temperature: float | None = None, amp: bool = True,
                 quality: QualityModel | None = None):
        self.device = resolve_device(device)
        self.amp_dtype = amp_dtype_for(self.device, amp)  # the precision training validated in
        self.model = model.to(self.device).eval()
        self.dims = len(patch_size)
        self.pre, self.scheme, self.num_channels = pre, scheme, num_channels
        self.colors = [tuple(c) for c in (colors or scheme.colors())]
        self.patch_size, self.overlap, self.mirror, self.batch_size = tuple(patch_size), overlap, mirror, batch_size
        self.temperature = temperature
        self.quality = quality
        self.identity = ""            # the run (folder name and start), named in DICOM SEG outputs
        self.label_codes: dict = {}   # user-given segment codes by label value (labels.json "codes")
        self.source: tuple[str, str, dict] | None = None  # how from_run/from_bundle made it (from_source makes it again)
        self.postprocess = None       # a cross-validated run's post-processing of the labels (medseg.inference.postprocess)

    @classmethod
    def from_run(cls, run_dir: str | Path, *, overlap: float = 0.5, mirror: bool = False, device: str = "auto",
                 calibration: bool = True, amp: bool = True, folds: list[int] | None = None,
                 postprocessing: bool = True) -> "Predictor":
        """``calibration``: apply the temperature of ``RUN/calibration.json`` when there is one. A cross-validated run
        (``medseg train --folds``) predicts with the mean of its folds' probabilities (``folds``: a subset) and
        applies its ``RUN/postprocessing.json`` unless ``postprocessing`` is false."""
        run_dir = Path(run_dir)
        from medseg.inference.ensemble import ensemble, fold_runs, is_cross_validated
        from medseg.inference.postprocess import PostProcessing

        if is_cross_validated(run_dir):
            runs = fold_runs(run_dir, folds)
            options = {"overlap": overlap, "mirror": mirror, "device": device, "calibration": calibration, "amp": amp}
            predictor = ensemble([cls.from_run(r, **options) for r in runs], runs)
            predictor.identity = f"{run_dir.resolve().name} ({len(runs)} folds)"
            predictor.postprocess = PostProcessing.of_run(run_dir) if postprocessing else None
            predictor.source = ("run", str(run_dir.resolve()), {**options, "folds": folds, "postprocessing": postprocessing})
            return predictor
        if folds is not None:
            from medseg.errors import ConfigError

            raise ConfigError("--folds applies to a cross-validated run (medseg train --folds)", path=run_dir)
        info = read_run_info(run_dir)
        scheme = LabelScheme.from_json(info["labels"])
        train = info["train"]
        predictor = cls(load_model(run_dir), preprocess_from_json(info["preprocess"]), scheme, tuple(train["patch_size"]),
                        info.get("display_colors"), (info.get("dataset") or {}).get("num_channels") if run_dims(info) == 3 else None,
                        overlap, mirror, device, int(train.get("batch_size", 2)), run_temperature(run_dir, calibration), amp,
                        pick_model(quality_models(run_dir), mirror))
        predictor.identity = f"{run_dir.resolve().name} {info.get('written', '')}".strip()
        predictor.label_codes = label_codes(run_dir)
        predictor.source = ("run", str(run_dir.resolve()), {"overlap": overlap, "mirror": mirror, "device": device,
                                                           "calibration": calibration, "amp": amp})
        return predictor

    @classmethod
    def from_bundle(cls, bundle_dir: str | Path, *, overlap: float | None = None, mirror: bool = False,
                    calibration: bool = True) -> "Predictor":
        """A predictor running an exported bundle's ``model.onnx`` in ONNX Runtime
        (:mod:`medseg.inference.bundle`), on the CPU in float32; needs no run folder."""
        from medseg.inference.bundle import OnnxNetwork, read_bundle

        bundle_dir = Path(bundle_dir)
        b = read_bundle(bundle_dir)
        window = b["sliding_window"]
        patch = tuple(int(p) for p in window["patch_size"])
        network = OnnxNetwork(bundle_dir / b["network"]["file"], int(b["channels"]), patch)
        predictor = cls(network, preprocess_from_json(b["preprocess"]), LabelScheme.from_json(b["labels"]), patch,
                        b.get("display_colors"), int(b["channels"]) if b["spatial_dims"] == 3 else None,
                        window.get("overlap", 0.5) if overlap is None else overlap, mirror, "cpu",
                        int(window.get("batch_size", 2)), b.get("temperature") if calibration else None, amp=False,
                        quality=pick_model(quality_models(bundle_dir), mirror))
        source = b.get("source_run") or {}
        predictor.label_codes = dict(b.get("label_codes") or {})
        predictor.identity = f"{Path(str(source.get('path', bundle_dir))).name} {source.get('written', '')}".strip()
        predictor.source = ("bundle", str(bundle_dir.resolve()), {"overlap": overlap, "mirror": mirror, "calibration": calibration})
        return predictor

    @classmethod
    def from_source(cls, source: tuple[str, str, dict]) -> "Predictor":
        """The same predictor again, from the :attr:`source` of one made by :meth:`from_run` or :meth:`from_bundle`
        (e.g. in a cohort engine's worker processes, which load the network once each)."""
        kind, path, options = source
        return cls.from_run(path, **options) if kind == "run" else cls.from_bundle(path, **options)

    def predict(self, image: ImageData, probabilities: bool = False, uncertainty: bool = False,
                quality: bool = False) -> Prediction:
        """Class ids on ``image``'s own grid (and the class probabilities, the entropy map and the per-case
        uncertainty score, if asked; ``quality``: the quality-control measures and, with a quality model, their
        assessment). The three stages :meth:`prepare`, :meth:`network` and :meth:`finish`, which a cohort engine
        may run in different processes (:mod:`medseg.inference.cohort_ray`)."""
        x, ctx = self.prepare(image)
        return self.finish(image, self.network(x), ctx, probabilities, uncertainty, quality)

    def prepare(self, image: ImageData) -> tuple[np.ndarray, object]:
        """The image checked against the run (spatial axes, channels) and preprocessed: (the network's input
        ``(C, *S')`` on the working grid, the context :meth:`finish` needs to map back)."""
        arr = image.array
        if arr.ndim != self.dims + 1:
            raise DataError(f"expected an image with {self.dims} spatial axes (C, {', '.join('xyz'[:self.dims])}), got an "
                            f"array of shape {arr.shape}", path=image.path,
                            hint=f"this run was trained on {self.dims}D data")
        if self.num_channels is not None and arr.shape[0] != self.num_channels:
            raise DataError(f"image has {arr.shape[0]} channel(s), the model was trained on {self.num_channels}",
                            path=image.path, hint="give the same channels (modalities) as in training")
        return self.pre.image(arr, image.geometry.spacing)

    def network(self, x: np.ndarray) -> np.ndarray:
        """The network's class probabilities ``(K, *S')`` (float32, uncalibrated) on the working grid: Gaussian
        sliding window, mirrored along every spatial axis with TTA."""
        if self.model is None:
            raise RuntimeError("this predictor was copied without its network (Predictor.without_network)")
        mirror_axes = tuple(range(self.dims)) if self.mirror else ()
        image = torch.from_numpy(np.ascontiguousarray(x))
        networks = list(getattr(self.model, "members", None) or [self.model])  # a cross-validated run: every fold
        total = None
        with autocast_for(self.device, self.amp_dtype):
            for network in networks:
                probs = predict_probabilities(network, image, self.patch_size, overlap=self.overlap, batch_size=self.batch_size,
                                              mirror_axes=mirror_axes, device=self.device).float().cpu()
                total = probs if total is None else total + probs  # (inference tensors: no in-place update)
        return (total if len(networks) == 1 else total / len(networks)).numpy()

    def finish(self, image: ImageData, probs: np.ndarray, ctx: object, probabilities: bool = False, uncertainty: bool = False,
               quality: bool = False) -> Prediction:
        """The network's probabilities mapped back onto ``image``'s grid (see :meth:`predict`)."""
        features = QualityFeatures.of(image.array, probs) if quality else None  # uncalibrated, on the working grid
        ids, full = self.pre.restore(probs, ctx, probabilities or uncertainty)
        if self.postprocess is not None:
            ids = self.postprocess(ids)
        if full is not None and self.temperature:
            full = apply_temperature(full, self.temperature)
        pred = Prediction(ids, full if probabilities else None, features=features)
        if features is not None and self.quality is not None:
            pred.quality = self.quality.assess(features)
        if uncertainty:
            pred.entropy = normalized_entropy(full)
            pred.uncertainty = case_uncertainty(pred.entropy, ids > 0)
        return pred

    def without_network(self) -> "Predictor":
        """A copy for the stages around the network (:meth:`prepare`, :meth:`finish`, writing), light to send to
        other processes: everything but the network."""
        light = copy.copy(self)
        light.model = None
        return light

    def predict_case(self, case: InputCase, out_dir: Path, writer, *, save_probabilities: bool = False,
                     uncertainty: bool = False, quality: bool = False,
                     series_uid: str | None = None, image: ImageData | None = None) -> tuple[Path, str | None, Prediction]:
        """Read (unless ``image`` is given), predict and write one case (the path of :meth:`predict_files` and of
        ``medseg serve``'s jobs): (the label file, the entropy map's name or ``None``, the prediction)."""
        if image is None:
            image = read_input(case, self.dims, self.num_channels, series_uid)
        pred = self.predict(image, save_probabilities, uncertainty, quality)
        target, entropy_map = writer.write(out_dir, case, image, pred)
        return target, entropy_map, pred

    def make_writer(self, fmt: str = "native", overlays: bool = True):
        """The writer of this predictor's kind of input (:mod:`medseg.inference.writers`)."""
        return ImageWriter(self.scheme, self.colors, fmt, overlays) if self.dims == 2 else \
            VolumeWriter(self.scheme, fmt, self.identity, self.label_codes)

    def predict_files(self, inputs: list[str | Path], out_dir: str | Path, *, fmt: str = "native", overlays: bool = True,
                      save_probabilities: bool = False, uncertainty: bool = False,
                      force: bool = False, overwrite: bool = False, quality: bool = True, series_uid: str | None = None,
                      on_case: Callable[[str, int, int], None] | None = None) -> tuple[list[Path], list[tuple[str, str]]]:
        """Predict every case in ``inputs`` (:func:`~medseg.inference.inputs.collect_inputs`) into ``out_dir``, in
        the input's kind of file (:mod:`medseg.inference.writers`; ``fmt``/``overlays`` for 2D images;
        ``save_probabilities`` adds the class probabilities); ``uncertainty`` adds entropy maps and ``uncertainty.csv`` (one row
        per case); ``series_uid`` picks the series of DICOM folders holding several; ``quality`` (when the run has a quality model) adds ``quality.csv``, one row per case with its
        quality-control score, predicted Dice and "check" flag (:mod:`medseg.inference.quality`). An ``out_dir`` among the inputs is refused (:func:`~medseg.inference.inputs.check_output_folder`;
        ``force`` allows one inside an input folder). Before anything is written, two inputs whose outputs share a
        name are refused, and so are existing files an output would replace unless ``overwrite``
        (:func:`~medseg.inference.inputs.check_output_files`). A case that fails is logged and skipped; ``on_case(name,
        done, total)`` follows each case. Returns (written files, [(input, reason)] failures)."""
        out_dir = Path(out_dir)
        writer = self.make_writer(fmt, overlays)
        cases = collect_inputs(inputs, self.dims)
        check_output_folder(out_dir, inputs, cases, force)
        quality = quality and self.quality is not None
        tables = ([out_dir / UNCERTAINTY_CSV] if uncertainty else []) + ([out_dir / QUALITY_CSV] if quality else [])
        check_output_files(out_dir, cases, lambda c: writer.targets(out_dir, c, save_probabilities, uncertainty), tables, overwrite)
        out_dir.mkdir(parents=True, exist_ok=True)  # a folder that cannot be made fails here, once, not per case
        written: list[Path] = []
        failed: list[tuple[str, str]] = []
        rows: list[dict] = []
        checks: list[dict] = []
        for i, case in enumerate(cases):
            where = str(case.paths[0])
            try:
                target, entropy_map, pred = self.predict_case(case, out_dir, writer, save_probabilities=save_probabilities,
                                                              uncertainty=uncertainty, quality=quality, series_uid=series_uid)
                if pred.uncertainty is not None:
                    rows.append({"case": case.name, **pred.uncertainty.row(), "entropy_map": entropy_map})
                if pred.quality is not None:
                    checks.append({"case": case.name, "prediction": target.name, **pred.quality.row()})
                written.append(target)
                flag = f"  CHECK: {'; '.join(pred.quality.reasons)}" if pred.quality is not None and pred.quality.check else ""
                log.info("[%d/%d] %s -> %s%s", i + 1, len(cases), case.name, target, flag)
            except MedsegError as e:
                log.error("%s", e)
                failed.append((where, str(e)))
            except (OSError, RuntimeError, ValueError, MemoryError) as e:  # one bad case must not stop a batch
                log.error("%s: prediction failed: %s: %s", where, type(e).__name__, e, exc_info=log.isEnabledFor(logging.DEBUG))
                failed.append((where, f"{type(e).__name__}: {e}"))
            if on_case:
                on_case(case.name, i + 1, len(cases))
        if uncertainty and rows:
            write_uncertainty_csv(out_dir / UNCERTAINTY_CSV, rows)
        if checks:
            write_quality_csv(out_dir / QUALITY_CSV, checks)
        return written, failed

