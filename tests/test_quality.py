"""Quality control (medseg.inference.quality, medseg.evaluation.quality_fit): the score, the fitted model, and the
out-of-distribution flags of issue 23 on real images: a constant volume, a volume flipped left-right and a CT-like
intensity scale given to a Hippocampus model's references, a DRIVE image given to a Kvasir one; end to end through
`medseg train`, `qc`, `predict` and `evaluate` on a small synthetic run."""

from __future__ import annotations

import csv
import json
import re

import numpy as np
import pytest

from medseg.evaluation.quality_fit import build_model
from medseg.inference.quality import ImageStats, QualityFeatures, QualityModel, auroc, worst_share
from medseg.io import read_image
from tests.conftest import run_cli
from tests.helpers2d import write_disc_dataset


def test_score_is_the_worst_class_uncertain_share():
    probs = np.zeros((3, 10, 10), np.float32)
    probs[0] = 1.0
    probs[:, :2] = [[[0.0]], [[1.0]], [[0.0]]]          # class 1: 20 certain pixels
    probs[:, 2:4] = [[[0.0]], [[0.0]], [[1.0]]]         # class 2: 20 pixels ...
    probs[:, 4:5] = [[[0.4]], [[0.0]], [[0.6]]]         # ... and 10 where it hesitates with the background (30 predicted)
    f = QualityFeatures.of(np.ones((1, 10, 10), np.float32), probs)
    assert f.worst_class == 2 and f.score == pytest.approx(10 / (10 + 30))
    missed = np.zeros((2, 4, 4), np.float32)
    missed[0], missed[1, 0, 0], missed[0, 0, 0] = 1.0, 0.3, 0.7  # hesitated over, predicted nowhere: at most 1
    assert QualityFeatures.of(np.ones((1, 4, 4), np.float32), missed).score == 1.0
    assert f.foreground == pytest.approx(0.5)


def test_auroc_and_worst_share():
    assert auroc([0.9, 0.8, 0.1, 0.2], [True, True, False, False]) == 1.0
    assert auroc([0.1, 0.2, 0.9, 0.8], [True, True, False, False]) == 0.0
    assert auroc([0.5, 0.5], [True, False]) == 0.5
    assert np.isnan(auroc([0.1, 0.2], [False, False]))
    assert worst_share([0.9, 0.1, 0.5, 0.7, 0.8]).tolist() == [False, True, False, False, False]


def _features(image: np.ndarray, score: float = 0.1, foreground: float = 0.05) -> QualityFeatures:
    return QualityFeatures(score, 1, foreground, ImageStats.of(image))


def _hippocampus(shared, n: int) -> list[np.ndarray]:
    folder = shared("datasets", "hippocampus", "imagesTr")
    files = sorted(folder.glob("hippocampus_*.nii.gz"))[:n]
    return [read_image(f).array for f in files]


def test_hippocampus_out_of_distribution_volumes_are_flagged(shared):
    volumes = _hippocampus(shared, 36)
    reference, unseen = volumes[:28], volumes[28:]
    rng = np.random.default_rng(0)
    feats = [_features(v, float(rng.uniform(0.2, 0.5))) for v in reference]
    model = build_model(feats, list(rng.uniform(0.7, 0.9, len(feats))), [f.image for f in feats], mirror=False,
                        class_names=["background", "anterior", "posterior"])
    assert model.threshold is not None and model.images is not None
    assert any(t is not None for t in model.templates)  # Hippocampus crops are asymmetric along some axis

    def image_reasons(image):
        return [r for r in model.assess(_features(image)).reasons if not r.startswith("uncertain")]

    for v in unseen:  # held-out volumes as they are: no image rule fires
        assert image_reasons(v) == []
    lr_axis = 2  # the arrays are (C, z, y, x) and x is the patient's left-right axis in these volumes
    for v in unseen:
        assert any(r.startswith("orientation") for r in image_reasons(np.flip(v, axis=1 + lr_axis).copy())), "flip"
        assert any("constant" in r for r in image_reasons(np.full_like(v, v.mean())))
        ct = v / np.percentile(v, 99) * 1400 - 1000  # most values in Hounsfield-like negatives
        assert any(r.startswith("intensity scale") for r in image_reasons(ct.astype(np.float32)))
    # a flagged case is not flagged for its score, and a high score alone flags
    assert not model.assess(_features(unseen[0], score=0.0)).check
    high = model.assess(_features(unseen[0], score=model.threshold + 0.1))
    assert high.check and high.reasons[0].startswith("uncertain")


def test_a_drive_image_is_flagged_by_a_kvasir_model(shared):
    kvasir = sorted(shared("datasets", "kvasir_seg").rglob("images/*.jpg"))[:20]
    drive = sorted(shared("datasets", "drive").rglob("images/*.tif"))[:5]
    assert len(kvasir) == 20 and drive
    refs = [ImageStats.of(read_image(f).array) for f in kvasir]
    feats = [QualityFeatures(0.3, 1, 0.1, s) for s in refs]
    model = build_model(feats, [0.8] * len(feats), refs, mirror=False, class_names=["background", "polyp"])
    for f in drive:
        reasons = model.assess(_features(read_image(f).array, score=0.0, foreground=0.1)).reasons
        assert any(r.startswith("intensities unlike") for r in reasons), (f.name, reasons)
    grey = read_image(drive[0]).array[:1]
    assert any("channel" in r for r in model.assess(_features(grey, score=0.0, foreground=0.1)).reasons)


def test_model_round_trips_through_json():
    rng = np.random.default_rng(1)
    images = [rng.normal(100, 10, (1, 12, 10, 8)).astype(np.float32) for _ in range(12)]
    feats = [_features(im, float(s)) for im, s in zip(images, rng.uniform(0, 1, 12))]
    model = build_model(feats, list(0.9 - 0.3 * np.array([f.score for f in feats])), [f.image for f in feats], mirror=True,
                        class_names=["bg", "fg"])
    assert model.dice_line is not None and model.dice_line[1] == pytest.approx(-0.3)
    again = QualityModel.from_json(json.loads(json.dumps(model.to_json())))
    probe = _features(images[0] * 3 - 500, 0.95)
    assert again.assess(probe) == model.assess(probe)


@pytest.fixture(scope="module")
def small_run(tmp_path_factory, one_thread):
    tmp = tmp_path_factory.mktemp("qc")
    data = write_disc_dataset(tmp / "discs", n=20, size=32)
    run = tmp / "run"
    run_cli("train", data, "--out", run, "--split", "50/30/20", "--epochs", "2", "--iterations", "2", "--batch-size", "2",
            "--features", "4", "--depth", "2", "--threads", "1", "--no-plan")
    return data, run


def test_train_fits_it_predict_and_evaluate_apply_it(small_run, tmp_path, capsys):
    data, run = small_run
    q = json.loads((run / "quality.json").read_text())
    plain = q["models"]["plain"]
    assert plain["cases"] == 6 and plain["threshold"] is not None and plain["images"]["channels"] >= 1
    # a constant image among real ones is flagged in quality.csv and on the terminal
    inputs = tmp_path / "in"
    inputs.mkdir()
    images = sorted((data / "images").glob("*.png"))[:3]
    for f in images:
        (inputs / f.name).write_bytes(f.read_bytes())
    from PIL import Image

    Image.fromarray(np.full((32, 32), 90, np.uint8)).save(inputs / "zz_blank.png")
    capsys.readouterr()
    run_cli("predict", run, inputs, "--out", tmp_path / "out")
    rows = {r["case"]: r for r in csv.DictReader((tmp_path / "out" / "quality.csv").open())}
    assert set(rows) == {f.stem for f in images} | {"zz_blank"}
    assert rows["zz_blank"]["check"] == "1" and "constant" in rows["zz_blank"]["qc_reasons"]
    said = " ".join(capsys.readouterr().err.split())
    assert re.search(r"quality control: [1-4] of 4 case\(s\) to check \(.*zz_blank", said), said
    run_cli("predict", run, inputs, "--out", tmp_path / "out2", "--no-qc")
    assert not (tmp_path / "out2" / "quality.csv").exists()
    # evaluate: per-case columns and held-out figures
    run_cli("evaluate", run, "--out", tmp_path / "ev")
    with (tmp_path / "ev" / "per_image.csv").open() as f:
        per_case = list(csv.DictReader(f))
    assert per_case and all(r["check"] in ("0", "1") and r["qc_score"] != "" for r in per_case)
    summary = json.loads((tmp_path / "ev" / "summary.json").read_text())
    assert summary["quality_control"]["cases"] == len(per_case) and summary["quality_control"]["fitted_on_cases"] == 6


def test_qc_command_adds_the_tta_model(small_run):
    _, run = small_run
    run_cli("qc", run, "--tta", "--reference-cases", "3")
    models = json.loads((run / "quality.json").read_text())["models"]
    assert set(models) == {"plain", "tta"} and models["tta"]["mirror"] is True


def test_a_quality_file_of_the_earlier_score_scale_is_converted(tmp_path):
    from medseg.inference.quality import QUALITY_FILE, quality_models

    model = QualityModel(mirror=False, cases=10, threshold=0.5, dice_line=(0.9, -0.1))
    (tmp_path / QUALITY_FILE).write_text(json.dumps({"format_version": 1, "models": {"plain": model.to_json()}}))
    old = quality_models(tmp_path)["plain"]
    assert old.threshold == pytest.approx(0.5 / 1.5) and old.dice_line is None
