"""Writing a prediction where its input came from, in the input's kind of file.

- :class:`ImageWriter` (2D image files): ``<name>.png`` in the training masks' own encoding
  (``native``), as class ids (``index``) or in the display colours (``color``); ``<name>_overlay.png``;
  when asked ``<name>_probabilities.npy`` (float32, K x H x W);
  with uncertainty ``<name>_entropy.png`` (8-bit, ``round(255 H)``) and ``<name>_entropy.npy`` (float32).
- :class:`VolumeWriter` (volumes, DICOM series): ``<name><ending>`` (the input's format, ``.nii.gz`` for
  DICOM) with the input's exact geometry, ``<name>_probabilities<ending>`` (K channels) when asked, and
  ``<name>_entropy<ending>`` (float32 on the same grid) with uncertainty. ``dicom-seg`` (DICOM series inputs):
  ``<name>.seg.dcm`` instead of the label map, a DICOM Segmentation object referencing the series
  (:mod:`medseg.inference.dicom_seg`).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from medseg.data.labels import LabelScheme
from medseg.errors import ConfigError, DataError
from medseg.inference.inputs import InputCase
from medseg.inference.overlays import save_overlay
from medseg.inference.uncertainty import entropy_png, save_npy
from medseg.io import ImageData, write_image

if TYPE_CHECKING:
    from medseg.inference.predictor import Prediction

#: ``native``: the training masks' own encoding (e.g. 0/255); ``index``: class ids 0..K-1;
#: ``color``: the training/display colours
OUTPUT_FORMATS = ("native", "index", "color")


class ImageWriter:
    def __init__(self, scheme: LabelScheme, colors: list, fmt: str = "native", overlays: bool = True):
        if fmt not in OUTPUT_FORMATS:
            raise ConfigError(f"unknown output format '{fmt}'", hint=f"choose one of: {', '.join(OUTPUT_FORMATS)}")
        self.scheme, self.colors, self.fmt, self.overlays = scheme, [tuple(c) for c in colors], fmt, overlays

    def targets(self, out_dir: Path, case: InputCase, probabilities: bool, uncertainty: bool) -> list[Path]:
        """Every file :meth:`write` makes for ``case``."""
        names = [f"{case.name}.png"] + [f"{case.name}_overlay.png"] * self.overlays
        names += [f"{case.name}_probabilities.npy"] * probabilities
        names += [f"{case.name}_entropy.png", f"{case.name}_entropy.npy"] * uncertainty
        return [out_dir / n for n in names]

    def write(self, out_dir: Path, case: InputCase, image: ImageData, pred: Prediction) -> tuple[Path, str | None]:
        """Write the files of one case; returns the mask's path and the entropy map's name (or ``None``)."""
        target = out_dir / f"{case.name}.png"
        if self.fmt == "color":
            write_image(target, np.moveaxis(np.array(self.colors, dtype=np.uint8)[pred.labels], -1, 0))
        elif self.fmt == "native":
            write_image(target, self.scheme.encode(pred.labels))
        else:
            write_image(target, pred.labels[None])
        if self.overlays:
            save_overlay(out_dir / f"{case.name}_overlay.png", image.array, pred.labels, self.colors)
        if pred.probabilities is not None:
            save_npy(out_dir / f"{case.name}_probabilities.npy", pred.probabilities)
        if pred.entropy is None:
            return target, None
        write_image(out_dir / f"{case.name}_entropy.png", entropy_png(pred.entropy)[None])
        save_npy(out_dir / f"{case.name}_entropy.npy", pred.entropy)
        return target, f"{case.name}_entropy.png"


class NothingToWrite(DataError):
    """A prediction with nothing to write in the asked format (an empty DICOM SEG): not a failure of the input."""

    def __init__(self, message: str, *, path=None, hint=None, prediction=None):
        super().__init__(message, path=path, hint=hint)
        self.prediction = prediction


class VolumeWriter:
    """``fmt``: ``native``/``nifti`` (the input's format; ``.nii.gz`` for DICOM series) or ``dicom-seg``;
    ``run_id`` and ``user_codes`` identify the algorithm and code the segments of a SEG."""

    FORMATS = ("native", "nifti", "dicom-seg")

    def __init__(self, scheme: LabelScheme, fmt: str = "native", run_id: str = "", user_codes: dict | None = None):
        if fmt not in self.FORMATS:
            raise ConfigError(f"--format {fmt} applies to 2D runs; a 3D run writes {', '.join(self.FORMATS)}",
                              hint="leave out --format (the input's format; .nii.gz for DICOM series), or --format dicom-seg")
        self.scheme, self.fmt, self.run_id, self.user_codes = scheme, fmt, run_id, user_codes

    def _label_name(self, case: InputCase) -> str:
        if self.fmt == "dicom-seg":
            if not case.paths[0].is_dir():
                raise ConfigError("--format dicom-seg needs DICOM series inputs (a SEG references its source images)",
                                  path=case.paths[0], hint="give the DICOM series folder, or leave out --format")
            from medseg.inference.dicom_seg import SEG_SUFFIX

            return f"{case.name}{SEG_SUFFIX}"
        return f"{case.name}{case.suffix}"

    def targets(self, out_dir: Path, case: InputCase, probabilities: bool, uncertainty: bool) -> list[Path]:
        """Every file :meth:`write` makes for ``case``."""
        names = [self._label_name(case)] + [f"{case.name}_probabilities{case.suffix}"] * probabilities
        names += [f"{case.name}_entropy{case.suffix}"] * uncertainty
        return [out_dir / n for n in names]

    def write(self, out_dir: Path, case: InputCase, image: ImageData, pred: Prediction) -> tuple[Path, str | None]:
        """Write the files of one case; returns the label map's path and the entropy map's name (or ``None``)."""
        target = out_dir / self._label_name(case)
        if self.fmt == "dicom-seg":
            from medseg.inference.dicom_seg import write_dicom_seg
            from medseg.io.dicom import series_files

            if write_dicom_seg(target, series_files(case.paths[0], (image.meta or {}).get("series_uid")), pred.labels,
                               image.geometry, class_names=self.scheme.names, class_values=self.scheme.codes,
                               run_id=self.run_id, user_codes=self.user_codes) is None:
                raise NothingToWrite("nothing was predicted in this series, and a DICOM SEG needs at least one segment: no "
                                     "SEG written", path=case.paths[0], hint="predict with --format nifti for an empty label map",
                                     prediction=pred)
        else:
            write_image(target, self.scheme.encode(pred.labels), image.geometry)
        if pred.probabilities is not None:
            write_image(out_dir / f"{case.name}_probabilities{case.suffix}", pred.probabilities, image.geometry)
        if pred.entropy is None:
            return target, None
        name = f"{case.name}_entropy{case.suffix}"
        write_image(out_dir / name, pred.entropy[None], image.geometry)
        return target, name
