"""What a run was made with, for its record: versions, platform, device, precision, threads, medseg's commit."""

from __future__ import annotations

import platform
import subprocess
from importlib import metadata
from pathlib import Path

import torch

import medseg
from medseg.runtime.device import amp_dtype_for, resolve_device


def _version(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def source_commit() -> str | None:
    """The git commit of medseg's source when it runs from a checkout (``None`` otherwise or when git is absent);
    ``+dirty`` when the checkout has uncommitted changes."""
    root = Path(medseg.__file__).resolve().parents[1]
    if not (root / ".git").exists():
        return None
    try:
        commit = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True,
                                timeout=5, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=5, check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return commit + ("+dirty" if dirty else "") if commit else None


def cpu_name() -> str:
    """The processor's model name (``/proc/cpuinfo`` on Linux), else what ``platform`` knows."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def environment(device: str = "auto", amp: bool = True) -> dict:
    """The record of ``medseg_run.json``'s ``environment``: what training ran with on this machine."""
    resolved = resolve_device(device)
    dtype = amp_dtype_for(resolved, amp)
    return {
        "medseg": medseg.__version__, "medseg_commit": source_commit(), "python": platform.python_version(),
        "torch": torch.__version__, "numpy": _version("numpy"), "monai": _version("monai"),
        "simpleitk": _version("SimpleITK"), "platform": platform.platform(), "machine": platform.machine(),
        "device": str(resolved),
        "device_name": torch.cuda.get_device_name(resolved) if resolved.type == "cuda" else cpu_name(),
        "precision": str(dtype).removeprefix("torch.") if dtype else "float32", "threads": torch.get_num_threads(),
    }
