"""benchmarks/gpu_check.py (issue 24) in its --smoke configuration, so the GPU script is never dead code: every
row is a number or a stated skip, and the 1-process torchrun starts a process group and all-reduces."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_gpu_check_smoke_prints_one_table():
    done = subprocess.run([sys.executable, "-m", "benchmarks.gpu_check", "--smoke"], cwd=ROOT, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    rows = [line for line in done.stdout.splitlines() if line.startswith("| ") and not line.startswith("| measurement")]
    results = {r.split(" | ")[0][2:]: r.split(" | ")[1].rstrip(" |") for r in rows}
    steps = {k: v for k, v in results.items() if k.startswith("step,")}
    assert len(steps) == 5
    for key, value in steps.items():
        assert re.fullmatch(r"\d+\.\d ms(, peak \d+\.\d\d GiB)?", value) or value.startswith("skipped"), (key, value)
    assert re.fullmatch(r"\d+\.\d ms.*", steps[next(k for k in steps if k.endswith(", fp32"))])  # fp32 always measured
    assert sum(1 for k in results if k.startswith("inference")) == 2
    assert all(re.fullmatch(r"\d+\.\d{3} s", v) for k, v in results.items() if k.startswith("inference"))
    assert re.search(r"backend=(gloo|nccl) world=1 sum=1", results["torchrun, 1 process: process group + all-reduce"])
