"""report.html: built from real (tiny) 2D and 3D runs; sections, embedded images, per-case table,
self-containedness, escaping, and what it shows when pieces of the run folder are absent."""

from __future__ import annotations

import base64
import csv
import io
import json
import math
import re
import shutil
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from medseg.cli.main import main
from medseg.evaluation.evaluate_run import evaluate_run
from medseg.evaluation.report import write_report
from medseg.evaluation.report.overlays import error_center
from medseg.evaluation.report.sections import PER_CASE_TABLE_ID, plan_rows, worst_and_best
from medseg.training.config import TrainConfig
from medseg.training.run import train
from medseg.training.setup import TrainSetup
from tests.helpers2d import write_disc_dataset
from tests.helpers3d import write_msd_dataset


def tiny_config(**kw) -> TrainConfig:
    return TrainConfig(max_epochs=1, iterations_per_epoch=2, batch_size=2, threads=1, **kw)

EVALUATED_SECTIONS = {"glance", "gallery", "dataset", "plan", "training", "curves", "metrics", "per-case", "volumes", "box-plots", "cases"}


def _run_cli(*args) -> None:
    try:
        main([str(a) for a in args])
    except SystemExit as e:
        assert (e.code or 0) == 0, f"medseg {' '.join(map(str, args))} exited with {e.code}"


def build_run_2d(root: Path, n: int = 8) -> Path:
    """A trained (one epoch of two steps) and evaluated 2D run on ``n`` disc images; 40% are test images."""
    data = write_disc_dataset(root / "discs", n=n, size=32)
    run = root / "run2d"
    train(TrainSetup(str(data), str(run), split=(0.4, 0.2, 0.4), model_kwargs={"features": 4, "depth": 2}, train=tiny_config()))
    evaluate_run(run)
    return run


def build_run_3d(root: Path) -> Path:
    """A trained and evaluated 3D run on four small blob volumes (two classes, anisotropic spacing)."""
    data = write_msd_dataset(root / "blobs", n=4)
    run = root / "run3d"
    train(TrainSetup(str(data), str(run), split=(0.5, 0.25, 0.25), model_kwargs={"features": 4, "depth": 1},
                          train=tiny_config(patch_size=(16, 16, 8)), auto_patch=False, auto_batch=False))
    evaluate_run(run)
    return run


class ReportParser(HTMLParser):
    """Section ids, ``<img>`` attributes, body rows per table id, and script tags of a report."""

    def __init__(self) -> None:
        super().__init__()
        self.sections: list[str] = []
        self.images: list[dict] = []
        self.rows: dict[str, int] = {}
        self.scripts: list[dict] = []
        self._table: list[str] = []
        self._in_body = False

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "section":
            self.sections.append(a.get("id", ""))
        elif tag == "img":
            self.images.append(a)
        elif tag == "script":
            self.scripts.append(a)
        elif tag == "table":
            self._table.append(a.get("id", ""))
        elif tag == "tbody":
            self._in_body = True
        elif tag == "tr" and self._in_body and self._table and self._table[-1]:
            self.rows[self._table[-1]] = self.rows.get(self._table[-1], 0) + 1

    def handle_endtag(self, tag):
        if tag == "table" and self._table:
            self._table.pop()
        elif tag == "tbody":
            self._in_body = False


def parse(html: str) -> ReportParser:
    p = ReportParser()
    p.feed(html)
    return p


def assert_png_data_uris(images: list[dict]) -> None:
    for im in images:
        src = im["src"]
        assert src.startswith("data:image/png;base64,"), src[:60]
        png = base64.b64decode(src.split(",", 1)[1], validate=True)
        assert png[:8] == b"\x89PNG\r\n\x1a\n"
        w, h = Image.open(io.BytesIO(png)).size
        assert w > 0 and h > 0


def assert_self_contained(html: str) -> None:
    assert not re.search(r"""(?:src|href|action)\s*=\s*["']?\s*(?:https?:)?//""", html, re.I)
    assert not re.search(r"url\(\s*['\"]?\s*(?:https?:)?//", html, re.I)
    assert "<link" not in html.lower()


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Path]:
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        root = tmp_path_factory.mktemp("report")
        yield {"2d": build_run_2d(root), "3d": build_run_3d(root)}
    finally:
        torch.set_num_threads(before)


def copy_evaluation(run: Path, dst: Path, columns: tuple[str, ...] = ("case", "mean_dice", "dice_foreground"),
                    cases_json: bool = False) -> Path:
    """The run's evaluation folder with a per-image CSV cut down to ``columns`` (fewer box plots: a faster report)."""
    dst.mkdir(parents=True)
    for name in ("summary.json", "cases.json") if cases_json else ("summary.json",):
        shutil.copy(run / "evaluation" / name, dst)
    with (run / "evaluation" / "per_image.csv").open(newline="") as f:
        rows = [{k: r[k] for k in columns} for r in csv.DictReader(f)]
    with (dst / "per_image.csv").open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=columns)
        w.writeheader()
        w.writerows(rows)
    return dst


def test_2d_report_has_every_section_embedded_pngs_and_one_row_per_case(runs):
    run = runs["2d"]
    path = write_report(run)
    assert path == run / "report.html"
    html = path.read_text(encoding="utf-8")
    p = parse(html)
    assert EVALUATED_SECTIONS <= set(p.sections)
    with (run / "evaluation" / "per_image.csv").open() as f:
        cases = [r["case"] for r in csv.DictReader(f)]
    assert len(cases) == len(json.loads((run / "split.json").read_text())["test"]) >= 2
    assert p.rows[PER_CASE_TABLE_ID] == len(cases)
    assert p.rows["metrics-table"] >= 2
    assert_png_data_uris(p.images)
    overlays = [im for im in p.images if im.get("class") == "overlay" and "wrong pixels" in im["alt"]]
    assert len(overlays) == min(len(cases), 6)  # 2D: one picture (the whole image) per worst/best case
    assert all(any(c in im["alt"] for c in ("whole image",)) for im in overlays)
    gallery = [im["alt"] for im in p.images if im.get("class") == "overlay" and im["alt"].endswith(": whole image")]
    assert sorted(a.split(":")[0] for a in gallery) == sorted(cases)  # the gallery: every case once
    assert len(p.images) >= 1 + 2 + len(overlays) + len(gallery) + 1  # curves, box plots, overlays, gallery, Bland-Altman
    assert_self_contained(html)
    assert [s for s in p.scripts if s.get("src")] == [] and len(p.scripts) == 1


def test_3d_report_draws_three_planes_through_the_largest_error(runs):
    run = runs["3d"]
    html = write_report(run, run / "out" / "r.html").read_text(encoding="utf-8")
    p = parse(html)
    assert EVALUATED_SECTIONS <= set(p.sections)
    assert p.rows[PER_CASE_TABLE_ID] == 1  # one test case
    assert_png_data_uris(p.images)
    alts = [im["alt"] for im in p.images if im.get("class") == "overlay" and "wrong voxels" in im["alt"]]
    assert len(alts) == 3 and alts[0].startswith("z = ")  # z: the coarsest axis (2.5 mm), first
    assert sorted(a[0] for a in alts) == ["x", "y", "z"]
    gallery = [im["alt"] for im in p.images if im.get("class") == "overlay" and "wrong voxels" not in im["alt"]]
    assert len(gallery) == 1 and ": z = " in gallery[0]  # the one test case, across the slice axis
    assert "hd95 (mm)" in html and "3D volumes" in html
    assert_self_contained(html)


def test_text_from_the_run_is_escaped(runs, tmp_path):
    evaluation = copy_evaluation(runs["2d"], tmp_path / "evaluation", cases_json=True)
    csv_path = evaluation / "per_image.csv"
    rows = list(csv.reader(csv_path.open()))
    evil = '<script>alert("x")</script>&'
    rows[1][0] = evil
    with csv_path.open("w", newline="") as f:
        csv.writer(f).writerows(rows)
    html = write_report(runs["2d"], tmp_path / "r.html", evaluation=evaluation).read_text(encoding="utf-8")
    assert evil not in html and '<script>alert' not in html
    assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;&amp;" in html
    assert len(parse(html).scripts) == 1


def fresh_run(runs, root: Path) -> Path:
    """A run folder holding only ``medseg_run.json``: just started, no history, no evaluation."""
    run = root / "fresh"
    run.mkdir()
    shutil.copy(runs["2d"] / "medseg_run.json", run)
    return run


def test_an_unevaluated_run_shows_dataset_plan_and_a_note(runs, tmp_path):
    run = fresh_run(runs, tmp_path)
    (run / "plan.json").write_text(json.dumps({"decisions": [{"name": "patch_size", "value": [32, 32], "reason": "median <size>"}]}))
    (run / "fingerprint.json").write_text(json.dumps({"cases": 8, "spacing": {"median": [1.0, 1.0]}}))
    html = write_report(run).read_text(encoding="utf-8")
    p = parse(html)
    assert {"dataset", "plan", "training", "curves", "evaluation"} <= set(p.sections)
    assert not {"metrics", "per-case", "cases"} & set(p.sections)
    assert "not been evaluated yet" in html and "No training history" in html
    assert "median &lt;size&gt;" in html and "32 × 32" in html and "spacing.median" in html
    assert p.images == []


def test_old_summary_and_no_cases_json_degrade_to_notes(runs, tmp_path):
    evaluation = copy_evaluation(runs["2d"], tmp_path / "evaluation")
    stats = {"mean": 0.5, "std": 0.1, "n": 2}
    (evaluation / "summary.json").write_text(json.dumps(
        {"source": "test split", "images": 2, "mean_dice": stats,
         "classes": {"foreground": {"dice": stats, "iou": {"mean": None, "std": None, "n": 0}, "dice_pooled": 0.6}}}))
    html = write_report(runs["2d"], tmp_path / "r.html", evaluation=evaluation).read_text(encoding="utf-8")
    p = parse(html)
    assert p.rows["metrics-table"] == 3
    assert "0.5 ± 0.1" in html and "No evaluation/cases.json" in html
    assert not [im for im in p.images if im.get("class") == "overlay"]


def test_report_command_prints_the_path(runs, tmp_path, capsys):
    out = tmp_path / "sub" / "report.html"
    _run_cli("report", fresh_run(runs, tmp_path), "--out", out)
    assert capsys.readouterr().out.strip() == str(out)
    assert out.read_text(encoding="utf-8").startswith("<!DOCTYPE html>")


# --------------------------------------------------------------------------- units


def test_planes_go_through_the_largest_error():
    truth = np.zeros((6, 5, 12), np.uint8)
    truth[1:4, 1:4, 4:9] = 1  # foreground on slices 4..8 along z: middle (2, 2, 6)
    pred = truth.copy()
    pred[:, :, 1] = 2  # 30 wrong voxels on slice 1: the densest error
    pred[2, 2, 6] = 0  # 1 wrong voxel elsewhere
    center = error_center(truth, pred)
    assert center[2] == 1 and pred[center] != truth[center]
    assert error_center(truth, truth) == (2, 2, 6)
    empty = np.zeros_like(truth)
    assert error_center(empty, empty) == (3, 2, 6)


def test_worst_and_best_cases_are_each_shown_once():
    names, scores = ["a", "b", "c", "d", "e"], [0.5, math.nan, 0.9, 0.1, 0.7]
    assert worst_and_best(names, scores, 1) == [("worst", "d", 0.1), ("best", "c", 0.9)]
    assert [(t, n) for t, n, _ in worst_and_best(names, scores, 3)] == [("worst", "d"), ("worst", "a"), ("best", "c"), ("best", "e")]


def test_plan_rows_read_each_plan_shape():
    expected = [("patch_size", [64, 64], "median image size")]
    assert plan_rows({"decisions": [{"name": "patch_size", "value": [64, 64], "reason": "median image size"}]}) == expected
    assert plan_rows({"decisions": {"patch_size": {"value": [64, 64], "reason": "median image size"}}}) == expected
    assert plan_rows({"patch_size": [64, 64], "reasons": {"patch_size": "median image size"}}) == expected
    medseg_plan = {"plan_version": 1, "patch_size": {"size": [64, 64], "reason": "median image size"},
                   "batch": {"size": 2, "estimated_memory": "87 MiB", "reason": "fits"}}
    assert plan_rows(medseg_plan) == expected + [("batch", {"size": 2, "estimated_memory": "87 MiB"}, "fits")]


def test_per_case_csv_keeps_numeric_case_names_as_text_and_reads_nan_and_inf(tmp_path):
    from medseg.evaluation.report.contents import read_per_case_csv

    path = tmp_path / "per_case.csv"
    path.write_text("case,image,dice_a,hd95_a\n01,01.tif,0.5,inf\n02,02.tif,,nan\n")
    t = read_per_case_csv(path)
    assert t.numeric == [False, False, True, True] and t.case_names() == ["01", "02"]
    assert t.rows[0][3] == math.inf and math.isnan(t.rows[1][2]) and math.isnan(t.rows[1][3])


def test_a_failing_section_becomes_a_note_and_the_rest_is_written(runs, tmp_path, monkeypatch):
    from medseg.evaluation.report import sections

    def boom(c):
        raise RuntimeError("boom <b>")

    monkeypatch.setattr(sections, "dataset_section", boom)
    html = write_report(fresh_run(runs, tmp_path)).read_text(encoding="utf-8")
    assert "could not be built: RuntimeError: boom &lt;b&gt;" in html
    assert {"dataset", "plan", "training"} <= set(parse(html).sections)


def test_nested_values_read_as_rounded_text_not_json():
    from medseg.evaluation.report.html import fmt

    text = fmt([{"mean": 99.26738180373461, "p995": 183.83500000000004, "classes": {"body": 0.08647163910387058}}])
    assert text == "(mean 99.27, p995 183.8, classes body 0.08647)"
    assert not set('{}"') & set(fmt({"a": {"b": [1.23456789, 2]}, "c": "x"}))
