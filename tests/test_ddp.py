"""DDP through torchrun: two CPU processes (gloo) train a tiny 2D model together.

Each rank must draw different batches (its own seeded stream), all ranks must end
with identical weights, and only rank 0 writes the run folder. The ranks report
their batch hashes and final weight hash through the engine's documented debug
option (``MEDSEG_DEBUG_RANKS=1`` → ``RUN/debug/rank<R>.json``).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from medseg.runfolder.history import read_history
from tests.helpers2d import write_disc_dataset

pytestmark = pytest.mark.slow


def test_two_gloo_ranks_see_different_data_and_end_identical(tmp_path):
    data = write_disc_dataset(tmp_path / "discs", n=5, size=32)
    run = tmp_path / "run"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MEDSEG_DEBUG_RANKS": "1", "CUDA_VISIBLE_DEVICES": ""}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           "-m", "medseg", "train", str(data), "--out", str(run), "--device", "cpu", "--threads", "1",
           "--features", "4", "--depth", "2", "--patch-size", "16", "--batch-size", "2",
           "--epochs", "2", "--iterations", "3", "--patience", "0"]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]

    ranks = [json.loads((run / "debug" / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert [r["rank"] for r in ranks] == [0, 1]
    batches = [r["batches"] for r in ranks]
    assert len(batches[0]) == len(batches[1]) == 2 * 3
    assert len(set(batches[0]) & set(batches[1])) < len(batches[0])  # each rank its own data
    assert ranks[0]["weights"] == ranks[1]["weights"]  # DDP kept the replicas identical

    # rank 0 alone wrote: one run folder, one history, no second copy anywhere
    assert [p.relative_to(tmp_path) for p in tmp_path.rglob("history.csv")] == [run.relative_to(tmp_path) / "history.csv"]
    assert len(list(tmp_path.rglob("medseg_run.json"))) == 1
    assert [r["epoch"] for r in read_history(run / "history.csv")] == [0, 1]
    assert json.loads((run / "checkpoints" / "last.json").read_text())["info"]["finished"]
    assert (proc.stdout + proc.stderr).count("run folder:") == 1  # one report, from rank 0
