"""Mask decoding by meaning: file modes, scheme detection, declared colours, errors."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.conftest import shared_path
from medseg.data.labels import LabelScheme
from medseg.data.label_files import load_labels_json, parse_label_colors
from medseg.data.mask_reading import detect_scheme, read_mask
from medseg.errors import ConfigError, DataError
from medseg.io import read_image

# a 3-class reference label map used throughout
LAB = np.zeros((6, 8), np.uint8)
LAB[1:3, 1:4] = 1
LAB[3:5, 4:7] = 2

RED, GREEN = (255, 0, 0), (0, 255, 0)


def _rgb(lab: np.ndarray, colors) -> np.ndarray:
    return np.array(colors, np.uint8)[lab]  # (H, W, 3)


def _save(path: Path, arr: np.ndarray, mode: str | None = None) -> Path:
    im = Image.fromarray(arr)
    if mode is not None:
        im = im.convert(mode)
    im.save(path)
    return path


# --------------------------------------------------------------------------- file modes


def test_mode_1_bilevel(tmp_path):
    binary = (LAB > 0)
    p = tmp_path / "m.png"
    Image.fromarray(binary).convert("1").save(p)
    assert Image.open(p).mode == "1"
    scheme = detect_scheme([p])
    assert scheme.kind == "binary" and scheme.codes == [0, 255]
    assert scheme.names == ["background", "foreground"]
    np.testing.assert_array_equal(read_mask([p], scheme), binary.astype(np.uint8))


def test_mode_L_binary_and_index(tmp_path):
    p = _save(tmp_path / "bin.png", (LAB > 0).astype(np.uint8) * 255)
    s = detect_scheme([p])
    assert s.kind == "binary"
    np.testing.assert_array_equal(read_mask([p], s), (LAB > 0).astype(np.uint8))

    q = _save(tmp_path / "idx.png", LAB)
    s = detect_scheme([q])
    assert s.kind == "index" and s.codes == [0, 1, 2] and s.num_classes == 3
    np.testing.assert_array_equal(read_mask([q], s), LAB)
    assert detect_scheme([q], num_classes=5).codes == [0, 1, 2, 3, 4]


def test_mode_L_gray_levels(tmp_path, caplog):
    p = _save(tmp_path / "g.png", np.array([0, 85, 170], np.uint8)[LAB])
    with caplog.at_level(logging.INFO, logger="medseg.data"):
        s = detect_scheme([p])
    assert s.kind == "gray" and s.codes == [0, 85, 170]
    assert "85" in caplog.text and "170" in caplog.text
    np.testing.assert_array_equal(read_mask([p], s), LAB)


def test_mode_P_palette(tmp_path):
    p = tmp_path / "pal.png"
    im = Image.fromarray(LAB, mode="L").convert("P")
    im.putpalette([0, 0, 0, *RED, *GREEN] + [0] * (253 * 3))
    im.save(p)
    assert Image.open(p).mode == "P"
    s = detect_scheme([p])
    assert s.kind == "color"
    assert s.codes == [[0, 0, 0], [0, 255, 0], [255, 0, 0]]  # ascending: green < red
    np.testing.assert_array_equal(read_mask([p], s), np.array([0, 2, 1], np.uint8)[LAB])


def test_mode_P_gray_palette_gif(tmp_path):
    # a GIF mask whose palette is gray is a gray mask, not a colour one
    p = tmp_path / "m.gif"
    Image.fromarray((LAB > 0).astype(np.uint8) * 255).save(p)
    assert Image.open(p).mode in ("P", "L")
    s = detect_scheme([p])
    assert s.kind == "binary"
    np.testing.assert_array_equal(read_mask([p], s), (LAB > 0).astype(np.uint8))


def test_mode_RGB_color_and_gray(tmp_path, caplog):
    p = _save(tmp_path / "c.png", _rgb(LAB, [(0, 0, 0), RED, GREEN]))
    with caplog.at_level(logging.INFO, logger="medseg.data"):
        s = detect_scheme([p])
    assert s.kind == "color" and s.codes == [[0, 0, 0], [0, 255, 0], [255, 0, 0]]
    assert "#ff0000 -> 2" in caplog.text and "#00ff00 -> 1" in caplog.text
    np.testing.assert_array_equal(read_mask([p], s), np.array([0, 2, 1], np.uint8)[LAB])

    # RGB with R == G == B everywhere is gray
    g = _save(tmp_path / "g.png", _rgb((LAB > 0).astype(int), [(0, 0, 0), (255, 255, 255)]))
    assert read_image(g).array.shape[0] == 3
    assert detect_scheme([g]).kind == "binary"


def test_mode_RGBA_transparent_is_background(tmp_path):
    rgba = np.zeros((6, 8, 4), np.uint8)
    rgba[..., :3] = _rgb(LAB, [(10, 20, 30), RED, GREEN])
    rgba[..., 3] = np.where(LAB > 0, 255, 0)  # background pixels transparent (with a junk colour)
    p = _save(tmp_path / "a.png", rgba)
    assert Image.open(p).mode == "RGBA"
    s = detect_scheme([p])
    # the junk colour under alpha 0 is not a class; transparent pixels are the (black) background
    assert s.kind == "color" and s.codes == [[0, 0, 0], [0, 255, 0], [255, 0, 0]]
    np.testing.assert_array_equal(read_mask([p], s), np.array([0, 2, 1], np.uint8)[LAB])


def test_mode_RGBA_with_black_background(tmp_path):
    rgba = np.zeros((6, 8, 4), np.uint8)
    rgba[..., :3] = _rgb(LAB, [(0, 0, 0), RED, GREEN])
    rgba[..., 3] = 255
    rgba[0, 0, 3] = 0
    rgba[0, 0, :3] = (1, 2, 3)  # a stray colour, but fully transparent
    p = _save(tmp_path / "a.png", rgba)
    s = detect_scheme([p])
    assert s.codes == [[0, 0, 0], [0, 255, 0], [255, 0, 0]]
    np.testing.assert_array_equal(read_mask([p], s), np.array([0, 2, 1], np.uint8)[LAB])


def test_mode_LA(tmp_path):
    la = np.stack([(LAB > 0).astype(np.uint8) * 255, np.full_like(LAB, 255)], -1)
    p = _save(tmp_path / "la.png", la)
    assert Image.open(p).mode == "LA"
    s = detect_scheme([p])
    assert s.kind == "binary"
    np.testing.assert_array_equal(read_mask([p], s), (LAB > 0).astype(np.uint8))


def test_color_without_black_uses_most_frequent_as_background(tmp_path):
    p = _save(tmp_path / "c.png", _rgb(LAB, [(0, 0, 255), RED, GREEN]))
    s = detect_scheme([p])
    assert s.codes[0] == [0, 0, 255]
    np.testing.assert_array_equal(read_mask([p], s), np.array([0, 2, 1], np.uint8)[LAB])


# --------------------------------------------------------------------------- several files


def test_scan_all_files_and_merge_several_masks(tmp_path):
    a = np.zeros((6, 8), np.uint8)
    a[0, :4] = 255
    b = np.zeros((6, 8), np.uint8)
    b[0, 2:6] = 255
    empty = np.zeros((6, 8), np.uint8)
    pa, pb, pe = _save(tmp_path / "a.png", a), _save(tmp_path / "b.png", b), _save(tmp_path / "e.png", empty)
    s = detect_scheme([pe, pa, pb])
    assert s.kind == "binary"
    merged = read_mask([pa, pb, pe], s)
    np.testing.assert_array_equal(merged, ((a > 0) | (b > 0)).astype(np.uint8))


def test_colour_classes_collected_across_files(tmp_path):
    p1 = _save(tmp_path / "1.png", _rgb((LAB == 1).astype(int), [(0, 0, 0), RED]))
    p2 = _save(tmp_path / "2.png", _rgb((LAB == 2).astype(int), [(0, 0, 0), GREEN]))
    s = detect_scheme([p1, p2])
    assert s.codes == [[0, 0, 0], [0, 255, 0], [255, 0, 0]]
    assert read_mask([p2], s).max() == 1 and read_mask([p1], s).max() == 2


def test_all_empty_masks_assume_binary(tmp_path, caplog):
    p = _save(tmp_path / "e.png", np.zeros((4, 4), np.uint8))
    with caplog.at_level(logging.WARNING):
        s = detect_scheme([p])
    assert s.kind == "binary" and "empty" in caplog.text


def test_size_mismatch_between_masks(tmp_path):
    p1 = _save(tmp_path / "one.png", np.zeros((6, 8), np.uint8))
    p2 = _save(tmp_path / "two.png", np.zeros((5, 8), np.uint8))
    s = LabelScheme("binary", [0, 255])
    with pytest.raises(DataError) as e:
        read_mask([p1, p2], s)
    assert "two.png" in str(e.value) and "one.png" in str(e.value)


# --------------------------------------------------------------------------- errors


def test_unknown_colour_error(tmp_path):
    s = LabelScheme("color", [[0, 0, 0], list(RED)], ["background", "lesion"])
    p = _save(tmp_path / "odd.png", _rgb(LAB, [(0, 0, 0), RED, (12, 34, 56)]))
    with pytest.raises(DataError) as e:
        read_mask([p], s)
    msg = str(e.value)
    assert "odd.png" in msg and "#0c2238" in msg and "#ff0000" in msg and "--label-colors" in msg


def test_unknown_gray_value_error(tmp_path):
    s = LabelScheme("binary", [0, 255])
    p = _save(tmp_path / "g.png", LAB * 100)
    with pytest.raises(DataError) as e:
        read_mask([p], s)
    msg = str(e.value)
    assert "g.png" in msg and "100" in msg and "200" in msg and "255" in msg


def test_too_many_colours_hints_jpeg(tmp_path):
    rng = np.random.default_rng(0)
    p = _save(tmp_path / "noisy.png", rng.integers(0, 256, (16, 16, 3), dtype=np.uint8))
    with pytest.raises(DataError) as e:
        detect_scheme([p])
    assert "noisy.png" in str(e.value) and "JPEG" in str(e.value)


def test_more_classes_than_requested(tmp_path):
    p = _save(tmp_path / "i.png", LAB)
    with pytest.raises(DataError) as e:
        detect_scheme([p], num_classes=2)
    assert "i.png" in str(e.value) and "3 classes" in str(e.value)


def test_unreadable_mask_names_file(tmp_path):
    p = tmp_path / "broken.png"
    p.write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    with pytest.raises(DataError, match="broken.png"):
        detect_scheme([p])


# --------------------------------------------------------------------------- declared colours


def test_parse_label_colors():
    d = parse_label_colors("background=0,0,0; lung=255,0,0;tumour=#00ff00;vessel=128")
    assert list(d) == ["background", "lung", "tumour", "vessel"]
    assert d == {"background": (0, 0, 0), "lung": (255, 0, 0), "tumour": (0, 255, 0), "vessel": (128, 128, 128)}
    for bad in ("", "lung", "a=1,2", "a=300,0,0", "a=0,0,0;a=1,1,1", "a=0,0,0;b=#000000", "a=#zzzzzz"):
        with pytest.raises(ConfigError):
            parse_label_colors(bad)


def test_detect_with_label_colors_keeps_given_order(tmp_path):
    p = _save(tmp_path / "c.png", _rgb(LAB, [(0, 0, 0), RED, GREEN]))
    s = detect_scheme([p], label_colors=parse_label_colors("bg=0,0,0;lung=255,0,0;tumour=0,255,0"))
    assert s.kind == "color" and s.names == ["bg", "lung", "tumour"]
    np.testing.assert_array_equal(read_mask([p], s), LAB)
    # a colour not declared -> error naming the file
    with pytest.raises(DataError, match="c.png"):
        detect_scheme([p], label_colors={"bg": (0, 0, 0), "lung": RED})


def test_label_colors_all_gray_gives_gray_scheme(tmp_path):
    p = _save(tmp_path / "g.png", (LAB > 0).astype(np.uint8) * 255)
    s = detect_scheme([p], label_colors={"background": (0, 0, 0), "vessel": (255, 255, 255)})
    assert s.kind == "gray" and s.codes == [0, 255] and s.names == ["background", "vessel"]
    np.testing.assert_array_equal(read_mask([p], s), (LAB > 0).astype(np.uint8))


def test_load_labels_json_both_forms(tmp_path):
    full = tmp_path / "labels.json"
    full.write_text(json.dumps({"labels": {"1": {"name": "lung", "color": "#ff0000"},
                                           "0": {"name": "background", "color": [0, 0, 0]}}}))
    assert load_labels_json(full) == {"background": (0, 0, 0), "lung": (255, 0, 0)}
    simple = tmp_path / "simple.json"
    simple.write_text(json.dumps({"background": [0, 0, 0], "lung": [255, 0, 0], "gray": 7}))
    d = load_labels_json(simple)
    assert list(d) == ["background", "lung", "gray"] and d["gray"] == (7, 7, 7)


@pytest.mark.parametrize(
    "content,needle",
    [
        ("{not json", "line 1"),
        ("[]", "object"),
        (json.dumps({"labels": {"0": {"name": "bg", "color": [0, 0, 0]}, "2": {"color": [1, 1, 1]}}}), "gaps"),
        (json.dumps({"labels": {"0": {"name": "bg"}}}), "color"),
        (json.dumps({"bg": [0, 0]}), "colour"),
        (json.dumps({"bg": [0, 0, 0], "x": [0, 0, 0]}), "same colour"),
    ],
)
def test_load_labels_json_errors(tmp_path, content, needle):
    p = tmp_path / "labels.json"
    p.write_text(content)
    with pytest.raises(ConfigError) as e:
        load_labels_json(p)
    assert "labels.json" in str(e.value) and needle in str(e.value)


# --------------------------------------------------------------------------- scheme object


def test_scheme_json_roundtrip_and_colours():
    for s in (
        LabelScheme("binary", [0, 255]),
        LabelScheme("index", [0, 1, 2, 3]),
        LabelScheme("gray", [0, 85, 170], ["bg", "a", "b"]),
        LabelScheme("color", [[0, 0, 0], [255, 0, 0]], ["bg", "lung"]),
    ):
        back = LabelScheme.from_json(json.loads(json.dumps(s.to_json())))
        assert back == s
        cols = s.colors()
        assert len(cols) == s.num_classes and len(set(cols)) == s.num_classes and cols[0] == (0, 0, 0)
    assert LabelScheme("color", [[0, 0, 0], [255, 0, 0]]).colors() == [(0, 0, 0), (255, 0, 0)]
    assert len(set(LabelScheme("index", list(range(40))).colors())) == 40


def test_encode_color_and_encode_roundtrip(tmp_path):
    s = LabelScheme("color", [[0, 0, 0], [0, 255, 0], [255, 0, 0]])
    pic = s.encode_color(LAB)
    assert pic.shape == (3, 6, 8) and pic.dtype == np.uint8
    np.testing.assert_array_equal(s.decode(pic, "x"), LAB)
    g = LabelScheme("gray", [0, 85, 170])
    enc = g.encode(LAB)
    assert enc.shape == (1, 6, 8) and set(np.unique(enc)) == {0, 85, 170}
    np.testing.assert_array_equal(g.decode(enc, "x"), LAB)
    assert g.encode_color(LAB).shape == (3, 6, 8)


def test_invalid_scheme():
    with pytest.raises(ConfigError):
        LabelScheme("rainbow", [0, 1])
    with pytest.raises(ConfigError):
        LabelScheme("index", [0, 0])
    with pytest.raises(ConfigError):
        LabelScheme("index", [0, 1], ["only_one"])


# --------------------------------------------------------------------------- DRIVE (shared data)


@pytest.mark.shared
def test_drive_masks_are_binary():
    root = shared_path("datasets", "drive", "training")
    masks = sorted((root / "1st_manual").glob("*.gif"))[:5]
    s = detect_scheme(masks)
    assert s.kind == "binary"
    lab = read_mask([masks[0]], s)
    assert lab.shape == (584, 565) and lab.dtype == np.uint8
    assert 0.02 < lab.mean() < 0.3  # vessels are a minority of the pixels


# --------------------------------------------------------------------------- stray values (issue 16)


def _binary_dataset(root: Path, n: int = 12) -> Path:
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    for i in range(n):
        _save(root / "images" / f"case{i:02d}.png", np.arange(48, dtype=np.uint8).reshape(6, 8) * 5)
        _save(root / "masks" / f"case{i:02d}.png", (LAB > 0).astype(np.uint8) * 255)
    return root


def test_stray_values_in_one_mask_are_refused_by_name(tmp_path, capsys):
    from conftest import run_cli

    data = _binary_dataset(tmp_path / "d")
    stray = (np.arange(48).reshape(6, 8) % 38).astype(np.uint8)  # 0..37, as an anti-aliased export might hold
    stray[LAB > 0] = 255
    _save(data / "masks" / "case05.png", stray)
    with pytest.raises(DataError, match="look like stray values") as e:
        detect_scheme(sorted((data / "masks").iterdir()))
    assert e.value.path.name == "case05.png"
    run_cli("inspect", data, "--out", tmp_path / "fp.json", code=2)
    err = capsys.readouterr().err
    assert "case05.png" in err and "--allow-new-labels" in err
    told = detect_scheme(sorted((data / "masks").iterdir()), allow_rare=True)  # told to: every value is a class
    assert told.num_classes == len(np.unique(stray)) > 2


def test_one_mask_with_foreground_among_empty_ones_is_not_stray(tmp_path):
    data = _binary_dataset(tmp_path / "d")
    for i in range(1, 12):
        _save(data / "masks" / f"case{i:02d}.png", np.zeros((6, 8), np.uint8))
    assert detect_scheme(sorted((data / "masks").iterdir())).kind == "binary"


def test_a_value_that_labels_json_does_not_declare_is_refused(tmp_path):
    from medseg.data.dataset2d import DataOptions2D, prepare_dataset

    data = _binary_dataset(tmp_path / "d")
    for i in range(12):  # index masks 0..3
        lab = LAB.copy()
        lab[0, :2] = 3
        _save(data / "masks" / f"case{i:02d}.png", lab)
    bad = LAB.copy()
    bad[0, 0] = 255
    _save(data / "masks" / "case07.png", bad)
    (data / "labels.json").write_text(json.dumps({"background": 0, "a": 1, "b": 2, "c": 3}))
    with pytest.raises(DataError, match="255 are not declared") as e:
        prepare_dataset(data, DataOptions2D())
    assert e.value.path.name == "case07.png"
    assert prepare_dataset(data, DataOptions2D(allow_new_labels=True)).scheme.num_classes == 5
