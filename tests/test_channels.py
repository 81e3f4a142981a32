"""Input channels of a 2D dataset are decided by every image; mixed grey and colour is refused unless
``--channels`` converts them (issue 16, defect 5)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from medseg.data.channels import resolve_channels
from medseg.errors import ConfigError, DataError
from tests.conftest import run_cli
from tests.helpers2d import write_disc_dataset

FAST = ["--epochs", "1", "--iterations", "1", "--batch-size", "2", "--features", "4", "--depth", "2", "--threads", "1",
        "--no-plan"]


def _save(path, array, mode=None):
    Image.fromarray(array, mode).save(path)
    return path


def test_one_count_shared_by_all_images(tmp_path):
    grey = [_save(tmp_path / f"g{i}.png", np.full((8, 8), i, np.uint8)) for i in range(3)]
    colour = [_save(tmp_path / f"c{i}.png", np.dstack([np.full((8, 8), v, np.uint8) for v in (i, 9, 200)])) for i in range(3)]
    assert resolve_channels(grey) == 1
    assert resolve_channels(colour) == 3


def test_grey_saved_as_rgba_counts_as_grey(tmp_path):
    grey = [_save(tmp_path / f"g{i}.png", np.full((8, 8), i, np.uint8)) for i in range(3)]
    g = np.full((8, 8), 77, np.uint8)
    odd = _save(tmp_path / "odd.png", np.dstack([g, g, g, np.full_like(g, 255)]), "RGBA")
    assert resolve_channels([*grey, odd]) == 1


def test_the_minority_is_named(tmp_path):
    grey = [_save(tmp_path / f"g{i}.png", np.full((8, 8), i, np.uint8)) for i in range(4)]
    odd = _save(tmp_path / "odd.png", np.dstack([np.full((8, 8), v, np.uint8) for v in (10, 90, 200)]))
    with pytest.raises(DataError, match="1 of 5 images are colour among grey ones: odd.png") as e:
        resolve_channels([*grey, odd])
    assert e.value.path == odd and "--channels" in e.value.hint
    assert resolve_channels([*grey, odd], requested=3) == 3
    with pytest.raises(ConfigError, match="--channels 2"):
        resolve_channels(grey, requested=2)


def test_channels_converts_a_mixed_dataset(tmp_path):
    data = write_disc_dataset(tmp_path / "d", n=6, size=48)
    grey = np.asarray(Image.open(data / "images" / "case2.png"))
    _save(data / "images" / "case2.png", np.dstack([grey, grey // 2, 255 - grey, np.full_like(grey, 255)]), "RGBA")
    run_cli("train", data, "--out", tmp_path / "refused", *FAST, code=2)
    assert not (tmp_path / "refused").exists()
    run_cli("train", data, "--out", tmp_path / "run", "--channels", "1", *FAST)
    assert json.loads((tmp_path / "run" / "model.json").read_text())["in_channels"] == 1
    run_cli("predict", tmp_path / "run", data / "images" / "case2.png", "--out", tmp_path / "pred")
    assert (tmp_path / "pred" / "case2.png").is_file()
