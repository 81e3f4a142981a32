"""`medseg train --resume RUN` after the training process was killed with SIGKILL."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from medseg.cli.main import main
from medseg.runfolder.history import read_history
from tests.helpers2d import write_disc_dataset

pytestmark = pytest.mark.slow


def test_resume_after_kill_9(tmp_path):
    data = write_disc_dataset(tmp_path / "discs", n=5, size=32)
    run = tmp_path / "run"
    args = ["train", str(data), "--out", str(run), "--device", "cpu", "--threads", "1", "--features", "4", "--depth", "2",
            "--patch-size", "16", "--batch-size", "2", "--epochs", "3", "--iterations", "2", "--patience", "0",
            "--checkpoint-every", "0s"]
    proc = subprocess.Popen([sys.executable, "-m", "medseg", *args], env={**os.environ, "OMP_NUM_THREADS": "1"},
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=tmp_path)
    state = run / "checkpoints" / "last.json"
    deadline = time.monotonic() + 60
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            if state.is_file() and json.loads(state.read_text())["info"]["epoch"] >= 0:
                break
            time.sleep(0.02)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert proc.returncode == -signal.SIGKILL, "training ended before it could be killed"
    assert not json.loads(state.read_text())["info"]["finished"]

    with pytest.raises(SystemExit) as e:
        main(["train", "--resume", str(run)])
    assert e.value.code in (0, None)
    info = json.loads(state.read_text())["info"]
    assert info["finished"] and info["stopped_by"] == "max_epochs"
    assert [r["epoch"] for r in read_history(run / "history.csv")] == list(range(3))
    assert (run / "model.safetensors").is_file()
