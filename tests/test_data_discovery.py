"""Finding 2D cases: layouts, pairing by name, groups and the errors users see."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.conftest import shared_path
from medseg.data.discovery import Case2D, discover_cases, find_layout
from medseg.data.files import list_image_files
from medseg.data.naming import pairing_key
from medseg.errors import ConfigError, DataError


def _img(path: Path, size=(8, 6), value=128, mode="L") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    arr = np.full((size[1], size[0]), value, np.uint8)
    im = Image.fromarray(arr)
    if mode != "L":
        im = im.convert(mode)
    im.save(path)
    return path


# --------------------------------------------------------------------------- pairing keys


@pytest.mark.parametrize(
    "stem,is_mask,key",
    [
        ("21_training", False, "21"),
        ("21_manual1", True, "21"),
        ("21_training_mask", True, "21"),
        ("01_test", False, "01"),
        ("01_test_mask", True, "01"),
        ("case7_mask_1", True, "case7"),
        ("case7_mask_2", True, "case7"),
        ("case7", False, "case7"),
        ("Case7-Label", True, "case7"),
        ("patient003_slice012", False, "patient003_slice012"),
        ("patient003_slice012_seg", True, "patient003_slice012"),
        ("img_1", False, "1"),
        ("mask_1", True, "1"),  # index kept when nothing else is left
        ("scan 5.gt", True, "scan_5"),
    ],
)
def test_pairing_key(stem, is_mask, key):
    assert pairing_key(stem, is_mask) == key


def test_numeric_token_after_role_kept_in_image_names():
    # in an image name a number after a role word is part of the key, not an instance index
    assert pairing_key("img_1_a", False) == "1_a"
    assert pairing_key("a_mask_1", False) == "a_1"


# --------------------------------------------------------------------------- DRIVE (shared data)


@pytest.mark.shared
@pytest.mark.parametrize("part,first,n", [("training", 21, 20), ("testing", 1, 20)])
def test_drive_layout_autodetected(part, first, n):
    root = shared_path("datasets", "drive", part)
    layout = find_layout(root)
    assert layout.images == root / "images"
    assert layout.masks == root / "1st_manual"
    assert layout.fov == root / "mask"

    cases = discover_cases(root)
    assert len(cases) == n
    width = 2
    assert [c.key for c in cases] == [f"{i:0{width}d}" for i in range(first, first + n)]
    for c in cases:
        assert c.image.parent.name == "images"
        assert len(c.masks) == 1 and c.masks[0].parent.name == "1st_manual"
        assert c.masks[0].name.startswith(c.key + "_manual1")
        assert c.fov is not None and c.fov.parent.name == "mask" and c.fov.name.startswith(c.key + "_")
        assert c.group == c.key  # no patient id in DRIVE names: each image is its own group


@pytest.mark.shared
def test_drive_training_keys_and_files():
    root = shared_path("datasets", "drive", "training")
    cases = discover_cases(root)
    assert [c.key for c in cases] == [str(i) for i in range(21, 41)]
    c21 = cases[0]
    assert c21.image.name == "21_training.tif"
    assert c21.masks == (root / "1st_manual" / "21_manual1.gif",)
    assert c21.fov == root / "mask" / "21_training_mask.gif"


# --------------------------------------------------------------------------- layouts


def test_drive_like_layout_in_tmp(tmp_path):
    for i in (21, 22, 23):
        _img(tmp_path / "images" / f"{i}_training.tif")
        _img(tmp_path / "1st_manual" / f"{i}_manual1.gif", value=255)
        _img(tmp_path / "mask" / f"{i}_training_mask.gif", value=255)
    _img(tmp_path / "2nd_manual" / "21_manual2.gif")  # ignored
    cases = discover_cases(tmp_path)
    assert [c.key for c in cases] == ["21", "22", "23"]
    assert all(c.fov is not None and c.fov.parent.name == "mask" for c in cases)
    assert all(len(c.masks) == 1 and c.masks[0].parent.name == "1st_manual" for c in cases)


def test_case_insensitive_folder_names_and_label_priority(tmp_path):
    _img(tmp_path / "Images" / "a.png")
    _img(tmp_path / "Labels" / "a.png")
    _img(tmp_path / "Masks" / "a.png")  # lower priority than labels -> FOV
    _img(tmp_path / "notes" / "x.png")
    layout = find_layout(tmp_path)
    assert layout.images.name == "Images"
    assert layout.masks.name == "Labels"
    assert layout.fov.name == "Masks"


def test_mask_folder_alone_is_labels_not_fov(tmp_path):
    _img(tmp_path / "img" / "a.png")
    _img(tmp_path / "mask" / "a_mask.png")
    layout = find_layout(tmp_path)
    assert layout.masks.name == "mask" and layout.fov is None
    [case] = discover_cases(tmp_path)
    assert case.masks == (tmp_path / "mask" / "a_mask.png",)
    assert case.fov is None


def test_fov_folder(tmp_path):
    for k in ("a", "b"):
        _img(tmp_path / "images" / f"{k}.png")
        _img(tmp_path / "gt" / f"{k}.png")
    _img(tmp_path / "fov" / "a_fov.png")
    cases = discover_cases(tmp_path)
    assert cases[0].fov == tmp_path / "fov" / "a_fov.png"
    assert cases[1].fov is None  # missing FOV -> None


def test_messy_flat_folder(tmp_path, caplog):
    """Mixed sizes and modes, several masks per image, empty masks, clutter."""
    _img(tmp_path / "case1.png", size=(10, 8))
    _img(tmp_path / "case1_mask.png", size=(10, 8), value=255)
    _img(tmp_path / "case1_mask_1.png", size=(10, 8), value=0)  # empty mask: allowed
    _img(tmp_path / "case2.jpg", size=(20, 16), mode="RGB")
    _img(tmp_path / "case2_seg.png", size=(20, 16), value=0)
    _img(tmp_path / "Case3.TIF", size=(5, 5))
    _img(tmp_path / "case3-label-1.png", size=(5, 5), value=255)
    _img(tmp_path / "case3-label-2.png", size=(5, 5), value=255)
    _img(tmp_path / "case3-label-3.png", size=(5, 5), value=0)
    (tmp_path / "README.txt").write_text("notes")
    (tmp_path / ".DS_Store").write_bytes(b"\0")
    (tmp_path / "Thumbs.db").write_bytes(b"\0")
    (tmp_path / "sub").mkdir()

    layout = find_layout(tmp_path)
    assert layout.flat and layout.images == tmp_path
    with caplog.at_level(logging.WARNING, logger="medseg.data"):
        cases = discover_cases(tmp_path)
    assert [c.key for c in cases] == ["case3", "case1", "case2"]  # file name order: 'C' < 'c'
    by = {c.key: c for c in cases}
    assert [m.name for m in by["case1"].masks] == ["case1_mask.png", "case1_mask_1.png"]
    assert [m.name for m in by["case2"].masks] == ["case2_seg.png"]
    assert [m.name for m in by["case3"].masks] == ["case3-label-1.png", "case3-label-2.png", "case3-label-3.png"]
    assert by["case2"].image.name == "case2.jpg"
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "README.txt" in warnings[0]
    assert ".DS_Store" not in warnings[0] and "Thumbs.db" not in warnings[0]
    assert all(isinstance(c, Case2D) for c in cases)


def test_list_image_files(tmp_path, caplog):
    _img(tmp_path / "b.png")
    _img(tmp_path / "a.PNG")
    (tmp_path / "c.nii.gz").write_bytes(b"x")
    (tmp_path / "._a.png").write_bytes(b"x")
    with caplog.at_level(logging.WARNING):
        files = list_image_files(tmp_path)
    assert [f.name for f in files] == ["a.PNG", "b.png"]
    assert "c.nii.gz" in caplog.text and "._a.png" not in caplog.text


def test_unlabelled_images_for_prediction(tmp_path):
    _img(tmp_path / "x1.png")
    _img(tmp_path / "x2.png")
    layout = find_layout(tmp_path)
    assert layout.masks is None
    cases = discover_cases(tmp_path, require_masks=False)
    assert [(c.key, c.masks) for c in cases] == [("x1", ()), ("x2", ())]
    with pytest.raises(DataError) as e:
        discover_cases(tmp_path)
    assert "no mask" in str(e.value) and "--masks" in str(e.value)


def test_explicit_folders_override_detection(tmp_path):
    _img(tmp_path / "images" / "decoy.png")
    _img(tmp_path / "raw" / "p1.png")
    _img(tmp_path / "lab" / "p1.png", value=1)
    _img(tmp_path / "labels" / "decoy.png")
    other = tmp_path.parent / (tmp_path.name + "_abs_fov")
    _img(other / "p1.png")
    cases = discover_cases(tmp_path, images="raw", masks=tmp_path / "lab", fov=other)
    assert [(c.key, c.image.parent.name, c.masks[0].parent.name, c.fov) for c in cases] == [
        ("p1", "raw", "lab", other / "p1.png")
    ]
    with pytest.raises(DataError, match="nope"):
        find_layout(tmp_path, images="nope")


def test_pair_pattern(tmp_path):
    _img(tmp_path / "images" / "scanA_001.png")
    _img(tmp_path / "images" / "scanB_002.png")
    _img(tmp_path / "labels" / "ref-001.png")
    _img(tmp_path / "labels" / "ref-002.png")
    cases = discover_cases(tmp_path, pair_pattern=r"(?P<key>\d{3})$")
    assert [(c.key, c.image.name, c.masks[0].name) for c in cases] == [
        ("001", "scanA_001.png", "ref-001.png"),
        ("002", "scanB_002.png", "ref-002.png"),
    ]
    # unnamed group 1, and whole match
    assert [c.key for c in discover_cases(tmp_path, pair_pattern=r"(\d+)")] == ["001", "002"]
    assert [c.key for c in discover_cases(tmp_path, pair_pattern=r"\d+")] == ["001", "002"]


def test_pair_pattern_non_matching_name(tmp_path):
    _img(tmp_path / "images" / "scan_001.png")
    _img(tmp_path / "images" / "oddname.png")
    _img(tmp_path / "labels" / "001.png")
    with pytest.raises(DataError) as e:
        discover_cases(tmp_path, pair_pattern=r"(?P<key>\d{3})")
    assert "oddname" in str(e.value)


def test_bad_pair_pattern_regex(tmp_path):
    _img(tmp_path / "images" / "a.png")
    _img(tmp_path / "labels" / "a.png")
    with pytest.raises(ConfigError):
        discover_cases(tmp_path, pair_pattern="(unclosed")


# --------------------------------------------------------------------------- errors


def test_empty_folder(tmp_path):
    with pytest.raises(DataError) as e:
        discover_cases(tmp_path)
    assert str(tmp_path) in str(e.value) and "no images" in str(e.value)
    assert e.value.hint


def test_folder_of_subfolders_lists_contents(tmp_path):
    _img(tmp_path / "training" / "images" / "a.png")
    _img(tmp_path / "testing" / "images" / "b.png")
    with pytest.raises(DataError) as e:
        discover_cases(tmp_path)
    msg = str(e.value)  # both subfolders are searched; neither has masks
    assert "no mask files" in msg and "training/" in msg and "testing/" in msg and "--masks" in msg


def test_only_non_images(tmp_path):
    (tmp_path / "images").mkdir()
    (tmp_path / "images" / "data.csv").write_text("x")
    with pytest.raises(DataError) as e:
        discover_cases(tmp_path)
    assert "data.csv" in str(e.value)


def test_missing_root():
    with pytest.raises(DataError, match="not found"):
        discover_cases("/nonexistent/medseg-test-folder")


def test_image_without_mask(tmp_path):
    for k in ("a", "b", "c"):
        _img(tmp_path / "images" / f"{k}.png")
    _img(tmp_path / "labels" / "a_mask.png")
    _img(tmp_path / "labels" / "c_mask.png")
    with pytest.raises(DataError) as e:
        discover_cases(tmp_path)
    msg = str(e.value)
    assert "b.png" in msg and "--pair-pattern" in msg
    assert "a.png" not in msg.split("\n")[0].split(":", 1)[1]  # only the unmatched image is named
    # without require_masks the unlabelled image is kept with no masks
    cases = discover_cases(tmp_path, require_masks=False)
    assert {c.key: len(c.masks) for c in cases} == {"a": 1, "b": 0, "c": 1}


def test_mask_without_image(tmp_path):
    _img(tmp_path / "images" / "a.png")
    _img(tmp_path / "labels" / "a.png")
    _img(tmp_path / "labels" / "zzz_mask.png")
    with pytest.raises(DataError) as e:
        discover_cases(tmp_path)
    assert "zzz_mask.png" in str(e.value)
    with pytest.raises(DataError, match="zzz_mask.png"):
        discover_cases(tmp_path, require_masks=False)


def test_shifted_names_are_not_paired_by_position(tmp_path):
    """Sorted-position pairing would silently pair 1<->2; pairing by name reports it."""
    _img(tmp_path / "images" / "1.png")
    _img(tmp_path / "images" / "3.png")
    _img(tmp_path / "labels" / "1.png")
    _img(tmp_path / "labels" / "2.png")
    with pytest.raises(DataError) as e:
        discover_cases(tmp_path)
    assert "3.png" in str(e.value) and "2.png" in str(e.value)


def test_duplicate_image_keys(tmp_path):
    _img(tmp_path / "images" / "21_training.png")
    _img(tmp_path / "images" / "21_test.png")
    _img(tmp_path / "labels" / "21.png")
    with pytest.raises(DataError) as e:
        discover_cases(tmp_path)
    msg = str(e.value)
    assert "21_training.png" in msg and "21_test.png" in msg and "--pair-pattern" in msg


def test_stray_fov_only_warns(tmp_path, caplog):
    _img(tmp_path / "images" / "a.png")
    _img(tmp_path / "labels" / "a.png")
    _img(tmp_path / "roi" / "a_roi.png")
    _img(tmp_path / "roi" / "q_roi.png")
    with caplog.at_level(logging.WARNING, logger="medseg.data"):
        [case] = discover_cases(tmp_path)
    assert case.fov.name == "a_roi.png"
    assert "q_roi.png" in caplog.text


def test_unreadable_files_are_not_opened_during_discovery(tmp_path):
    # discovery works on names only; a corrupt file is reported when it is read
    (tmp_path / "images").mkdir()
    (tmp_path / "images" / "a.png").write_bytes(b"not a png")
    _img(tmp_path / "labels" / "a.png")
    assert [c.key for c in discover_cases(tmp_path)] == ["a"]


# --------------------------------------------------------------------------- groups


def _slices(tmp_path: Path, stems):
    for s in stems:
        _img(tmp_path / "images" / f"{s}.png")
        _img(tmp_path / "labels" / f"{s}.png")


def test_auto_groups_by_patient_id(tmp_path, caplog):
    _slices(tmp_path, ["patient001_slice01", "patient001_slice02", "Patient002_slice01", "patient_003_s1"])
    with caplog.at_level(logging.INFO, logger="medseg.data"):
        cases = discover_cases(tmp_path)
    assert {c.key: c.group for c in cases} == {
        "patient002_slice01": "patient002",
        "patient001_slice01": "patient001",
        "patient001_slice02": "patient001",
        "patient_003_s1": "patient_003",
    }
    assert "grouping slices by patient id" in caplog.text


def test_no_auto_groups_when_not_every_name_has_an_id(tmp_path):
    _slices(tmp_path, ["case1_a", "case1_b", "other"])
    cases = discover_cases(tmp_path)
    assert all(c.group == c.key for c in cases)


def test_auto_group_needs_word_start(tmp_path):
    # "exp_1" does not carry a patient id even though it contains "p_1"
    _slices(tmp_path, ["exp_1_a", "exp_1_b"])
    assert {c.group for c in discover_cases(tmp_path)} == {"exp_1_a", "exp_1_b"}


def test_group_pattern(tmp_path):
    _slices(tmp_path, ["A12-s1", "A12-s2", "B07-s1"])
    cases = discover_cases(tmp_path, group_pattern=r"^(?P<group>[A-Z]\d+)")
    assert {c.key: c.group for c in cases} == {"a12_s1": "A12", "a12_s2": "A12", "b07_s1": "B07"}
    with pytest.raises(DataError) as e:
        discover_cases(tmp_path, group_pattern=r"^X(\d+)")
    assert "A12-s1" in str(e.value)


def test_groups_csv(tmp_path):
    _slices(tmp_path, ["s1", "s2", "s3"])
    csv = tmp_path / "groups.csv"
    csv.write_text("file,group\ns1.png,P1\ns2,P1\ns3.png,P2\n")
    cases = discover_cases(tmp_path, groups_csv=csv)
    assert {c.key: c.group for c in cases} == {"s1": "P1", "s2": "P1", "s3": "P2"}
    # relative to the dataset root
    assert {c.group for c in discover_cases(tmp_path, groups_csv="groups.csv")} == {"P1", "P2"}


def test_groups_csv_missing_image(tmp_path):
    _slices(tmp_path, ["s1", "s2"])
    csv = tmp_path / "groups.csv"
    csv.write_text("file,group\ns1.png,P1\n")
    with pytest.raises(DataError) as e:
        discover_cases(tmp_path, groups_csv=csv)
    assert "s2.png" in str(e.value)
    csv.write_text("name,patient\ns1.png,P1\n")
    with pytest.raises(DataError, match="file"):
        discover_cases(tmp_path, groups_csv=csv)


def test_a_colour_copy_of_the_masks_is_not_a_field_of_view(tmp_path):
    """masks_color/ beside masks/ (the phantom's layout) was taken for the FOV folder, so evaluation and training
    were restricted to the coloured region; only a folder named exactly mask(s) is a FOV beside other labels."""
    from medseg.data.discovery import find_layout
    from medseg.data.phantom import make_phantom_dataset

    data = make_phantom_dataset(tmp_path / "d", n_patients=1, slices_per_patient=1, size=32)
    layout = find_layout(data)
    assert layout.masks == data / "masks" and layout.fov is None
