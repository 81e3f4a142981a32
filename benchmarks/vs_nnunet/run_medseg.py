"""The medseg side: ``medseg train`` with its planned defaults under the time budget, on the same cases as
nnU-Net's fold 0, then ``medseg predict`` of the evaluated cases with and without ``--tta``. Each command
runs in its own process (``python -m medseg``, this interpreter) and is measured like nnU-Net's::

    medseg train DATA --out RUN --time-budget 30m --split-file WORK/medseg_split.json --device cpu   # 3D
    medseg train DATA --out RUN --time-budget 30m --split 85/15/0 --device cpu                       # 2D
    medseg predict RUN imagesTs/*_0000.* --out OUT [--tta] [--format index --no-overlay (2D)] --device cpu

medseg predicts the very files nnU-Net predicts (``imagesTs`` of the conversion: the NIfTI files as they
were, or the lossless PNG copies of the 2D images).
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

from benchmarks.vs_nnunet.convert import Converted, medseg_train_args
from benchmarks.vs_nnunet.datasets import check_medseg_split
from benchmarks.vs_nnunet.measure import Measured, run_measured


def _medseg(*args: str) -> list[str]:
    return [sys.executable, "-m", "medseg", *args]


class MedsegRunner:
    """medseg's commands for one converted dataset; the run folder is ``conv.work / "medseg_run"``."""

    def __init__(self, conv: Converted, device: str, budget: str, extra_train_args: tuple[str, ...] = ()):
        self.conv, self.device, self.budget, self.extra = conv, device, budget, tuple(extra_train_args)
        self.run_dir = conv.work / "medseg_run"
        self.logs = conv.work / "logs"

    def train(self) -> Measured:
        if self.run_dir.exists():
            shutil.rmtree(self.run_dir)
        m = run_measured(_medseg("train", *medseg_train_args(self.conv), "--out", str(self.run_dir),
                                 "--time-budget", self.budget, "--device", self.device, *self.extra),
                         self.logs / "medseg_train.log")
        check_medseg_split(self.run_dir, self.conv.dataset)
        return m

    def epochs(self) -> int | None:
        history = self.run_dir / "history.csv"
        return len(history.read_text().strip().splitlines()) - 1 if history.is_file() else None

    def predict(self, out: Path, tta: bool) -> Measured:
        if out.exists():
            shutil.rmtree(out)
        two_d = ["--format", "index", "--no-overlay"] if self.conv.dataset.dim == 2 else []
        return run_measured(_medseg("predict", str(self.run_dir), *map(str, self.conv.test_inputs), "--out", str(out),
                                    "--tta" if tta else "--no-tta", "--device", self.device, *two_d),
                            self.logs / f"medseg_predict_{'tta' if tta else 'notta'}.log")
