"""Shared pytest helpers."""
# --- shared datasets (../shared) -------------------------------------------------
import os as _os
from pathlib import Path as _Path

import pytest as _pytest

SHARED_ROOT = _Path(_os.environ.get("MEDSEG_SHARED_DIR", _Path(__file__).resolve().parents[1].parent / "shared"))


def shared_path(*parts: str) -> _Path:
    """Path of a file or folder under the shared datasets folder (``../shared``).

    Skips the calling test with a clear reason when it is absent, but fails it
    under ``CI=true``, where the shared data must be present.
    """
    path = SHARED_ROOT.joinpath(*parts)
    if not path.exists():
        reason = f"shared data not found: {path} (set MEDSEG_SHARED_DIR or mount ../shared)"
        if _os.environ.get("CI", "").strip().lower() == "true":
            _pytest.fail(reason + "; CI=true requires it", pytrace=False)
        _pytest.skip(reason)
    return path


@_pytest.fixture
def shared():
    """The :func:`shared_path` helper as a fixture: ``shared("datasets", "drive")``."""
    return shared_path


@_pytest.fixture(scope="module")
def one_thread():
    """One torch thread for a module (``pytestmark = pytest.mark.usefixtures("one_thread")``): on a shared
    2-core machine, two threads that wait on each other are far slower."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def free_port() -> int:
    """A TCP port free on the loopback interface now."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_cli(*args, code: int = 0) -> None:
    """``medseg ARGS`` in process; asserts its exit status is ``code``."""
    from medseg.cli.main import main

    try:
        main([str(a) for a in args])
    except SystemExit as e:
        assert (e.code or 0) == code, f"medseg {' '.join(map(str, args))} exited with {e.code}"
    else:
        assert code == 0, f"medseg {' '.join(map(str, args))} exited with 0, expected {code}"


def pytest_terminal_summary(terminalreporter):
    """Print how many examples hypothesis ran per reader (tests/test_fuzz_readers.py), so CI's log shows it."""
    import sys

    ran = {}
    for name, module in list(sys.modules.items()):
        if name.endswith("test_fuzz_readers"):
            ran.update({k: v for k, v in getattr(module, "RAN", {}).items() if v})
    if ran:
        terminalreporter.write_line("hypothesis examples per reader: " + ", ".join(f"{k} {v}" for k, v in ran.items())
                                    + f" ({sum(ran.values())} in all)")
