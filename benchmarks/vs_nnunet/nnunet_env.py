"""nnU-Net's own virtual environment, ``benchmarks/.nnunet-venv`` (ignored by git).

nnU-Net is never installed into medseg's environment. Its venv gets, in this order:

1. exactly the torch build that medseg's interpreter runs (``torch==2.13.0+cpu`` on the CPU
   machines), installed on its own first so pip takes it from the local wheel/cache and never
   resolves a (multi-GB CUDA) build itself; on a GPU machine it is medseg's CUDA build, so both
   tools use the same torch;
2. the pinned ``nnunetv2`` with a constraints file that holds torch at that version (nnunetv2's
   dependency chain ``dynamic-network-architectures -> timm -> torchvision`` would otherwise be free
   to pull a torchvision that wants a newer torch).

Afterwards the venv's torch version is checked against medseg's; a mismatch is an error.

One repair, made only when needed and recorded in the stamp: PyPI's Linux torchvision wheels are CUDA
builds, which cannot load beside a CPU-only torch (``operator torchvision::nms does not exist``), so
``import timm`` fails. nnunetv2 imports timm only in its Primus (transformer) trainers, but its trainer
lookup imports every trainer module, Primus before ``variants/``, so every ``nnUNetv2_train`` would
fail. In that case the benchmark venv drops torchvision and timm and deletes
``nnunetv2/training/nnUNetTrainer/primus/`` (two trainers the benchmark does not use); nothing else
in nnU-Net is changed. With a CUDA torch (GPU machines) the wheels load and nothing is touched.

A stamp file records what was installed, so a second call returns at once.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

NNUNET_VERSION = "2.8.1"  # newest nnunetv2 release; requires torch>=2.1.2,!=2.9.* (2.13 accepted)
ROOT = Path(__file__).resolve().parents[2]
DEFAULT_VENV = ROOT / "benchmarks" / ".nnunet-venv"
STAMP = ".medseg-bench-installed.json"


@dataclass(frozen=True)
class NnunetEnv:
    """A ready nnU-Net venv: its folder, interpreter and ``bin/`` (the ``nnUNetv2_*`` commands)."""

    venv: Path
    torch_version: str
    nnunet_version: str

    @property
    def bin(self) -> Path:
        return self.venv / "bin"

    @property
    def python(self) -> Path:
        return self.bin / "python"

    def command(self, name: str) -> str:
        """Absolute path of one of nnU-Net's console scripts, e.g. ``nnUNetv2_train``."""
        return str(self.bin / name)


def host_torch_version() -> str:
    """The torch build medseg runs on (``torch.__version__`` of this interpreter)."""
    import torch

    return str(torch.__version__)


def _venv_torch(python: Path) -> tuple[str, str | None]:
    out = subprocess.run([str(python), "-c", "import json, torch; print(json.dumps([torch.__version__, torch.version.cuda]))"],
                         check=True, capture_output=True, text=True).stdout
    version, cuda = json.loads(out.strip().splitlines()[-1])
    return version, cuda


def _timm_imports(python: Path) -> bool:
    return subprocess.run([str(python), "-c", "import timm"], capture_output=True).returncode == 0


def _drop_primus_trainers(python: Path) -> list[str]:
    """The repair described in the module docstring; returns what was removed."""
    import shutil

    out = subprocess.run([str(python), "-c", "import nnunetv2, os; print(os.path.dirname(nnunetv2.__file__))"],
                         check=True, capture_output=True, text=True).stdout.strip().splitlines()[-1]
    primus = Path(out) / "training" / "nnUNetTrainer" / "primus"
    subprocess.run([str(python), "-m", "pip", "uninstall", "--quiet", "--yes", "torchvision", "timm"], check=True)
    if primus.is_dir():
        shutil.rmtree(primus)
    log.warning("torchvision cannot load beside torch %s: removed torchvision, timm and %s (unused Primus trainers)",
                _venv_torch(python)[0], primus)
    return ["torchvision", "timm", str(primus)]


def _pip(python: Path, *args: str) -> None:
    cmd = [str(python), "-m", "pip", "install", "--quiet", *args]
    log.info("%s", " ".join(cmd))
    subprocess.run(cmd, check=True)


def ensure_nnunet_env(venv: Path = DEFAULT_VENV, nnunet_version: str = NNUNET_VERSION,
                      torch_version: str | None = None) -> NnunetEnv:
    """Create (once) and check the nnU-Net venv; return it.

    ``torch_version`` defaults to this interpreter's torch (``2.13.0+cpu`` here). Raises
    ``RuntimeError`` when the venv ends up with another torch than requested.
    """
    torch_version = torch_version or host_torch_version()
    venv = Path(venv)
    stamp = venv / STAMP
    want = {"nnunetv2": nnunet_version, "torch": torch_version}
    if stamp.is_file() and json.loads(stamp.read_text()).get("want") == want:
        return NnunetEnv(venv, torch_version, nnunet_version)

    t0 = time.perf_counter()
    python = venv / "bin" / "python"
    if not python.exists():
        base = getattr(sys, "_base_executable", sys.executable)
        subprocess.run([base, "-m", "venv", str(venv)], check=True)
    venv.mkdir(parents=True, exist_ok=True)
    constraints = venv / "constraints.txt"
    constraints.write_text(f"torch=={torch_version}\n")
    # 1. torch alone, the exact build medseg uses (from the local wheel / pip cache when there is one).
    _pip(python, f"torch=={torch_version}")
    # 2. nnU-Net, with torch held where it is.
    _pip(python, "--constraint", str(constraints), f"nnunetv2=={nnunet_version}")

    removed = [] if _timm_imports(python) else _drop_primus_trainers(python)
    got, cuda = _venv_torch(python)
    if got != torch_version:
        raise RuntimeError(f"{venv}: torch {got} installed, expected {torch_version} (the build medseg uses)")
    if cuda is not None and "+cpu" in torch_version:
        raise RuntimeError(f"{venv}: a CUDA build of torch ({got}, CUDA {cuda}) was installed on a CPU set-up")
    seconds = time.perf_counter() - t0
    size = sum(f.stat().st_size for f in venv.rglob("*") if f.is_file() and not f.is_symlink())
    info = {"want": want, "torch_cuda": cuda, "removed": removed, "install_seconds": round(seconds, 1), "size_bytes": size}
    stamp.write_text(json.dumps(info, indent=1) + "\n")
    log.info("nnU-Net venv ready at %s: nnunetv2 %s, torch %s, %.0f s, %.2f GiB",
             venv, nnunet_version, got, seconds, size / 2**30)
    return NnunetEnv(venv, torch_version, nnunet_version)


def main() -> None:
    """``python -m benchmarks.vs_nnunet.nnunet_env [VENV]``: create the venv and print its stamp."""
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    env = ensure_nnunet_env(Path(sys.argv[1]) if len(sys.argv) > 1 else DEFAULT_VENV)
    print((env.venv / STAMP).read_text())


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    main()
