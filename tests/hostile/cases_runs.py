"""Corpus cases: predicting, evaluating and reading run folders, with dangerous outputs and broken runs."""

from __future__ import annotations

import pickle
import shutil
from pathlib import Path

import numpy as np
from PIL import Image

from medseg.io import Geometry, write_image
from tests.hostile.corpus import Runs, case, edited_json


def _scans(tmp: Path, runs: Runs, n: int = 2) -> Path:
    folder = tmp / "scans"
    folder.mkdir()
    for p in sorted((runs.data2d / "images").iterdir())[:n]:
        shutil.copy(p, folder / p.name)
    return folder


def _volumes(tmp: Path, runs: Runs, n: int = 1) -> Path:
    folder = tmp / "volumes"
    folder.mkdir()
    for p in sorted((runs.data3d / "imagesTr").iterdir())[:n]:
        shutil.copy(p, folder / p.name)
    return folder


def _run_copy(tmp: Path, run: Path) -> Path:
    return Path(shutil.copytree(run, tmp / "run"))


@case(names="scans", says="holds the scans")
def predict_into_the_input_folder(tmp: Path, runs: Runs) -> list:
    """Defect 1: predict --out INPUT would replace each scan with its mask."""
    scans = _scans(tmp, runs)
    return ["predict", runs.run2d, scans, "--out", scans]


@case(names="volumes", says="holds the scans")
def predict_3d_into_the_input_folder(tmp: Path, runs: Runs) -> list:
    """Defect 1 in 3D: case0.nii.gz would become a label map."""
    volumes = _volumes(tmp, runs)
    return ["predict", runs.run3d, volumes, "--out", volumes]


@case(names="scans", says="holds the scans")
def predict_one_file_into_its_own_folder_even_with_force(tmp: Path, runs: Runs) -> list:
    scans = _scans(tmp, runs)
    return ["predict", runs.run2d, next(iter(sorted(scans.iterdir()))), "--out", scans, "--force"]


@case(names="masks", says="--force")
def predict_into_a_folder_inside_the_inputs(tmp: Path, runs: Runs) -> list:
    scans = _scans(tmp, runs)
    return ["predict", runs.run2d, scans, "--out", scans / "masks"]


@case(names="a.jpg", says="would both write a.png")
def predict_inputs_sharing_a_stem(tmp: Path, runs: Runs) -> list:
    """Defect 3: a.png, a.tif and a.jpg would all write a.png."""
    folder = tmp / "scans"
    folder.mkdir()
    image = Image.open(next(iter(sorted((runs.data2d / "images").iterdir()))))
    for ending in ("png", "tif", "jpg"):
        image.save(folder / f"a.{ending}")
    return ["predict", runs.run2d, folder, "--out", tmp / "out"]


@case(names="b_overlay.png", says="would both write")
def predict_an_input_named_like_another_inputs_overlay(tmp: Path, runs: Runs) -> list:
    scans = _scans(tmp, runs, 1)
    first = next(iter(scans.iterdir()))
    first.rename(scans / "b.png")
    shutil.copy(scans / "b.png", scans / "b_overlay.png")
    return ["predict", runs.run2d, scans, "--out", tmp / "out"]


@case(names="--overwrite")
def predict_into_a_folder_holding_a_same_named_file(tmp: Path, runs: Runs) -> list:
    """Defect 8: a same-named file in --out is the user's; it is not replaced without --overwrite."""
    scans = _scans(tmp, runs)
    out = tmp / "out"
    out.mkdir()
    for p in scans.iterdir():
        (out / p.name).write_text("the user's notes")
    return ["predict", runs.run2d, scans, "--out", out]


@case(names="--overwrite")
def predict_3d_into_a_folder_holding_a_same_named_volume(tmp: Path, runs: Runs) -> list:
    volumes = _volumes(tmp, runs)
    out = tmp / "out"
    out.mkdir()
    for p in volumes.iterdir():
        (out / p.name).write_bytes(b"someone else's result")
    return ["predict", runs.run3d, volumes, "--out", out]


@case(names="uncertainty.csv", says="--overwrite")
def predict_uncertainty_beside_a_users_csv(tmp: Path, runs: Runs) -> list:
    scans = _scans(tmp, runs)
    out = tmp / "out"
    out.mkdir()
    (out / "uncertainty.csv").write_text("the user's table\n")
    return ["predict", runs.run2d, scans, "--out", out, "--uncertainty"]


@case(names="not_a_folder")
def predict_out_is_a_file(tmp: Path, runs: Runs) -> list:
    (tmp / "not_a_folder").write_text("the user's file")
    return ["predict", runs.run2d, _scans(tmp, runs), "--out", tmp / "not_a_folder"]


@case(names="q[/z]")
def predict_an_input_whose_name_looks_like_markup(tmp: Path, runs: Runs) -> list:
    """Defect 7: 'q[/z]' crashed Rich with a MarkupError."""
    return ["predict", runs.run2d, tmp / "q[/z]", "--out", tmp / "o"]


@case(names="missing.png")
def predict_a_missing_input(tmp: Path, runs: Runs) -> list:
    return ["predict", runs.run2d, tmp / "missing.png", "--out", tmp / "o"]


@case(names="no_images")
def predict_a_folder_without_images(tmp: Path, runs: Runs) -> list:
    (tmp / "no_images").mkdir()
    (tmp / "no_images" / "readme.txt").write_text("nothing to see")
    return ["predict", runs.run2d, tmp / "no_images", "--out", tmp / "o"]


@case(names="broken.png", code=1, says="failed")
def predict_a_folder_with_one_broken_image(tmp: Path, runs: Runs) -> list:
    """One bad file must not stop a batch: the others are written, the bad one is named, exit 1."""
    scans = _scans(tmp, runs)
    (scans / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 40)
    return ["predict", runs.run2d, scans, "--out", tmp / "out"]


@case(names="scan.nii.gz", says="trained on 2D images")
def predict_a_volume_with_a_2d_run(tmp: Path, runs: Runs) -> list:
    volume = tmp / "scan.nii.gz"
    write_image(volume, np.zeros((1, 8, 8, 4), np.float32), Geometry((1.0, 1.0, 1.0), (0.0, 0.0, 0.0), tuple(np.eye(3).ravel())))
    return ["predict", runs.run2d, volume, "--out", tmp / "o"]


@case(names="photo.png")
def predict_a_2d_image_with_a_3d_run(tmp: Path, runs: Runs) -> list:
    Image.fromarray(np.zeros((32, 32), np.uint8)).save(tmp / "photo.png")
    return ["predict", runs.run3d, tmp / "photo.png", "--out", tmp / "o"]


@case(names="--format")
def predict_3d_with_a_2d_output_format(tmp: Path, runs: Runs) -> list:
    """Defect 8: --format on a 3D run was silently ignored."""
    return ["predict", runs.run3d, _volumes(tmp, runs), "--out", tmp / "o", "--format", "color"]


@case(names="sepia", says="native")
def predict_with_an_unknown_output_format(tmp: Path, runs: Runs) -> list:
    return ["predict", runs.run2d, _scans(tmp, runs), "--out", tmp / "o", "--format", "sepia"]


@case(names="no_run")
def predict_with_a_missing_run_folder(tmp: Path, runs: Runs) -> list:
    return ["predict", tmp / "no_run", _scans(tmp, runs), "--out", tmp / "o"]


@case(names="model.json")
def predict_with_a_run_missing_model_json(tmp: Path, runs: Runs) -> list:
    run = _run_copy(tmp, runs.run2d)
    (run / "model.json").unlink()
    return ["predict", run, _scans(tmp, runs), "--out", tmp / "o"]


@case(names="model.json")
def predict_with_a_malformed_model_json(tmp: Path, runs: Runs) -> list:
    run = _run_copy(tmp, runs.run2d)
    (run / "model.json").write_text('{"name": "unet", ')
    return ["predict", run, _scans(tmp, runs), "--out", tmp / "o"]


@case(names="model.json", says="unet9")
def predict_with_a_model_json_naming_an_unknown_network(tmp: Path, runs: Runs) -> list:
    run = _run_copy(tmp, runs.run2d)
    with edited_json(run / "model.json") as config:
        config["name"] = "unet9"
    return ["predict", run, _scans(tmp, runs), "--out", tmp / "o"]


@case(names="model.safetensors", says="do not match the model config")
def predict_with_weights_of_another_shape(tmp: Path, runs: Runs) -> list:
    run = _run_copy(tmp, runs.run2d)
    with edited_json(run / "model.json") as config:
        config["features"] = 8
    return ["predict", run, _scans(tmp, runs), "--out", tmp / "o"]


@case(names="model.safetensors")
def predict_with_a_pickle_renamed_safetensors(tmp: Path, runs: Runs) -> list:
    """Never unpickle a file the user did not make."""
    run = _run_copy(tmp, runs.run2d)
    (run / "model.safetensors").write_bytes(pickle.dumps({"weights": [1, 2, 3]}))
    return ["predict", run, _scans(tmp, runs), "--out", tmp / "o"]


@case(names="model.safetensors")
def predict_with_truncated_weights(tmp: Path, runs: Runs) -> list:
    run = _run_copy(tmp, runs.run2d)
    p = run / "model.safetensors"
    p.write_bytes(p.read_bytes()[:500])
    return ["predict", run, _scans(tmp, runs), "--out", tmp / "o"]


@case(names="medseg_run.json", says="format 99")
def predict_with_a_run_of_another_version(tmp: Path, runs: Runs) -> list:
    run = _run_copy(tmp, runs.run2d)
    with edited_json(run / "medseg_run.json") as info:
        info["format_version"] = 99
    return ["predict", run, _scans(tmp, runs), "--out", tmp / "o"]


@case(names="medseg_run.json")
def predict_with_a_malformed_run_json(tmp: Path, runs: Runs) -> list:
    run = _run_copy(tmp, runs.run2d)
    (run / "medseg_run.json").write_text("{")
    return ["predict", run, _scans(tmp, runs), "--out", tmp / "o"]


@case(names="calibration.json")
def predict_with_a_malformed_calibration(tmp: Path, runs: Runs) -> list:
    run = _run_copy(tmp, runs.run2d)
    (run / "calibration.json").write_text('{"temperature": "hot"}')
    return ["predict", run, _scans(tmp, runs), "--out", tmp / "o"]


@case(names="not a medseg run folder")
def evaluate_a_folder_that_is_not_a_run(tmp: Path, runs: Runs) -> list:
    return ["evaluate", tmp]


@case(names="masks", says="relocate")
def evaluate_a_run_whose_data_moved(tmp: Path, runs: Runs) -> list:
    data = Path(shutil.copytree(runs.data2d, tmp / "data"))
    run = tmp / "run"
    shutil.copytree(runs.run2d, run)
    with edited_json(run / "medseg_run.json") as info:
        info["data"] = str(data)
    shutil.rmtree(data / "masks")
    return ["evaluate", run]


@case(names="report_file")
def evaluate_out_is_a_file(tmp: Path, runs: Runs) -> list:
    (tmp / "report_file").write_text("the user's file")
    return ["evaluate", runs.run2d, "--out", tmp / "report_file"]


@case(names="preds", says="other.png")
def evaluate_folders_without_pairs(tmp: Path, runs: Runs) -> list:
    (tmp / "preds").mkdir()
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(tmp / "preds" / "other.png")
    return ["evaluate", tmp / "preds", runs.data2d / "masks"]


@case(names="not_a_run")
def report_of_a_folder_that_is_not_a_run(tmp: Path, runs: Runs) -> list:
    (tmp / "not_a_run").mkdir()
    return ["report", tmp / "not_a_run"]


@case(names="elsewhere")
def relocate_to_a_missing_folder(tmp: Path, runs: Runs) -> list:
    return ["relocate", _run_copy(tmp, runs.run2d), tmp / "elsewhere"]


@case(names="model.json")
def train_into_a_folder_holding_the_users_model_json(tmp: Path, runs: Runs) -> list:
    """Defect 8: train --out into a folder of unrelated files replaced a same-named model.json."""
    out = tmp / "mine"
    out.mkdir()
    (out / "model.json").write_text('{"mine": true}')
    return ["train", runs.data2d, "--out", out, "--epochs", "1", "--iterations", "1", "--no-plan"]


@case(names="not_a_folder")
def train_out_is_a_file(tmp: Path, runs: Runs) -> list:
    (tmp / "not_a_folder").write_text("the user's file")
    return ["train", runs.data2d, "--out", tmp / "not_a_folder", "--epochs", "1", "--iterations", "1", "--no-plan"]


@case(names="no_run", says="resume")
def resume_a_run_that_does_not_exist(tmp: Path, runs: Runs) -> list:
    return ["train", "--resume", tmp / "no_run"]


@case(names="dataset", says="not empty")
def synth_into_an_existing_dataset(tmp: Path, runs: Runs) -> list:
    """Defect 8: synth into a dataset added phantom cases and a labels.json that changed how masks are read."""
    data = Path(shutil.copytree(runs.data2d, tmp / "dataset"))
    return ["synth", data, "--patients", "1", "--slices", "1", "--size", "32"]


@case(names="--patients")
def synth_no_patients(tmp: Path, runs: Runs) -> list:
    return ["synth", tmp / "d", "--patients", "0"]


@case(names="--size")
def synth_a_negative_size(tmp: Path, runs: Runs) -> list:
    return ["synth", tmp / "d", "--size", "-5"]


@case(names="a_file")
def synth_into_a_file(tmp: Path, runs: Runs) -> list:
    (tmp / "a_file").write_text("the user's file")
    return ["synth", tmp / "a_file", "--patients", "1", "--slices", "1", "--size", "32"]


@case(names="demo_here", says="not empty")
def demo_into_a_folder_of_the_users(tmp: Path, runs: Runs) -> list:
    (tmp / "demo_here").mkdir()
    (tmp / "demo_here" / "thesis.tex").write_text("years of work")
    return ["demo", "--out", tmp / "demo_here"]


@case(names="/sys/medseg_predictions")
def predict_into_a_folder_that_cannot_be_made(tmp: Path, runs: Runs) -> list:
    """Defect 6: an output folder that cannot be written (/sys refuses even root)."""
    return ["predict", runs.run2d, _scans(tmp, runs), "--out", "/sys/medseg_predictions"]


@case(names="/sys/medseg_plan.json")
def plan_into_a_folder_that_cannot_be_written(tmp: Path, runs: Runs) -> list:
    return ["plan", runs.data2d, "--out", "/sys/medseg_plan.json"]


@case(names="run", says="already holds a training run")
def train_into_a_finished_run_whose_checkpoints_were_deleted(tmp: Path, runs: Runs) -> list:
    run = _run_copy(tmp, runs.run2d)
    shutil.rmtree(run / "checkpoints")  # saving space after training: the model is still the user's result
    return ["train", runs.data2d, "--out", run, "--epochs", "1", "--iterations", "1", "--no-plan"]
