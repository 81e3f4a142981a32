"""Shared by the benchmark scripts: the machine description and running `medseg`."""

from __future__ import annotations

import os
import platform


def describe() -> str:
    import torch

    from medseg.runtime.environment import cpu_name

    cpu = cpu_name()
    try:
        mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    except (ValueError, OSError):
        mem = float("nan")
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return (f"{cpu}, {os.cpu_count()} cores, {mem:.0f} GiB RAM, {gpu}; "
            f"Python {platform.python_version()}, torch {torch.__version__}, torch threads {torch.get_num_threads()}")


def run_medseg(*args: str) -> float:
    """Run ``python -m medseg ARGS`` (checking its exit status); return its wall-clock seconds."""
    import subprocess
    import sys
    import time

    t = time.perf_counter()
    subprocess.run([sys.executable, "-m", "medseg", *args], check=True)
    return time.perf_counter() - t


def publish(text: str, append: bool) -> None:
    """Print a benchmark's section and, with ``append``, add it to BENCHMARKS.md."""
    from pathlib import Path

    print(text)
    if append:
        with (Path(__file__).resolve().parents[1] / "BENCHMARKS.md").open("a") as f:
            f.write(text if text.endswith("\n") else text + "\n")
