"""K-fold cross-validation (``medseg train DATA --out RUN --folds K``): every labelled case is used, each fold's
model is validated on the cases it never saw, and the folds together predict as one ensemble.

- **Folds** (:mod:`medseg.data.folds`): patients together, balanced by size and by the classes cases contain;
  ``RUN/folds.json`` lists them with their state (``--folds-file`` takes the user's own lists).
- **One budget**: ``--time-budget`` covers the whole cross-validation; each fold gets what is left divided by the
  folds still to train, so a fold that stops early leaves its time to the next.
- **Sub-runs**: fold ``i`` is an ordinary run folder ``RUN/fold_i`` (trained on the other folds, validated on
  fold ``i``, no test split), with one preprocessing for all (3D: the spacing and statistics of all cases, and one
  cache ``RUN/preprocessed``), so an ensemble preprocesses a case once. ``--resume RUN`` continues the fold that
  was interrupted and trains the rest.
- **Out-of-fold evaluation** (``RUN/cv/``): every case predicted once, by the fold that did not train on it; the
  per-case table, the summary with bootstrap CIs and the predictions, as ``medseg evaluate`` writes them.
- **Post-processing** decided on the out-of-fold predictions (:mod:`medseg.evaluation.postprocess_fit`):
  ``RUN/postprocessing.json``.
- **Prediction**: ``medseg predict RUN`` averages the folds' probabilities (:mod:`medseg.inference.ensemble`) and
  applies the post-processing.
"""

from __future__ import annotations

import copy
import logging
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from medseg.data.folds import DEFAULT_FOLDS, make_folds
from medseg.errors import ConfigError, DataError
from medseg.io import read_image
from medseg.io.atomic import claim_folder, write_json
from medseg.io.json_file import read_json_object
from medseg.runfolder import FOLDS_FILE, RUN_FILE
from medseg.training.setup import TrainSetup

log = logging.getLogger(__name__)

COMMAND = "train --folds"


@dataclass
class CrossValidationResult:
    folds: int
    seconds: list[float] = field(default_factory=list)
    summary: dict = field(default_factory=dict)  # the out-of-fold evaluation's summary.json
    postprocessing: dict = field(default_factory=dict)  # RUN/postprocessing.json


def case_stratum(label_paths) -> object:
    """The classes a case contains, from its label file(s): the label values (lossless masks and volumes), or
    foreground/empty for masks with many levels (lossy JPEG masks)."""
    values: set = set()
    for p in label_paths:
        arr = np.asarray(read_image(p).array)
        found = np.unique(arr)
        if len(found) > 16:
            return "foreground" if (arr > 127).any() else "empty"
        values.update(int(v) for v in found if v != 0)
    return tuple(sorted(values))


def labelled_cases(setup: TrainSetup) -> list:
    """Every labelled case but those of an official test folder (2D folders named ``test``), which stay unseen."""
    from medseg.evaluation.cases import folder_cases

    if setup.dims == 3:
        return folder_cases(setup.data, 3)
    from medseg.data.dataset2d import prepare_dataset
    from medseg.runfolder.split import SplitEntry

    cases = prepare_dataset(setup.data, setup.data_options).cases  # as training finds them
    kept = [c for c in cases if c.subset != "test"]
    if len(kept) < len(cases):
        log.info("cross-validation on %d cases; the %d of the test folder stay unseen", len(kept), len(cases) - len(kept))
    return [SplitEntry(c.key, (c.image,), c.masks, c.fov, c.group) for c in kept]


def write_folds(run: Path, setup: TrainSetup, k: int | None, folds_file: str | None) -> dict:
    """``RUN/folds.json``: the folds (made, or read from ``folds_file``), their state, and the budget."""
    entries = labelled_cases(setup)
    keys = [e.key for e in entries]
    if folds_file:
        given = read_json_object(Path(folds_file))
        raw = given.get("folds")
        if not isinstance(raw, list) or not all(isinstance(f, list) and f and all(isinstance(c, str) for c in f) for f in raw):
            raise DataError("a folds file needs {\"folds\": [[\"case\", ...], ...]}: lists of case names, none empty",
                            path=folds_file)
        folds = [list(f) for f in raw]
        if k is not None and k != len(folds):
            raise DataError(f"--folds {k}, but the file holds {len(folds)} folds", path=folds_file, hint="leave out --folds")
        unknown = sorted({c for f in folds for c in f} - set(keys))
        used = [c for f in folds for c in f]
        if len(folds) < 2 or unknown or len(used) != len(set(used)):
            raise DataError("a folds file needs two or more folds of known case names, each case once"
                            + (f" (unknown: {', '.join(unknown[:5])})" if unknown else ""), path=folds_file)
        group_of = {e.key: e.group for e in entries if e.group}
        fold_of_group: dict = {}
        split = set()
        for i, fold in enumerate(folds):
            for c in fold:
                if c in group_of and fold_of_group.setdefault(group_of[c], i) != i:
                    split.add(str(group_of[c]))
        split = sorted(split)
        if split:
            raise DataError(f"patient(s) {', '.join(split[:5])} have cases in more than one fold: a fold's model would see "
                            "the patient it is validated on", path=folds_file, hint="put each patient's cases in one fold")
        missing = sorted(set(keys) - set(used))
        if missing:
            raise DataError(f"{len(missing)} labelled case(s) are in no fold: {', '.join(missing[:5])}", path=folds_file,
                            hint="cross-validation uses every labelled case; add them to a fold")
    else:
        strata = [case_stratum(e.labels) for e in entries]
        folds = make_folds(keys, [e.group for e in entries], strata, k or DEFAULT_FOLDS, setup.split_seed)
    record = {"format": 1, "k": len(folds), "seed": setup.split_seed, "source": str(folds_file) if folds_file else "made",
              "grouped_by": "patient" if any(e.group for e in entries) else "case", "folds": folds,
              "time_budget": setup.train.time_budget, "done": [], "seconds": {}}
    write_json(run / FOLDS_FILE, record)
    return record


def _fixed_preprocessing(setup: TrainSetup, run: Path) -> None:
    """3D: one preprocessing for every fold (the spacing and CT statistics of all labelled cases) and one cache."""
    if setup.dims != 3:
        return
    setup.cache_dir = setup.cache_dir or str(run / "preprocessed")  # one cache for every fold
    if setup.preprocess is not None:  # a plan's or the user's: the same for every fold already
        return
    from medseg.data.dataset3d import foreground_stats, median_spacing
    from medseg.data.layouts import discover_volume_cases
    from medseg.data.preprocess3d import Preprocess3D

    cases, _ = discover_volume_cases(setup.data, require_labels=True)
    spacing = setup.target_spacing or median_spacing(cases)
    stats = foreground_stats(cases, Path(setup.cache_dir), setup.train.seed) if setup.normalization == "ct" else None
    setup.preprocess = Preprocess3D(spacing, setup.normalization, stats, setup.crop_to_nonzero)


def _sized_as_fold_0(setup: TrainSetup, fold_0: Path) -> None:
    """The later folds take fold 0's patch, batch and network, so the folds can be averaged (sized from one fold's
    cases, they could differ)."""
    from medseg.runfolder import read_run_info

    info = read_run_info(fold_0)
    setup.train.patch_size = tuple(info["patch_size"])
    setup.train.batch_size = int(info["train"]["batch_size"])
    setup.model_kwargs = {k: v for k, v in info["model"].items() if k != "name"}
    setup.auto_patch = setup.auto_batch = False


def fold_setup(setup: TrainSetup, run: Path, folds: list[list[str]], i: int, budget: float | None) -> TrainSetup:
    split = run / "cv" / "splits" / f"fold_{i}.json"
    write_json(split, {"train": [c for j, f in enumerate(folds) if j != i for c in f], "val": folds[i], "test": []})
    sub = copy.deepcopy(setup)
    sub.out, sub.split_file, sub.split = str(run / f"fold_{i}"), str(split), (0.8, 0.2, 0.0)
    sub.train.time_budget = budget
    return sub


def cross_validate(setup: TrainSetup | None, run: str | Path, k: int | None = None, folds_file: str | None = None, resume: bool = False,
                   callbacks_for=None) -> CrossValidationResult:
    """Train the folds not yet done (see the module doc), then evaluate out of fold. ``setup``: the whole
    cross-validation's (``None`` to resume: fold 0's run gives it). ``callbacks_for(i, k)``: fold ``i``'s training
    callbacks (progress)."""
    from medseg.evaluation.evaluate_run import evaluate_run
    from medseg.training.run import train
    from medseg.training.setup import setup_from_run

    run = Path(run)
    if resume:
        record = read_json_object(run / FOLDS_FILE)
        if not (run / "fold_0" / RUN_FILE).is_file():
            raise ConfigError("the cross-validation stopped before its first fold had a checkpoint: nothing to resume",
                              path=run, hint="start it again with a new --out")
        setup = setup_from_run(run / "fold_0")  # the folds' common setup (its split and budget are set per fold)
    else:
        claim_folder(run, COMMAND)
        if (run / FOLDS_FILE).is_file() or (run / RUN_FILE).is_file():
            raise ConfigError("this folder holds a run already", path=run, hint=f"medseg train --resume {run}, or a new --out")
        _fixed_preprocessing(setup, run)
        record = write_folds(run, setup, k, folds_file)
    folds = record["folds"]
    total = record.get("time_budget")
    for i in range(len(folds)):
        if i in record["done"]:
            continue
        sub_dir = run / f"fold_{i}"
        spent = sum(float(s) for s in record["seconds"].values())
        left = len(folds) - len(record["done"])
        budget = None if total is None else max((total - spent) / left, 1.0)
        resuming = (sub_dir / RUN_FILE).is_file() and any((sub_dir / "checkpoints").glob("last*"))
        if total is not None and total - spent <= 1.0:
            log.warning("the time budget is spent; fold %d and after get 1 s each", i + 1)
        log.info("fold %d of %d: %d training, %d validation cases%s", i + 1, len(folds), sum(len(f) for f in folds) - len(folds[i]),
                 len(folds[i]), f", {budget:.0f} s" if budget else "")
        t0 = time.monotonic()
        if resuming:
            sub = setup_from_run(sub_dir)
        else:
            if sub_dir.exists():  # a fold stopped before its first checkpoint: start it again
                shutil.rmtree(sub_dir)
            sub = fold_setup(setup, run, folds, i, budget)
        result = train(sub, callbacks=callbacks_for(i, len(folds)) if callbacks_for else None, resume=resuming)
        # a resumed fold's training time includes the part before the interruption
        record["seconds"][str(i)] = max(float(record["seconds"].get(str(i), 0.0)) + time.monotonic() - t0, float(result.elapsed))
        if i == 0 and not resuming:
            _sized_as_fold_0(setup, sub_dir)
        record["done"].append(i)
        write_json(run / FOLDS_FILE, record)
    summary = evaluate_run(run / "fold_0", out=run / "cv", folds=[run / f"fold_{i}" for i in range(len(folds))])
    from medseg.evaluation.postprocess_fit import fit_postprocessing

    decision = fit_postprocessing(run)
    return CrossValidationResult(len(folds), [record["seconds"][str(i)] for i in range(len(folds))], summary, decision)
