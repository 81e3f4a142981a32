"""Real 2D layouts found cold: patient folders to any depth, patients in flat names, masks named by prefix."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from medseg.data.discovery import discover
from medseg.data.grouping import name_stem, plausible
from medseg.data.split import split_cases
from medseg.errors import DataError


def _img(path: Path, value=128, mode="L", size=(8, 6)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((size[1], size[0]), value, np.uint8)).convert(mode).save(path)
    return path


def _patient_folders(root: Path, patients: int = 6, slices: int = 4) -> list[str]:
    """``DATA/<patient>/<patient>_<n>.tif`` beside ``<patient>_<n>_mask.tif`` (3-channel TIF), plus clutter."""
    names = [f"TCGA_CS_{4941 + i}_1996090{i}" for i in range(patients)]
    for p in names:
        for n in range(1, slices + 1):
            _img(root / p / f"{p}_{n}.tif", mode="RGB")
            _img(root / p / f"{p}_{n}_mask.tif", value=255 * (n % 2))
    (root / "data.csv").write_text("patient,grade\n")
    (root / "README.md").write_text("readme")
    return names


def test_patient_folders_are_found_and_become_the_groups(tmp_path):
    names = _patient_folders(tmp_path)
    found = discover(tmp_path)
    assert len(found.cases) == 24 and len(found.layouts) == 6
    assert {c.group for c in found.cases} == set(names)
    for c in found.cases:
        assert c.image.parent.name == c.group and [m.name for m in c.masks] == [c.image.stem + "_mask.tif"]
    assert found.grouping.method == "folders"
    assert found.pairing == {"role words": 24}
    summary = found.summary()
    assert summary["groups"]["groups"] == 6 and summary["groups"]["size_max"] == 4
    assert len(summary["pairing_examples"]["role words"]) == 3


def test_a_patient_folder_dataset_is_split_by_patient(tmp_path):
    _patient_folders(tmp_path, patients=10, slices=5)
    cases = discover(tmp_path).cases
    split = split_cases([c.key for c in cases], [c.group for c in cases], (0.6, 0.2, 0.2), seed=3)
    group = {c.key: c.group for c in cases}
    sides = [{group[k] for k in split[s]} for s in ("train", "val", "test")]
    assert all(sides) and not (sides[0] & sides[1] or sides[0] & sides[2] or sides[1] & sides[2])


@pytest.mark.parametrize("layout", ["patient/images", "images/patient"])
def test_role_folders_at_any_level(tmp_path, layout):
    for p in ("pat01", "pat02", "pat03"):
        for n in (1, 2):
            first, second = (p, "images") if layout == "patient/images" else ("images", p)
            _img(tmp_path / first / second / f"s{n}.png")
            first, second = (p, "masks") if layout == "patient/images" else ("masks", p)
            _img(tmp_path / first / second / f"s{n}.png", value=255)
    found = discover(tmp_path)
    assert len(found.cases) == 6
    assert {c.group for c in found.cases} == {"pat01", "pat02", "pat03"}
    # the same name in several folders: keys are qualified by the folder
    assert sorted(c.key for c in found.cases) == sorted(f"pat0{i}_s{n}" for i in (1, 2, 3) for n in (1, 2))
    for c in found.cases:
        assert c.masks[0].name == c.image.name and c.group in c.masks[0].parts
    assert found.pairing == {"same name": 6}


def test_split_folders_are_not_patients(tmp_path):
    for part, keys in (("train", ("a", "b", "c", "d")), ("test", ("e", "f"))):
        for k in keys:
            _img(tmp_path / part / "images" / f"{k}.png")
            _img(tmp_path / part / "masks" / f"{k}.png", value=255)
    found = discover(tmp_path)
    assert sorted(c.key for c in found.cases) == list("abcdef")
    assert all(c.group == c.key for c in found.cases) and found.grouping.method == "none"


def test_category_folders_are_not_patients(tmp_path):
    # benign/ malignant/ normal/ are classes: grouping by them would put one class in each subset
    for cls, n in (("benign", 5), ("malignant", 4), ("normal", 3)):
        for i in range(1, n + 1):
            _img(tmp_path / cls / f"{cls} ({i}).png")
            _img(tmp_path / cls / f"{cls} ({i})_mask.png", value=255)
    found = discover(tmp_path)
    assert len(found.cases) == 12 and found.grouping.method == "none"


def test_masks_named_by_prefix_with_a_rater_tag(tmp_path):
    for k in ("01_L", "01_R", "02_L", "11_L"):
        _img(tmp_path / "images" / f"Image_{k}.jpg", mode="RGB")
        _img(tmp_path / "masks" / f"Image_{k}_1stObs.png", value=255)
    found = discover(tmp_path)
    pairs = {c.image.name: [m.name for m in c.masks] for c in found.cases}
    assert pairs == {f"Image_{k}.jpg": [f"Image_{k}_1stObs.png"] for k in ("01_L", "01_R", "02_L", "11_L")}
    assert found.pairing == {"name prefix": 4}
    assert found.examples["name prefix"][0] == "Image_01_L.jpg <- Image_01_L_1stObs.png"


def test_prefix_pairing_takes_the_longest_image_name(tmp_path):
    for k in ("img1", "img1_b", "img11"):
        _img(tmp_path / "images" / f"{k}.png")
    for m in ("img1_obsA", "img1_b_obsA", "img11_obsA"):
        _img(tmp_path / "masks" / f"{m}.png", value=255)
    pairs = {c.image.stem: [m.stem for m in c.masks] for c in discover(tmp_path).cases}
    assert pairs == {"img1": ["img1_obsA"], "img1_b": ["img1_b_obsA"], "img11": ["img11_obsA"]}


def test_ambiguous_prefix_pairing_names_the_files(tmp_path):
    for k in ("01", "02"):
        _img(tmp_path / "images" / f"{k}.jpg")
        _img(tmp_path / "masks" / f"{k}_1stObs.png", value=255)
        _img(tmp_path / "masks" / f"{k}_2ndObs.png", value=255)
    with pytest.raises(DataError) as e:
        discover(tmp_path)
    msg = str(e.value)
    assert "ambiguous" in msg and "01.jpg <- 01_1stObs.png, 01_2ndObs.png" in msg and "--pair-pattern" in msg


def test_patients_in_flat_names(tmp_path, caplog):
    for p in ("TCGA_DU_5851_19950428", "TCGA_HT_7602_19951103", "TCGA_FG_6690_20020226"):
        for n in (1, 2, 3, 10):
            _img(tmp_path / "images" / f"{p}_{n}.png")
            _img(tmp_path / "masks" / f"{p}_{n}_mask.png", value=255)
    with caplog.at_level(logging.INFO, logger="medseg.data"):
        found = discover(tmp_path)
    assert found.grouping.method == "name stems"
    assert {c.group for c in found.cases} == {"tcga_du_5851_19950428", "tcga_ht_7602_19951103", "tcga_fg_6690_20020226"}
    assert "name stems" in caplog.text


def test_flat_names_that_share_a_word_are_not_patients(tmp_path):
    for i in range(1, 9):
        _img(tmp_path / f"benign ({i}).png")
        _img(tmp_path / f"benign ({i})_mask.png", value=255)
        _img(tmp_path / f"benign ({i})_mask_1.png", value=0)
    found = discover(tmp_path)
    assert len(found.cases) == 8 and all(len(c.masks) == 2 for c in found.cases)
    assert found.grouping.method == "none"


@pytest.mark.parametrize("key,stem", [
    ("tcga_cs_4941_19960909_12", "tcga_cs_4941_19960909"), ("hippocampus_001_slice12", "hippocampus_001"),
    ("case3_slice_07", "case3"), ("benign_12", "benign"), ("cju0qkwl35piu0993l0dewei2", None), ("21", None),
    ("scan-z004", "scan"), ("tcga-18-5592-01z-00-dx1", None),
])
def test_name_stems(key, stem):
    assert name_stem(key) == stem


def test_plausible_groups():
    many = {f"k{i}": f"pat{i // 3}" for i in range(30)}
    assert plausible(many)
    assert not plausible({f"k{i}": "scan" for i in range(30)})                         # one group
    assert not plausible({f"k{i}": ("a1", "b2", "c3")[i % 3] for i in range(4)} | {"x": "a1"} | {"y": "a1"})  # a majority
    assert not plausible({f"k{i}": ("benign", "malignant", "normal")[i % 3] for i in range(30)})  # words, few
    assert not plausible({f"k{i}": f"p{i}" for i in range(30)})                         # nobody shares


# --------------------------------------------------------------------------- the zoo's synthetic sets, found cold


def test_zoo_synthetic_sets_are_found_with_no_flags(tmp_path):
    from benchmarks.zoo import synthetic

    nested = discover(synthetic.patient_folders(tmp_path / "nested", patients=4, slices=3, size=32))
    assert len(nested.cases) == 12 and nested.grouping.method == "folders" and len({c.group for c in nested.cases}) == 4
    rater = discover(synthetic.rater_tagged(tmp_path / "rater", images=4, size=48))
    assert len(rater.cases) == 4 and rater.pairing == {"name prefix": 4}
    blobs = discover(synthetic.speckle_blobs(tmp_path / "blobs", images=8))
    assert len(blobs.cases) == 8 and blobs.grouping.method == "none"
    assert sum(len(c.masks) == 2 for c in blobs.cases) == 1  # one lesion drawn as two mask files, merged


# --------------------------------------------------------------------------- official splits in folders and files


def test_train_and_test_folders_mark_an_official_split(tmp_path):
    for part, keys in (("training", ("21", "22", "23", "24")), ("test", ("01", "02"))):
        for k in keys:
            _img(tmp_path / part / "images" / f"{k}_{part}.tif")
            _img(tmp_path / part / "1st_manual" / f"{k}_manual1.gif", value=255)
    _img(tmp_path / "test" / "2nd_manual" / "01_manual2.gif", value=255)  # a second observer: not a label folder
    found = discover(tmp_path)
    assert {c.key: c.subset for c in found.cases} == {"21": "train", "22": "train", "23": "train", "24": "train",
                                                      "01": "test", "02": "test"}
    assert found.summary()["subsets_from_folders"] == {"train": 4, "test": 2}


def test_the_folders_split_is_used_for_training(tmp_path):
    from medseg.data.dataset2d import DataOptions2D, prepare_dataset
    from medseg.training.data import split_2d as _split

    for part, n in (("train", 8), ("test", 3)):
        for i in range(n):
            _img(tmp_path / part / "images" / f"{part}{i}.png")
            _img(tmp_path / part / "masks" / f"{part}{i}.png", value=255)
    ds = prepare_dataset(tmp_path, DataOptions2D())
    split = _split(ds, (0.6, 0.2, 0.2), seed=0)
    assert sorted(split["test"]) == [f"test{i}" for i in range(3)]
    assert len(split["val"]) == 2 and len(split["train"]) == 6  # a quarter of the training folder validates
    assert all(k.startswith("train") for k in split["train"] + split["val"])


def test_split_files_name_cases_by_path_where_names_repeat(tmp_path):
    import json

    from medseg.data.split import case_aliases, read_split_file

    for p in ("pat01", "pat02", "pat03"):
        for n in (1, 2):
            _img(tmp_path / "images" / p / f"s{n}.png")
            _img(tmp_path / "masks" / p / f"s{n}.png", value=255)
    cases = discover(tmp_path).cases
    aliases = case_aliases(cases, tmp_path)
    assert "s1" not in aliases and aliases["images/pat02/s1"] == "pat02_s1"
    f = tmp_path / "split.json"
    f.write_text(json.dumps({"train": ["images/pat01/s1.png", "IMAGES/PAT01/S2.PNG", "pat02_s1", "pat02_s2"],
                             "test": ["./images/pat03/s1.png", "images/pat03/s2"]}))
    split = read_split_file(f, [c.key for c in cases], aliases)
    assert split["train"] == ["pat01_s1", "pat01_s2", "pat02_s1", "pat02_s2"] and split["val"] is None
    assert split["test"] == ["pat03_s1", "pat03_s2"]
    f.write_text(json.dumps({"train": ["s1.png"]}))  # ambiguous: every patient has one
    with pytest.raises(DataError, match="s1"):
        read_split_file(f, [c.key for c in cases], aliases)


def test_image_subfolders_without_mask_counterparts_are_left_out(tmp_path, caplog):
    for k in ("a", "b"):
        _img(tmp_path / "images" / f"{k}.png")
        _img(tmp_path / "masks" / f"{k}.png", value=255)
    _img(tmp_path / "images" / "thumbnails" / "a.png")
    with caplog.at_level(logging.WARNING, logger="medseg.data"):
        found = discover(tmp_path)
    assert sorted(c.key for c in found.cases) == ["a", "b"]
    assert "thumbnails" in caplog.text


def test_colliding_case_keys_name_both_files(tmp_path):
    from medseg.data.discovery import _unique_keys

    with pytest.raises(DataError) as e:
        _unique_keys([("x_a_b", Path(), Path("x_a_b.png")), ("b", Path("x/a"), Path("x/a/b.png")),
                      ("b", Path("y"), Path("y/b.png"))])
    assert "x_a_b.png" in str(e.value) and "x/a/b.png" in str(e.value)
