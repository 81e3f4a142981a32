"""Run one command and measure it: wall-clock seconds and peak memory.

Two memory figures per command (both in MiB):

- ``peak_tree_mib``: the peak, over samples every ``interval`` seconds, of the summed RSS of the command's
  whole process tree (nnU-Net trains and predicts with worker processes; medseg may too). Forked workers
  share pages, so this sum can overstate the true use somewhat; it is the figure a memory limit sees.
- ``max_rss_mib``: the largest single process of the tree (``ru_maxrss`` from ``wait4``, exact, covers the
  command and every descendant it waited for).

Output goes to a log file; a failing command raises ``RuntimeError`` quoting the log's tail.
"""

from __future__ import annotations

import os
import subprocess
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path


@dataclass(frozen=True)
class Measured:
    seconds: float
    peak_tree_mib: float
    max_rss_mib: float
    log: str

    def to_json(self) -> dict:
        return {k: (round(v, 2) if isinstance(v, float) else v) for k, v in asdict(self).items()}


def _children(pid: int) -> list[int]:
    try:
        tasks = Path(f"/proc/{pid}/task").iterdir()
        out: list[int] = []
        for t in tasks:
            out += [int(c) for c in (t / "children").read_text().split()]
        return out
    except OSError:
        return []


def _rss_kib(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def tree_rss_mib(pid: int) -> float:
    """Summed RSS of ``pid`` and all its descendants (Linux ``/proc``; 0 elsewhere)."""
    total, todo, seen = 0, [pid], set()
    while todo:
        p = todo.pop()
        if p in seen:
            continue
        seen.add(p)
        total += _rss_kib(p)
        todo += _children(p)
    return total / 1024


def run_measured(cmd: list[str], log: str | Path, env: dict[str, str] | None = None, cwd: str | Path | None = None,
                 interval: float = 0.2) -> Measured:
    """Run ``cmd`` to completion with stdout+stderr into ``log``; return its :class:`Measured`."""
    log = Path(log)
    log.parent.mkdir(parents=True, exist_ok=True)
    peak = 0.0
    with open(log, "w") as fh:
        fh.write("$ " + " ".join(cmd) + "\n")
        fh.flush()
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, env=env, cwd=cwd)
        done = threading.Event()

        def sample() -> None:
            nonlocal peak
            while not done.is_set():
                peak = max(peak, tree_rss_mib(proc.pid))
                done.wait(interval)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        _, status, usage = os.wait4(proc.pid, 0)
        seconds = time.perf_counter() - t0
        done.set()
        sampler.join()
        proc.returncode = os.waitstatus_to_exitcode(status)
    max_rss = usage.ru_maxrss / 1024  # Linux reports KiB
    if proc.returncode != 0:
        tail = "\n".join(log.read_text(errors="replace").splitlines()[-40:])
        raise RuntimeError(f"command failed (exit {proc.returncode}), log {log}:\n{tail}")
    return Measured(seconds, max(peak, max_rss), max_rss, str(log))
