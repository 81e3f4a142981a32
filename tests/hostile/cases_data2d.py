"""Corpus cases: bad 2D training data (``medseg train`` / ``medseg inspect``)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image

from tests.helpers2d import write_disc_dataset
from tests.hostile.conftest import FAST
from tests.hostile.corpus import Runs, case


def _data(tmp: Path, n: int = 6) -> Path:
    return write_disc_dataset(tmp / "data", n=n, size=48)


def _train(tmp: Path, data: Path, *extra) -> list:
    return ["train", data, "--out", tmp / "run", *FAST, *extra]


@case(names="nowhere", says="error:")
def train_on_a_missing_folder(tmp: Path, runs: Runs) -> list:
    return _train(tmp, tmp / "nowhere")


@case(names="empty_folder")
def train_on_an_empty_folder(tmp: Path, runs: Runs) -> list:
    (tmp / "empty_folder").mkdir()
    return _train(tmp, tmp / "empty_folder")


@case(names="case3.png", says="mask")
def train_with_an_image_without_mask(tmp: Path, runs: Runs) -> list:
    data = _data(tmp)
    (data / "masks" / "case3.png").unlink()
    return _train(tmp, data)


@case(names="case2.png", says="size")
def train_with_a_mask_of_another_size(tmp: Path, runs: Runs) -> list:
    data = _data(tmp)
    Image.fromarray(np.zeros((30, 20), np.uint8)).save(data / "masks" / "case2.png")
    return _train(tmp, data)


@case(names="case1.png")
def train_with_a_garbage_image(tmp: Path, runs: Runs) -> list:
    data = _data(tmp)
    (data / "images" / "case1.png").write_bytes(np.random.default_rng(1).integers(0, 256, 300, np.uint8).tobytes())
    return _train(tmp, data)


@case(names="case4.png")
def train_with_a_truncated_image(tmp: Path, runs: Runs) -> list:
    data = _data(tmp)
    p = data / "images" / "case4.png"
    p.write_bytes(p.read_bytes()[:120])
    return _train(tmp, data)


@case(names="case0.png")
def train_with_an_empty_image_file(tmp: Path, runs: Runs) -> list:
    data = _data(tmp)
    (data / "images" / "case0.png").write_bytes(b"")
    return _train(tmp, data)


@case(names="case5.png")
def train_with_a_truncated_mask(tmp: Path, runs: Runs) -> list:
    data = _data(tmp)
    p = data / "masks" / "case5.png"
    p.write_bytes(p.read_bytes()[:60])
    return _train(tmp, data)


@case(names="case07.png", says="--allow-new-labels")
def train_with_stray_mask_values(tmp: Path, runs: Runs) -> list:
    """Defect 4: one mask with values 0..37 among 0/255 masks."""
    data = write_disc_dataset(tmp / "data", n=12, size=48)
    m = np.asarray(Image.open(data / "masks" / "case7.png")).copy()
    m[:6, :] = np.arange(48, dtype=np.uint8)[None, :] % 38
    Image.fromarray(m).save(data / "masks" / "case07.png")
    (data / "masks" / "case7.png").unlink()
    (data / "images" / "case7.png").rename(data / "images" / "case07.png")
    return _train(tmp, data)


@case(names="255", says="labels.json")
def train_with_a_value_labels_json_does_not_declare(tmp: Path, runs: Runs) -> list:
    """Defect 4: labels.json declares 0..3 (as index values), the masks hold 255."""
    data = _data(tmp)
    for p in (data / "masks").iterdir():
        m = np.asarray(Image.open(p)).copy()
        m[m == 255] = 1
        m[:2, :2] = 2
        m[-2:, -2:] = 3
        Image.fromarray(m).save(p)
    m = np.asarray(Image.open(data / "masks" / "case0.png")).copy()
    m[10:20, 10:20] = 255
    Image.fromarray(m).save(data / "masks" / "case0.png")
    (data / "labels.json").write_text(json.dumps({"background": [0, 0, 0], "a": [255, 0, 0], "b": [0, 255, 0],
                                                  "c": [0, 0, 255]}))
    return _train(tmp, data)


@case(names="case2.png", says="--channels")
def train_with_one_rgba_image_among_grey(tmp: Path, runs: Runs) -> list:
    """Defect 5: one RGBA image among grey ones would make the model 3-channel."""
    data = _data(tmp)
    grey = np.asarray(Image.open(data / "images" / "case2.png"))
    rgba = np.stack([grey, grey // 2, 255 - grey, np.full_like(grey, 255)], -1)
    Image.fromarray(rgba, "RGBA").save(data / "images" / "case2.png")
    return _train(tmp, data)


@case(names="case1.png", says="colour")
def inspect_with_one_colour_image_among_grey(tmp: Path, runs: Runs) -> list:
    data = _data(tmp)
    grey = np.asarray(Image.open(data / "images" / "case1.png"))
    Image.fromarray(np.stack([grey, grey, 255 - grey], -1)).save(data / "images" / "case1.png")
    return ["inspect", data, "--out", tmp / "fp.json"]


@case(names="case3.png", says="#00c800")
def train_with_an_unknown_colour_in_a_colour_mask(tmp: Path, runs: Runs) -> list:
    data = _data(tmp)
    for p in (data / "masks").iterdir():
        m = np.asarray(Image.open(p))
        Image.fromarray(np.stack([m, np.zeros_like(m), np.zeros_like(m)], -1)).save(p)
    m = np.asarray(Image.open(data / "masks" / "case3.png")).copy()
    m[:4, :4] = (0, 200, 0)
    Image.fromarray(m).save(data / "masks" / "case3.png")
    return _train(tmp, data, "--label-colors", "background=0,0,0;disc=255,0,0")


@case(names="labels.json")
def train_with_a_malformed_labels_json(tmp: Path, runs: Runs) -> list:
    data = _data(tmp)
    (data / "labels.json").write_text('{"background": [0, 0, 0], "disc": ')
    return _train(tmp, data)


@case(names="labels.json")
def train_with_a_labels_json_of_impossible_colours(tmp: Path, runs: Runs) -> list:
    data = _data(tmp)
    (data / "labels.json").write_text(json.dumps({"background": [0, 0, 0], "disc": [300, -1, "x"]}))
    return _train(tmp, data)


@case(names="data", says="nothing to learn")
def train_with_masks_of_one_class(tmp: Path, runs: Runs) -> list:
    data = _data(tmp)
    for p in (data / "masks").iterdir():
        Image.fromarray(np.zeros((48, 48), np.uint8)).save(p)
    return _train(tmp, data)


@case(names="scan.nii.gz")
def train_2d_folder_holding_a_volume_among_images(tmp: Path, runs: Runs) -> list:
    from medseg.io import Geometry, write_image

    data = _data(tmp)
    write_image(data / "images" / "scan.nii.gz", np.zeros((1, 48, 48, 5), np.float32),
                Geometry((1.0, 1.0, 1.0), (0.0, 0.0, 0.0), tuple(np.eye(3).ravel())))
    write_image(data / "masks" / "scan.nii.gz", np.zeros((1, 48, 48, 5), np.uint8),
                Geometry((1.0, 1.0, 1.0), (0.0, 0.0, 0.0), tuple(np.eye(3).ravel())))
    return _train(tmp, data)


@case(names="case1.png", says="field-of-view")
def train_with_a_field_of_view_mask_of_another_size(tmp: Path, runs: Runs) -> list:
    data = _data(tmp)
    (data / "fov").mkdir()
    for p in (data / "images").iterdir():
        size = (20, 20) if p.name == "case1.png" else (48, 48)
        Image.fromarray(np.full(size, 255, np.uint8)).save(data / "fov" / p.name)
    return _train(tmp, data, "--fov", "fov")


@case(names="groups.csv")
def train_with_a_missing_groups_csv(tmp: Path, runs: Runs) -> list:
    return _train(tmp, _data(tmp), "--groups-csv", tmp / "groups.csv")


@case(names="--pair-pattern")
def train_with_a_broken_pair_pattern(tmp: Path, runs: Runs) -> list:
    return _train(tmp, _data(tmp), "--pair-pattern", "(?P<key>[")


@case(names="--channels")
def train_with_an_impossible_channel_count(tmp: Path, runs: Runs) -> list:
    return _train(tmp, _data(tmp), "--channels", "2")


@case(names="--target-spacing")
def train_2d_data_with_a_3d_option(tmp: Path, runs: Runs) -> list:
    return _train(tmp, _data(tmp), "--target-spacing", "1")


@case(names="split.json")
def train_with_a_malformed_split_file(tmp: Path, runs: Runs) -> list:
    (tmp / "split.json").write_text('{"train": ["case0", ')
    return _train(tmp, _data(tmp), "--split-file", tmp / "split.json")


@case(names="ghost", says="split")
def train_with_a_split_file_naming_unknown_cases(tmp: Path, runs: Runs) -> list:
    (tmp / "split.json").write_text(json.dumps({"train": ["case0", "case1", "ghost"], "val": ["case2"], "test": ["case3"]}))
    return _train(tmp, _data(tmp), "--split-file", tmp / "split.json")


@case(names="--split")
def train_with_fractions_over_one(tmp: Path, runs: Runs) -> list:
    return _train(tmp, _data(tmp), "--split", "70/40/10")


@case(names="unet9", says="unet")
def train_an_unknown_model(tmp: Path, runs: Runs) -> list:
    return _train(tmp, _data(tmp), "--model", "unet9")


@case(names="soon", says="duration")
def train_with_a_budget_that_is_not_a_duration(tmp: Path, runs: Runs) -> list:
    return _train(tmp, _data(tmp), "--time-budget", "soon")


@case(names="0x0")
def train_with_an_impossible_size(tmp: Path, runs: Runs) -> list:
    return _train(tmp, _data(tmp), "--size", "0x0")


@case(names="plan.json")
def train_with_a_malformed_plan(tmp: Path, runs: Runs) -> list:
    (tmp / "plan.json").write_text("{ not json")
    return ["train", _data(tmp), "--out", tmp / "run", "--plan", tmp / "plan.json"]


@case(names="fingerprint.json")
def plan_from_a_malformed_fingerprint(tmp: Path, runs: Runs) -> list:
    (tmp / "fingerprint.json").write_text("[1, 2")
    return ["plan", _data(tmp), "--fingerprint", tmp / "fingerprint.json", "--out", tmp / "plan.json"]


@case(names="sub[i]ject")
def inspect_a_folder_whose_name_looks_like_markup(tmp: Path, runs: Runs) -> list:
    """Defect 7: paths are printed as written, not read as Rich markup."""
    (tmp / "sub[i]ject").mkdir()
    return ["inspect", tmp / "sub[i]ject", "--out", tmp / "fp.json"]


@case(names="fp_folder")
def inspect_out_is_a_folder(tmp: Path, runs: Runs) -> list:
    (tmp / "fp_folder").mkdir()
    return ["inspect", _data(tmp), "--out", tmp / "fp_folder"]
