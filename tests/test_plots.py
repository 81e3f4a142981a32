"""Overlays, image/label grids and training-history figures."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from medseg.evaluation.plots import image_label_grid, plot_history
from medseg.inference.overlays import overlay, save_overlay

COLORS = ((0, 0, 0), (255, 0, 0), (0, 255, 0))


def _image_and_labels():
    image = np.tile(np.linspace(0, 255, 40, dtype=np.float64), (30, 1)).astype(np.uint8)  # spans 0..255
    labels = np.zeros((30, 40), dtype=np.int64)
    labels[5:15, 5:20] = 1
    labels[18:28, 22:38] = 2
    return image, labels


def test_overlay_shape_dtype_and_background():
    image, labels = _image_and_labels()
    out = overlay(image, labels, COLORS)
    assert out.shape == (30, 40, 3) and out.dtype == np.uint8
    bg = labels == 0
    for ch in range(3):
        assert np.array_equal(out[..., ch][bg], image[bg])


def test_overlay_contours_and_blend():
    image, labels = _image_and_labels()
    out = overlay(image, labels, COLORS, alpha=0.5)
    # boundary pixels (corners and edges of the rectangles) carry the full class colour
    for y, x in [(5, 5), (5, 12), (14, 19), (10, 5)]:
        assert tuple(out[y, x]) == COLORS[1]
    for y, x in [(18, 22), (27, 37), (22, 37)]:
        assert tuple(out[y, x]) == COLORS[2]
    # interior pixels are a blend
    y, x = 10, 12
    g = int(image[y, x])
    assert tuple(out[y, x]) == tuple(int(round(v)) for v in (0.5 * g + 127.5, 0.5 * g, 0.5 * g))


def test_overlay_channel_layouts_and_rescale():
    image, labels = _image_and_labels()
    gray = overlay(image, labels, COLORS)
    first = overlay(np.stack([image] * 3).astype(np.float32) / 255.0, labels, COLORS)  # (3, H, W), 0..1
    last = overlay(np.stack([image] * 3, axis=-1).astype(np.int32) * 4 - 100, labels, COLORS)  # (H, W, 3)
    assert np.array_equal(gray, first)
    assert np.array_equal(gray, last)
    with pytest.raises(ValueError):
        overlay(np.zeros((5, 30, 40)), labels, COLORS)
    with pytest.raises(ValueError):
        overlay(np.zeros((31, 40)), labels, COLORS)


def test_save_overlay(tmp_path):
    image, labels = _image_and_labels()
    path = tmp_path / "sub" / "o.png"
    save_overlay(path, image, labels, COLORS)
    with Image.open(path) as img:
        assert img.mode == "RGB" and img.size == (40, 30)
        assert np.array_equal(np.asarray(img), overlay(image, labels, COLORS))
    assert [p.name for p in path.parent.iterdir()] == ["o.png"]


def test_image_label_grid(tmp_path):
    image, labels = _image_and_labels()
    items = [(f"case {i}", image, labels) for i in range(5)]
    path = tmp_path / "grid.png"
    image_label_grid(items, COLORS, path, max_items=3, names=("bg", "a", "b"))
    with Image.open(path) as img:
        w, h = img.size
    assert 600 <= w <= 1200 and 700 <= h <= 1300  # 3 columns x 3 rows of ~300 px panels (+legend)
    with pytest.raises(ValueError):
        image_label_grid([], COLORS, tmp_path / "empty.png")


HISTORY = [
    {"epoch": 1, "train_loss": 1.0, "val_loss": 1.2, "train_dice": 0.3, "val_dice": None, "train_accuracy": None},
    {"epoch": 2, "train_loss": 0.7, "val_loss": 0.9, "train_dice": 0.5, "val_dice": 0.4, "train_accuracy": None},
    {"epoch": 3, "train_loss": 0.5, "val_loss": None, "train_dice": 0.6, "val_dice": 0.55},
]


def test_plot_history_skips_absent_metrics(tmp_path):
    paths = plot_history(HISTORY, tmp_path / "plots")
    assert [p.name for p in paths] == ["loss.png", "dice.png"]
    assert not (tmp_path / "plots" / "accuracy.png").exists()
    for p in paths:
        with Image.open(p) as img:
            assert 400 <= img.size[0] <= 800 and 250 <= img.size[1] <= 600
    assert plot_history([{"epoch": 1}], tmp_path / "none") == []


def test_plot_history_train_only(tmp_path):
    rows = [{"epoch": e, "train_loss": 1.0 / e} for e in range(1, 4)]
    assert [p.name for p in plot_history(rows, tmp_path)] == ["loss.png"]


def test_plot_history_from_csv(tmp_path):
    from medseg.runfolder.history import read_history

    path = tmp_path / "history.csv"
    path.write_text("epoch,train_loss,val_loss,val_dice\n1,0.9,,0.5\n2,0.5,0.6,\n")
    rows = read_history(path)
    assert rows == [
        {"epoch": 1, "train_loss": 0.9, "val_loss": None, "val_dice": 0.5},
        {"epoch": 2, "train_loss": 0.5, "val_loss": 0.6, "val_dice": None},
    ]
    assert [p.name for p in plot_history(rows, tmp_path / "p")] == ["loss.png", "dice.png"]
    assert read_history(tmp_path / "missing.csv") == []
