"""Corpus cases: exporting runs and predicting with damaged bundles (``medseg export``, ``predict BUNDLE``)."""

from __future__ import annotations

import shutil
from pathlib import Path

from tests.hostile.corpus import Runs, case, edited_json


def _bundle(tmp: Path, runs: Runs) -> Path:
    return Path(shutil.copytree(runs.bundle2d, tmp / "bundle"))


def _scan(runs: Runs) -> Path:
    return next(iter(sorted((runs.data2d / "images").iterdir())))


@case(names="bundle.json", says="not a medseg bundle")
def predict_with_a_bundle_missing_its_json(tmp: Path, runs: Runs) -> list:
    bundle = _bundle(tmp, runs)
    (bundle / "bundle.json").unlink()
    return ["predict", bundle, _scan(runs), "--out", tmp / "o"]


@case(names="model.onnx", says="checksum")
def predict_with_a_bundle_whose_network_changed(tmp: Path, runs: Runs) -> list:
    bundle = _bundle(tmp, runs)
    raw = bytearray((bundle / "model.onnx").read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    (bundle / "model.onnx").write_bytes(bytes(raw))
    return ["predict", bundle, _scan(runs), "--out", tmp / "o"]


@case(names="model.onnx", says="shape")
def predict_with_a_bundle_declaring_another_patch(tmp: Path, runs: Runs) -> list:
    bundle = _bundle(tmp, runs)
    with edited_json(bundle / "bundle.json") as meta:
        meta["sliding_window"]["patch_size"] = [p + 8 for p in meta["sliding_window"]["patch_size"]]
    return ["predict", bundle, _scan(runs), "--out", tmp / "o"]


@case(names="bundle.json", says="lacks the entry")
def predict_with_a_bundle_json_missing_its_labels(tmp: Path, runs: Runs) -> list:
    bundle = _bundle(tmp, runs)
    with edited_json(bundle / "bundle.json") as meta:
        del meta["labels"]
    return ["predict", bundle, _scan(runs), "--out", tmp / "o"]


@case(names="bundle.json", says="format 7")
def predict_with_a_bundle_of_another_version(tmp: Path, runs: Runs) -> list:
    bundle = _bundle(tmp, runs)
    with edited_json(bundle / "bundle.json") as meta:
        meta["format_version"] = 7
    return ["predict", bundle, _scan(runs), "--out", tmp / "o"]


@case(names="--backend")
def predict_a_bundle_with_the_torch_backend(tmp: Path, runs: Runs) -> list:
    return ["predict", runs.bundle2d, _scan(runs), "--out", tmp / "o", "--backend", "torch"]


@case(names="tensorrt")
def predict_with_an_unknown_backend(tmp: Path, runs: Runs) -> list:
    return ["predict", runs.run2d, _scan(runs), "--out", tmp / "o", "--backend", "tensorrt"]


@case(names="my_bundle", says="not empty")
def export_into_a_folder_of_the_users(tmp: Path, runs: Runs) -> list:
    (tmp / "my_bundle").mkdir()
    (tmp / "my_bundle" / "notes.txt").write_text("mine")
    return ["export", runs.run2d, "--out", tmp / "my_bundle"]


@case(names="torchscript")
def export_to_an_unknown_format(tmp: Path, runs: Runs) -> list:
    return ["export", runs.run2d, "--out", tmp / "b", "--format", "torchscript"]


@case(names="--device cuda", says="ONNX Runtime")
def predict_a_bundle_on_a_gpu_it_does_not_use(tmp: Path, runs: Runs) -> list:
    return ["predict", runs.bundle2d, _scan(runs), "--out", tmp / "o", "--device", "cuda"]
