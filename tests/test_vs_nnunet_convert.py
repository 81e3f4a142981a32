"""The medseg-vs-nnU-Net harness without nnU-Net: dataset conversion, split files, result parsing, table."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from benchmarks.vs_nnunet.convert import convert, medseg_train_args
from benchmarks.vs_nnunet.datasets import check_medseg_split, resolve
from benchmarks.vs_nnunet.evaluate import labels_arg, scores_from_summary
from benchmarks.vs_nnunet.run_nnunet import parse_nnunet_summary
from benchmarks.vs_nnunet.table import append_to_benchmarks, markdown
from tests.helpers2d import write_disc_dataset
from tests.helpers3d import write_msd_dataset


def test_volume_dataset_converts_to_nnunet_raw_with_the_given_split(tmp_path):
    src = write_msd_dataset(tmp_path / "msd", n=5)
    split = tmp_path / "split.json"
    split.write_text(json.dumps({"train": ["case_000", "case_001", "case_002"], "val": ["case_003", "case_004"]}))
    ds = resolve(str(src), split)
    conv = convert(ds, tmp_path / "work")

    raw = conv.raw
    assert raw.name == "Dataset999_msd"
    meta = json.loads((raw / "dataset.json").read_text())
    assert meta["labels"] == {"background": 0, "bright": 1, "dark": 2}
    assert meta["channel_names"] == {"0": "MRI"} and meta["numTraining"] == 5 and meta["file_ending"] == ".nii.gz"
    assert sorted(p.name for p in (raw / "imagesTr").iterdir()) == [f"case_00{i}_0000.nii.gz" for i in range(5)]
    assert (raw / "imagesTr" / "case_001_0000.nii.gz").read_bytes() == (src / "imagesTr" / "case_001.nii.gz").read_bytes()
    assert (raw / "labelsTr" / "case_004.nii.gz").read_bytes() == (src / "labelsTr" / "case_004.nii.gz").read_bytes()
    # no test list: the validation cases are the evaluated ones, predicted from imagesTs and scored against labelsTs
    assert [p.name for p in conv.test_inputs] == ["case_003_0000.nii.gz", "case_004_0000.nii.gz"]
    assert sorted(p.name for p in conv.labels_test.iterdir()) == ["case_003.nii.gz", "case_004.nii.gz"]
    assert conv.fov_test is None
    assert json.loads(conv.splits_final.read_text()) == [{"train": ["case_000", "case_001", "case_002"],
                                                          "val": ["case_003", "case_004"]}]
    assert json.loads(conv.medseg_split.read_text())["val"] == ["case_003", "case_004"]
    assert medseg_train_args(conv) == [str(src), "--split-file", str(conv.medseg_split)]


def test_image_dataset_with_official_test_folder_uses_medsegs_split(tmp_path):
    root = tmp_path / "discs"
    write_disc_dataset(root / "training", n=7)
    write_disc_dataset(root / "test", n=3, seed=1)
    (root / "test" / "images" / "case0.png").rename(root / "test" / "images" / "case10.png")
    (root / "test" / "masks" / "case0.png").rename(root / "test" / "masks" / "case10.png")
    ds = resolve(str(root))
    assert ds.dim == 2 and ds.medseg_split == "85/15/0"
    from medseg.data.split import split_cases

    expected = split_cases([f"case{i}" for i in range(7)], [None] * 7, fractions=(0.85, 0.15, 0.0), seed=0)
    assert [c.key for c in ds.train] == expected["train"] and [c.key for c in ds.val] == expected["val"]
    assert sorted(c.key for c in ds.test) == ["case1", "case10", "case2"]

    conv = convert(ds, tmp_path / "work")
    meta = json.loads((conv.raw / "dataset.json").read_text())
    assert meta["channel_names"] == {"0": "gray"} and meta["file_ending"] == ".png" and meta["numTraining"] == 7
    assert meta["labels"]["background"] == 0 and sorted(meta["labels"].values()) == [0, 1]
    key = ds.train[0].key
    image = np.asarray(Image.open(conv.raw / "imagesTr" / f"{key}_0000.png"))
    assert np.array_equal(image, np.asarray(Image.open(root / "training" / "images" / f"{key}.png")))
    label = np.asarray(Image.open(conv.raw / "labelsTr" / f"{key}.png"))
    source = np.asarray(Image.open(root / "training" / "masks" / f"{key}.png"))
    assert set(np.unique(label)) == {0, 1} and np.array_equal(label == 1, source == 255)  # 0/255 -> class ids
    assert sorted(p.name for p in conv.labels_test.iterdir()) == ["case1.png", "case10.png", "case2.png"]
    assert medseg_train_args(conv) == [str(root / "training"), "--split", "85/15/0"]

    run = tmp_path / "run"
    run.mkdir()
    entries = {s: [{"key": c.key} for c in cases] for s, cases in (("train", ds.train), ("val", ds.val))}
    (run / "split.json").write_text(json.dumps({**entries, "test": []}))
    check_medseg_split(run, ds)
    entries["val"], entries["train"] = entries["train"][:1], entries["train"][1:] + entries["val"]
    (run / "split.json").write_text(json.dumps(entries))
    with pytest.raises(RuntimeError, match="differ"):
        check_medseg_split(run, ds)


def test_image_folder_without_test_folder_evaluates_medsegs_test_split(tmp_path):
    ds = resolve(str(write_disc_dataset(tmp_path / "discs", n=8)))
    from medseg.data.split import split_cases

    expected = split_cases([f"case{i}" for i in range(8)], [None] * 8, fractions=(0.7, 0.15, 0.15), seed=0)
    assert ds.medseg_split == "70/15/15" and [c.key for c in ds.test] == expected["test"]
    assert not {c.key for c in ds.test} & {c.key for c in ds.train + ds.val}


def test_non_consecutive_labels_are_refused(tmp_path):
    src = write_msd_dataset(tmp_path / "msd", n=3)
    meta = json.loads((src / "dataset.json").read_text())
    meta["labels"] = {"0": "background", "1": "bright", "2": "dark", "5": "unused"}
    (src / "dataset.json").write_text(json.dumps(meta))
    with pytest.raises(ValueError, match="0..K-1"):
        convert(resolve(str(src)), tmp_path / "work")


def _measured(seconds: float, mib: float) -> dict:
    return {"seconds": seconds, "peak_tree_mib": mib, "max_rss_mib": mib, "log": "x.log"}


def test_scores_and_table_from_fake_results(tmp_path):
    summary = {"images": 2, "mean_dice": {"mean": 0.8},
               "classes": {"Anterior": {"dice": {"mean": 0.85}, "hd95": {"mean": 1.5}},
                           "Posterior": {"dice": {"mean": 0.75}, "hd95": {"mean": None}}}}
    scores = scores_from_summary(summary)
    assert scores["per_class"] == {"Anterior": 0.85, "Posterior": 0.75} and scores["hd95_mean"] == 1.5
    assert labels_arg({"Posterior": 2, "background": 0, "Anterior": 1}) == "1=Anterior,2=Posterior"
    cross = parse_nnunet_summary({"foreground_mean": {"Dice": 0.81}, "mean": {"1": {"Dice": 0.86}, "2": {"Dice": 0.76}}},
                                 {"background": 0, "Anterior": 1, "Posterior": 2})
    assert cross == {"per_class": {"Anterior": 0.86, "Posterior": 0.76}, "mean_dice": 0.81}

    tool = {"train": _measured(3600, 4096), "predict": {"tta": _measured(300, 2048), "notta": _measured(160, 1024)},
            "eval": {"tta": scores, "notta": {**scores, "mean_dice": 0.79}}}
    results = {"dataset": "Dataset004_Hippocampus", "dim": 3, "device": "cpu", "budget": "30m", "date": "2026-01-02",
               "machine": "test box", "cases": {"train": 160, "val": 40, "test": 40}, "command": "python -m x",
               "nnunet": {**tool, "version": "2.8.1", "trainer": "nnUNetTrainer_1epoch", "configuration": "3d_fullres",
                          "epoch_seconds": 3000.0, "nnunet_eval": cross},
               "medseg": {**tool, "train": _measured(1800, 3072), "epochs": 64}}
    text = markdown(results)
    rows = [line for line in text.splitlines() if line.startswith("| nnU-Net") or line.startswith("| medseg")]
    assert len(rows) == 2
    assert "0.8000 / 0.7900" in rows[0] and "7.50 / 4.00" in rows[0] and "4.0 / 2.0" in rows[0]
    assert "1,800 s (64 epochs)" in rows[1] and "epochs 3,000 s" in rows[0]
    assert "nnU-Net's own evaluator" in text and "test box" in text

    bench = tmp_path / "BENCHMARKS.md"
    bench.write_text("# Benchmarks\n\nold\n")
    append_to_benchmarks(text, results, bench)
    assert bench.read_text().startswith("# Benchmarks\n\nold\n\n## medseg vs nnU-Net: Dataset004_Hippocampus, 30m budget, cpu (2026-01-02)")
    with pytest.raises(ValueError):
        append_to_benchmarks(text, {**results, "smoke": True}, bench)
