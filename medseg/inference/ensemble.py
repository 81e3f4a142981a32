"""The folds of a cross-validated run as one predictor: their probabilities averaged.

:class:`FoldEnsemble` holds the folds' networks; :meth:`~medseg.inference.predictor.Predictor.network` runs the
sliding window (and mirroring TTA) of each on the same preprocessed image, at the same window positions, and
averages their probabilities. Everything before and after runs once: one preprocessing per case, one restore and
one write. The folds must share their preprocessing, patch and labels, as ``medseg train --folds`` makes them.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from medseg.errors import RunFolderError
from medseg.io.json_file import read_json_object
from medseg.runfolder import FOLDS_FILE


class FoldEnsemble(torch.nn.Module):
    """The folds' networks (``members``), moved and switched to eval mode together; not called as one network:
    :meth:`~medseg.inference.predictor.Predictor.network` runs each member's sliding window."""

    def __init__(self, models: list[torch.nn.Module]):
        super().__init__()
        self.members = torch.nn.ModuleList(models)


def is_cross_validated(run_dir: str | Path) -> bool:
    return (Path(run_dir) / FOLDS_FILE).is_file()


def fold_runs(run_dir: str | Path, folds: list[int] | None = None) -> list[Path]:
    """The fold run folders of a cross-validated run (``folds``: a subset by index), each trained."""
    run_dir = Path(run_dir)
    record = read_json_object(run_dir / FOLDS_FILE)
    k = int(record.get("k", len(record.get("folds", []))))
    chosen = list(range(k)) if folds is None else folds
    bad = [i for i in chosen if not 0 <= i < k]
    if bad or not chosen:
        raise RunFolderError(f"--folds {','.join(map(str, chosen))}: this run has folds 0..{k - 1}", path=run_dir / FOLDS_FILE)
    runs = [run_dir / f"fold_{i}" for i in chosen]
    missing = [r.name for r, i in zip(runs, chosen) if i not in record.get("done", [])]
    if missing:
        raise RunFolderError(f"fold(s) {', '.join(missing)} not trained yet", path=run_dir,
                             hint=f"finish the cross-validation: medseg train --resume {run_dir}")
    return runs


def ensemble(predictors: list, runs: list[Path]):
    """One predictor from the folds' predictors (the first's settings; the networks averaged)."""
    first = predictors[0]
    for p, r in zip(predictors[1:], runs[1:]):
        if (json.dumps(p.pre.to_json(), sort_keys=True) != json.dumps(first.pre.to_json(), sort_keys=True)
                or p.patch_size != first.patch_size or p.scheme.to_json() != first.scheme.to_json()):
            raise RunFolderError("the folds differ in preprocessing, patch or labels and cannot be averaged", path=r,
                                 hint="predict with one fold's run folder, or train the folds with one setup (medseg train --folds)")
    first.model = FoldEnsemble([p.model for p in predictors]).to(first.device).eval()
    temperatures = {p.temperature for p in predictors}
    first.temperature = temperatures.pop() if len(temperatures) == 1 else None  # one fold's calibration is not the ensemble's
    first.quality = None  # fitted for one fold's model, not for the ensemble
    return first
