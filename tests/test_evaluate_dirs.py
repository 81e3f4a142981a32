"""`medseg evaluate PRED_DIR GT_DIR`: NIfTI and PNG folders, pairing by name, outputs, clear errors."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from medseg.cli.main import main
from medseg.evaluation.evaluate_dirs import evaluate_dirs, parse_labels
from medseg.io import Geometry, write_image

SPACING = (0.8, 1.0, 2.5)


def fails(capsys, *args) -> str:
    with pytest.raises(SystemExit) as e:
        main([str(a) for a in args])
    err = capsys.readouterr().err
    assert e.value.code == 2, err
    assert "Traceback" not in err
    return " ".join(err.split())


def succeeds(*args) -> None:
    try:
        main([str(a) for a in args])
    except SystemExit as e:
        assert e.code in (0, None)


def truth_volume(shift: int = 0) -> np.ndarray:
    lab = np.zeros((14, 16, 8), np.uint8)
    lab[2:7, 3:12, 2:6] = 1
    lab[8:12, 3:12, 2:6] = 2
    return np.roll(lab, shift, axis=0)


def write_volumes(root, names_pred, names_gt, shifts=(0, 1, 0), spacing=SPACING):
    for i, (p, g) in enumerate(zip(names_pred, names_gt)):
        write_image(root / "gt" / g, truth_volume()[None], Geometry(spacing))
        write_image(root / "pred" / p, truth_volume(shifts[i % len(shifts)])[None], Geometry(spacing))
    return root / "pred", root / "gt"


def test_nifti_folders_with_dataset_json_names(tmp_path, capsys):
    names = [f"hippo_{i:03d}.nii.gz" for i in range(3)]
    pred, gt = write_volumes(tmp_path / "Task", names, names)
    (tmp_path / "Task" / "dataset.json").write_text(json.dumps({"labels": {"0": "background", "1": "Anterior", "2": "Posterior"}}))
    succeeds("evaluate", pred, gt, "--tolerance", "1.0")
    out = pred / "evaluation"
    summary = json.loads((out / "summary.json").read_text())
    assert list(summary["classes"]) == ["Anterior", "Posterior"] and summary["images"] == 3
    ant = summary["classes"]["Anterior"]
    assert {"mean", "std", "median", "ci95", "ci_unit", "n", "n_nan"} <= set(ant["dice"]) <= {"mean", "std", "median", "ci95", "ci_unit", "ci_note", "n", "n_nan"}
    # one case of three is shifted by one 0.8 mm voxel along x; the others are perfect
    assert ant["dice"]["median"] == 1.0 and ant["dice"]["mean"] < 1.0
    assert ant["dice"]["ci95"] == [None, None] and "3 cases" in ant["dice"]["ci_note"]  # three cases: no interval
    assert ant["hd95"]["mean"] == pytest.approx(0.8 / 3, abs=1e-5)
    assert summary["units"]["hd95"] == "mm" and summary["units"]["vol_diff"] == "mm³"
    rows = list(csv.DictReader((out / "per_case.csv").open()))
    assert list(rows[0])[0] == "case" and [r["case"] for r in rows] == ["hippo_000", "hippo_001", "hippo_002"]
    assert float(rows[1]["hd95_Posterior"]) == pytest.approx(0.8, abs=1e-5) and rows[1]["spacing"] == "0.8x1x2.5"
    cases = json.loads((out / "cases.json").read_text())
    assert cases["hippo_001"]["prediction"].endswith("pred/hippo_001.nii.gz") and cases["hippo_001"]["image"] is None
    assert "Anterior" in capsys.readouterr().err  # the terminal table


def test_nnunet_channel_suffix_labels_option_and_default_labels(tmp_path):
    pred, gt = write_volumes(tmp_path, [f"c{i}.nii.gz" for i in range(2)], [f"c{i}_0000.nii.gz" for i in range(2)])
    summary = evaluate_dirs(pred, gt, labels="2=posterior", out=tmp_path / "o1")
    assert list(summary["classes"]) == ["posterior"]  # value 1 in the maps is not scored
    summary = evaluate_dirs(pred, gt, out=tmp_path / "o2")
    assert list(summary["classes"]) == ["class_1", "class_2"] and summary["labels"] == {"1": "class_1", "2": "class_2"}


def test_label_only_in_some_cases_scores_as_both_empty_elsewhere(tmp_path):
    for i in range(2):
        lab = truth_volume()
        if i == 0:
            lab[lab == 2] = 0
        write_image(tmp_path / "gt" / f"c{i}.nii.gz", lab[None], Geometry(SPACING))
        write_image(tmp_path / "pred" / f"c{i}.nii.gz", lab[None], Geometry(SPACING))
    summary = evaluate_dirs(tmp_path / "pred", tmp_path / "gt")
    assert summary["classes"]["class_2"]["dice"]["mean"] == 1.0 and summary["classes"]["class_2"]["dice"]["n"] == 2


def write_png_case(folder, name, mask, scale=255):
    folder.mkdir(parents=True, exist_ok=True)
    Image.fromarray((mask * scale).astype(np.uint8)).save(folder / name)


def test_png_masks_0_255_truth_and_index_predictions_with_fov(tmp_path):
    yy, xx = np.mgrid[:40, :48]
    for i in range(3):
        disc = (yy - 20) ** 2 + (xx - 24 - i) ** 2 <= 81
        write_png_case(tmp_path / "gt", f"{i + 1:02d}_manual1.gif", disc)  # DRIVE-style names
        pred = disc.copy()
        pred[0:3, 0:3] = True  # false positives outside the field of view
        write_png_case(tmp_path / "pred", f"{i + 1:02d}_test.png", pred, scale=1)  # class indices 0/1
        write_png_case(tmp_path / "fov", f"{i + 1:02d}_test_mask.gif", yy > 4)
    s_fov = evaluate_dirs(tmp_path / "pred", tmp_path / "gt", fov_dir=tmp_path / "fov", out=tmp_path / "a")
    s_all = evaluate_dirs(tmp_path / "pred", tmp_path / "gt", out=tmp_path / "b")
    assert list(s_fov["classes"]) == ["foreground"] and s_fov["fov_restricted"] == 3
    assert s_fov["classes"]["foreground"]["dice"]["mean"] == 1.0 and s_fov["units"]["hd95"] == "px"
    assert s_all["classes"]["foreground"]["dice"]["mean"] < 1.0
    assert math.isfinite(s_all["classes"]["foreground"]["hd95"]["mean"])
    rows = list(csv.DictReader((tmp_path / "a" / "per_case.csv").open()))
    assert [r["case"] for r in rows] == ["01", "02", "03"]


def test_parse_labels():
    assert parse_labels("1=anterior, 2=posterior") == {1: "anterior", 2: "posterior"}
    assert parse_labels("3") == {3: "class_3"}


# --------------------------------------------------------------------------- errors


def test_empty_prediction_folder(tmp_path, capsys):
    _, gt = write_volumes(tmp_path, ["a.nii.gz"], ["a.nii.gz"])
    (tmp_path / "empty").mkdir()
    err = fails(capsys, "evaluate", tmp_path / "empty", gt)
    assert "holds no label files" in err and "empty" in err


def test_unmatched_names_are_listed(tmp_path, capsys):
    pred, gt = write_volumes(tmp_path, ["a.nii.gz", "b.nii.gz", "zz.nii.gz"], ["a.nii.gz", "b.nii.gz", "c.nii.gz"])
    err = fails(capsys, "evaluate", pred, gt)
    assert "without a ground truth" in err and "zz.nii.gz" in err
    (pred / "zz.nii.gz").unlink()
    err = fails(capsys, "evaluate", pred, gt)
    assert "without a prediction" in err and "c.nii.gz" in err


def test_shape_and_spacing_mismatch(tmp_path, capsys):
    pred, gt = write_volumes(tmp_path, ["a.nii.gz"], ["a.nii.gz"])
    write_image(pred / "a.nii.gz", truth_volume()[None, :-1], Geometry(SPACING))
    err = fails(capsys, "evaluate", pred, gt)
    assert "a.nii.gz" in err and "13x16x8" in err and "14x16x8" in err
    write_image(pred / "a.nii.gz", truth_volume()[None], Geometry((1.0, 1.0, 2.5)))
    err = fails(capsys, "evaluate", pred, gt)
    assert "spacing" in err and "resample" in err


def test_unexpected_label_value_in_prediction(tmp_path, capsys):
    pred, gt = write_volumes(tmp_path, ["a.nii.gz"], ["a.nii.gz"])
    lab = truth_volume()
    lab[0, 0, 0] = 7
    write_image(pred / "a.nii.gz", lab[None], Geometry(SPACING))
    err = fails(capsys, "evaluate", pred, gt)
    assert "unexpected label values in the prediction: 7" in err and "pred/a.nii.gz" in err
    err = fails(capsys, "evaluate", pred, gt, "--labels", "1=x,2=y")
    assert "unexpected label values in the prediction: 7" in err


def test_unexpected_value_in_png_prediction(tmp_path, capsys):
    write_png_case(tmp_path / "gt", "a.png", np.eye(8, dtype=bool))
    write_png_case(tmp_path / "pred", "a.png", np.eye(8, dtype=np.uint8), scale=7)
    err = fails(capsys, "evaluate", tmp_path / "pred", tmp_path / "gt")
    assert "unexpected label values" in err and "a.png" in err


def test_unreadable_file(tmp_path, capsys):
    pred, gt = write_volumes(tmp_path, ["a.nii.gz"], ["a.nii.gz"])
    (pred / "a.nii.gz").write_bytes(b"not a nifti file")
    err = fails(capsys, "evaluate", pred, gt)
    assert "a.nii.gz" in err and "error" in err


def test_run_form_options_are_refused_with_two_folders(tmp_path, capsys):
    pred, gt = write_volumes(tmp_path, ["a.nii.gz"], ["a.nii.gz"])
    assert "--data and --tta" in fails(capsys, "evaluate", pred, gt, "--tta")
    assert "not a medseg run folder" in fails(capsys, "evaluate", tmp_path)


# --------------------------------------------------------------------------- run folders


@pytest.mark.slow
@pytest.mark.parametrize("dim", [2, 3])
def test_run_evaluation_writes_predictions_that_evaluate_to_the_same_scores(tmp_path, dim):
    """`medseg evaluate RUN` saves each prediction and lists it in cases.json; evaluating those files
    standalone against the listed labels reproduces the run's per-case metrics."""
    import shutil

    import torch

    from tests.helpers2d import write_disc_dataset
    from tests.helpers3d import write_msd_dataset

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        data = write_msd_dataset(tmp_path / "data", n=4) if dim == 3 else write_disc_dataset(tmp_path / "data", n=6, size=32)
        run = tmp_path / "run"
        succeeds("train", data, "--out", run, "--split", "50/25/25", "--epochs", "1", "--iterations", "1",
                 "--features", "4", "--depth", "2", "--threads", "1")
        succeeds("evaluate", run, "--tolerance", "2")
    finally:
        torch.set_num_threads(threads)
    ev = run / "evaluation"
    cases = json.loads((ev / "cases.json").read_text())
    run_rows = {r["case"]: r for r in csv.DictReader((ev / ("per_case.csv" if dim == 3 else "per_image.csv")).open())}
    assert set(cases) == set(run_rows) and cases
    for key, entry in cases.items():
        assert entry["prediction"].endswith(f"predictions/{key}{'.nii.gz' if dim == 3 else '.png'}")
        gt = tmp_path / "gt" / Path(entry["label"]).name
        gt.parent.mkdir(exist_ok=True)
        shutil.copy(entry["label"], gt)
        assert (isinstance(entry["image"], list) and len(entry["image"]) == 1) if dim == 3 else Path(entry["image"]).is_file()
    summary = json.loads((ev / "summary.json").read_text())
    assert summary["tolerance"] == 2.0 and {"dice", "hd95", "nsd", "vol_diff"} <= set(next(iter(summary["classes"].values())))
    labels = ",".join(f"{c['label']}={name}" for name, c in summary["classes"].items()) if dim == 3 else None
    again = evaluate_dirs(ev / "predictions", tmp_path / "gt", labels=labels, tolerance=2.0, out=tmp_path / "again")
    rows = {r["case"]: r for r in csv.DictReader((tmp_path / "again" / "per_case.csv").open())}
    assert list(again["classes"]) == list(summary["classes"])
    for key, r in run_rows.items():
        for name in summary["classes"]:
            for metric in ("dice", "iou", "hd95", "nsd", "vol_diff"):
                assert rows[key][f"{metric}_{name}"] == r[f"{metric}_{name}"], (key, metric)
