"""The run folder: everything needed to rebuild a trained predictor.

Layout::

    RUN/
      medseg_run.json        format version, data, label scheme, preprocessing, training config
      split.json             train / val / test case keys (and their files)
      labels.json            class names and display colours
      model.safetensors      best weights      model.json   the model's constructor arguments
      checkpoints/last.*     resumable training state
      calibration.json       the fitted temperature (`medseg calibrate`), applied by predictors
      quality.json           the quality control fitted on the validation cases (end of training, `medseg qc`)
      history.csv, plots/    curves
      evaluation/            per-image CSV, summary JSON
"""

from __future__ import annotations

import json
import logging
import math
import time
from pathlib import Path
from typing import Any

import medseg
from medseg.errors import RunFolderError
from medseg.io.json_file import read_json_object
from medseg.io.atomic import write_json

log = logging.getLogger(__name__)

FORMAT_VERSION = 1
RUN_FILE = "medseg_run.json"
#: the task a run records in ``medseg_run.json``, by the number of spatial axes of its data
TASKS = {2: "segmentation2d", 3: "segmentation3d"}
CALIBRATION_FILE = "calibration.json"
#: a cross-validated run's folds (``RUN/folds.json``; the folds are run folders ``RUN/fold_<i>``)
FOLDS_FILE = "folds.json"


def write_run_info(run_dir: str | Path, info: dict[str, Any]) -> None:
    run_dir = Path(run_dir)
    info = {"format_version": FORMAT_VERSION, "medseg_version": medseg.__version__,
            "written": time.strftime("%Y-%m-%dT%H:%M:%S"), **info}
    write_json(run_dir / RUN_FILE, info)


#: Files a training run writes at its top level (besides :data:`RUN_FILE`): found in a folder that is not a run,
#: they are someone else's, and a new run there is refused rather than replacing them.
RUN_OUTPUTS = ("model.json", "model.safetensors", "split.json", "labels.json", "history.csv", "validation.json",
               "calibration.json", "quality.json", "report.html")


def check_new_run_folder(run_dir: str | Path) -> None:
    """Refuse to start a new training run in a folder that already holds one, or that holds files of the
    names a run writes without being a medseg run (they would be replaced)."""
    run_dir = Path(run_dir)
    if run_dir.exists() and not run_dir.is_dir():
        raise RunFolderError("a file stands where the run folder should be", path=run_dir, hint="choose a new --out folder")
    if (run_dir / FOLDS_FILE).exists():
        raise RunFolderError("this folder holds a cross-validated run", path=run_dir,
                             hint=f"continue it with medseg train --resume {run_dir}, or choose a new --out folder")
    theirs = [n for n in RUN_OUTPUTS if (run_dir / n).exists()] if not (run_dir / RUN_FILE).exists() else []
    if theirs:
        raise RunFolderError(f"this folder is not a medseg run but holds {', '.join(theirs)}, which training would "
                             "replace", path=run_dir, hint="choose a new --out folder")
    if (run_dir / RUN_FILE).exists() and ((run_dir / "checkpoints" / "last.json").exists()
                                          or (run_dir / "model.safetensors").exists()):  # a finished run, checkpoints removed
        raise RunFolderError(
            "this folder already holds a training run", path=run_dir,
            hint="resume it with `medseg train --resume RUN`, or choose a new --out folder",
        )


def read_run_info(run_dir: str | Path, require_model: bool = True) -> dict[str, Any]:
    """Read and check ``medseg_run.json``; a missing file or another format version is a clear error.

    ``require_model=False`` accepts a run that has no saved model yet (to resume it).
    """
    run_dir = Path(run_dir)
    path = run_dir / RUN_FILE
    if not run_dir.is_dir():
        raise RunFolderError("run folder not found", path=run_dir, hint="pass the --out folder of a `medseg train` run")
    if not path.is_file():
        raise RunFolderError(f"not a medseg run folder (no {RUN_FILE})", path=run_dir, hint="pass the --out folder of a `medseg train` run")
    info = read_json_object(path, RunFolderError)
    version = info.get("format_version")
    if version != FORMAT_VERSION:
        raise RunFolderError(
            f"run folder format {version} (written by medseg {info.get('medseg_version', '?')}) "
            f"cannot be read by medseg {medseg.__version__}, which reads format {FORMAT_VERSION}",
            path=path,
            hint=f"install medseg {info.get('medseg_version', 'of that version')} to use it, or retrain with this version",
        )
    if require_model and not (run_dir / "model.safetensors").is_file():
        raise RunFolderError("the run has no trained model yet (model.safetensors missing)", path=run_dir,
                             hint="let training finish one epoch, or resume it with `medseg train --resume`")
    return info


def run_task(dims: int) -> str:
    """The ``task`` recorded for a run on data with ``dims`` spatial axes."""
    return TASKS[dims]


def run_dims(info: dict[str, Any]) -> int:
    """The number of spatial axes of a run's data, from its ``medseg_run.json`` (``info``)."""
    by_task = {t: d for d, t in TASKS.items()}
    if info.get("task") not in by_task:
        raise RunFolderError(f"unknown run task {info.get('task')!r} in {RUN_FILE}", hint="retrain with this medseg version")
    return by_task[info["task"]]


def read_temperature(run_dir: str | Path) -> float | None:
    """The temperature in ``RUN/calibration.json``, or ``None`` when the run has none."""
    path = Path(run_dir) / CALIBRATION_FILE
    if not path.is_file():
        return None
    try:
        t = float(json.loads(path.read_text())["temperature"])
    except (json.JSONDecodeError, KeyError, TypeError, ValueError) as e:
        raise RunFolderError(f"corrupt {CALIBRATION_FILE}: {e}", path=path,
                             hint="refit it with `medseg calibrate RUN`, or delete it to predict uncalibrated") from None
    if not (math.isfinite(t) and t > 0):
        raise RunFolderError(f"{CALIBRATION_FILE} holds an invalid temperature {t}", path=path,
                             hint="refit it with `medseg calibrate RUN`")
    return t


def run_temperature(run_dir: str | Path, enabled: bool = True) -> float | None:
    """What a predictor applies: the run's temperature when ``enabled`` and ``calibration.json`` exists, else ``None``."""
    t = read_temperature(run_dir) if enabled else None
    if t is not None:
        log.info("applying the fitted temperature T=%.3f (%s); --no-calibration turns it off", t, CALIBRATION_FILE)
    return t
