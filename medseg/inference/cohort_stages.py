"""The three stages of predicting one cohort study, shared by every cohort engine (:mod:`medseg.inference.cohort`):

1. :func:`prepare_study`: read the study and preprocess it (CPU);
2. :func:`network_stage`: the network's sliding window (where the model is loaded: a GPU, an actor);
3. :func:`finish_study`: map the probabilities back onto the study's grid, assess its quality, write the label
   file and describe it as a status row (CPU).

Each stage turns a study's own failure (a corrupt file, a wrong channel count, a network that runs out of memory)
into a :class:`StudyFailed` that the next stages pass on, so that a failure is recorded for its study and never
raised in another process. :func:`inprocess_results` runs them one study after the other; the Ray engine
(:mod:`medseg.inference.cohort_ray`) runs them as tasks and actors.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from medseg.errors import MedsegError
from medseg.inference.inputs import InputCase, read_input
from medseg.inference.writers import NothingToWrite
from medseg.io.checksum import file_sha256

#: the ``sha256`` of a study that finished with nothing to write
NO_OUTPUT = "-"
#: what one study's failure may raise; anything else is a bug and stops the cohort
STUDY_ERRORS = (MedsegError, OSError, RuntimeError, ValueError, MemoryError)


@dataclass
class Study:
    id: str
    case: InputCase
    extra: dict


@dataclass
class StudyFailed:
    reason: str


def reason_of(e: BaseException) -> str:
    return str(e) if isinstance(e, MedsegError) else f"{type(e).__name__}: {e}"


def prepare_study(predictor, study: Study, series_uid: str | None) -> tuple[np.ndarray | None, tuple | StudyFailed]:
    """(the network's input, (the image, the preprocessing context, seconds)), or (None, the failure)."""
    t0 = time.perf_counter()
    try:
        image = read_input(study.case, predictor.dims, predictor.num_channels, series_uid)
        x, ctx = predictor.prepare(image)
    except STUDY_ERRORS as e:
        return None, StudyFailed(reason_of(e))
    return x, (image, ctx, time.perf_counter() - t0)


def network_stage(predictor, x: np.ndarray | None) -> tuple[np.ndarray | StudyFailed | None, float]:
    """(the class probabilities on the working grid, seconds); ``None`` for a study that failed before."""
    if x is None:
        return None, 0.0
    t0 = time.perf_counter()
    try:
        probs = predictor.network(np.array(x))  # a writable copy (arrays from another process may be read-only)
    except STUDY_ERRORS as e:
        return StudyFailed(reason_of(e)), 0.0
    return probs, time.perf_counter() - t0


def finish_study(predictor, writer, study: Study, out: Path, net: tuple, meta, quality: bool) -> tuple[dict | StudyFailed, dict]:
    """(the study's status row, seconds per stage), or (the failure, {})."""
    if isinstance(meta, StudyFailed):
        return meta, {}
    probs, network_seconds = net
    if isinstance(probs, StudyFailed):
        return probs, {}
    image, ctx, read_seconds = meta
    t0 = time.perf_counter()
    row = {**study.extra, "id": study.id, "input": str(study.case.paths[0])}
    try:
        pred = predictor.finish(image, np.array(probs), ctx, quality=quality)
        try:
            target, _ = writer.write(out, study.case, image, pred)
            row.update(output=target.name, sha256=file_sha256(target))
        except NothingToWrite as e:  # nothing predicted, nothing to write (a SEG needs a segment)
            row.update(output="", sha256=NO_OUTPUT, note=str(e))
    except STUDY_ERRORS as e:
        return StudyFailed(reason_of(e)), {}
    if pred.quality is not None:
        row.update(check=int(pred.quality.check), qc_score=f"{pred.quality.score:.4f}")
    timings = {"read": read_seconds, "network": network_seconds, "write": time.perf_counter() - t0}
    row["seconds"] = f"{sum(timings.values()):.3f}"
    return row, timings


def inprocess_results(predictor, studies: list[Study], out: Path, writer, quality: bool,
                      series_uid: str | None) -> Iterator[tuple[Study, dict | StudyFailed, dict]]:
    """The in-process engine: each study through the three stages in turn, in this process."""
    for study in studies:
        x, meta = prepare_study(predictor, study, series_uid)
        net = network_stage(predictor, x)
        del x
        yield study, *finish_study(predictor, writer, study, out, net, meta, quality)
