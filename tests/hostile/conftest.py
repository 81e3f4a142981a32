"""Fixtures of the hostile-input corpus: one tiny 2D and one tiny 3D run, trained once per session."""

from __future__ import annotations

import pytest

from tests.conftest import run_cli
from tests.helpers2d import write_disc_dataset
from tests.helpers3d import write_msd_dataset
from tests.hostile.corpus import Runs

FAST = ["--epochs", "1", "--iterations", "1", "--batch-size", "2", "--features", "4", "--depth", "2", "--threads", "1",
        "--no-plan"]


@pytest.fixture(scope="session")
def runs(tmp_path_factory) -> Runs:
    import torch

    threads = torch.get_num_threads()
    tmp = tmp_path_factory.mktemp("hostile_runs")
    data2d = write_disc_dataset(tmp / "data2d", n=6, size=48)
    run_cli("train", data2d, "--out", tmp / "run2d", *FAST)
    data3d = write_msd_dataset(tmp / "data3d", n=4)
    run_cli("train", data3d, "--out", tmp / "run3d", "--split", "50/25/25", "--patch-size", "16x16x8", *FAST)
    run_cli("export", tmp / "run2d", "--out", tmp / "bundle2d")
    torch.set_num_threads(threads)
    return Runs(data2d, tmp / "run2d", data3d, tmp / "run3d", tmp / "bundle2d")
