"""The synthetic CT phantom: determinism, label semantics, file layout."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image
from scipy import ndimage

from medseg.data.phantom import (
    CLASS_COLORS,
    CLASS_NAMES,
    make_patient_params,
    make_phantom_dataset,
    make_phantom_slice,
)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    out = tmp_path_factory.mktemp("phantom")
    return make_phantom_dataset(out / "a", n_patients=6, slices_per_patient=4, size=128, seed=3)


def _read(path):
    with Image.open(path) as img:
        return img.mode, np.asarray(img)


def test_slice_shapes_and_values():
    image, labels = make_phantom_slice(np.random.default_rng(0), size=96)
    assert image.shape == labels.shape == (96, 96)
    assert image.dtype == labels.dtype == np.uint8
    assert set(np.unique(labels)) <= {0, 1, 2, 3}
    assert {0, 1, 2} <= set(np.unique(labels))


def test_slice_deterministic_and_seed_dependent():
    a = make_phantom_slice(np.random.default_rng(7), size=64)
    b = make_phantom_slice(np.random.default_rng(7), size=64)
    c = make_phantom_slice(np.random.default_rng(8), size=64)
    assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])
    assert not np.array_equal(a[0], c[0])


def test_intensities_look_like_ct():
    image, labels = make_phantom_slice(np.random.default_rng(1), size=128)
    inner = lambda m: ndimage.binary_erosion(m, iterations=3)  # noqa: E731 - skip blurred edges
    assert np.median(image[inner(labels == 0)]) <= 10
    assert 100 <= np.median(image[inner(labels == 1)]) <= 145
    assert 15 <= np.median(image[inner(labels == 2)]) <= 55


def test_tumours_bright_inside_lungs():
    rng = np.random.default_rng(0)
    seen = 0
    for _ in range(30):
        image, labels = make_phantom_slice(rng, size=128)
        tumour = labels == 3
        if not tumour.any():
            continue
        seen += 1
        # every tumour pixel is surrounded by lung/tumour, never by body or background
        near = ndimage.binary_dilation(tumour, iterations=1)
        assert set(np.unique(labels[near])) <= {2, 3}
        assert np.median(image[tumour]) > np.median(image[labels == 2]) + 80
    assert seen >= 3


def test_patient_slices_similar_along_z():
    params = make_patient_params(np.random.default_rng(5), slices_per_patient=5)
    lab = [
        make_phantom_slice(np.random.default_rng(s), 96, params, z=params.z_start + params.z_step * s)[1]
        for s in range(5)
    ]
    other = make_phantom_slice(np.random.default_rng(0), 96, make_patient_params(np.random.default_rng(6)), z=0.5)[1]
    same = [np.mean((lab[s] > 0) == (lab[s + 1] > 0)) for s in range(4)]
    assert min(same) > 0.97
    assert np.mean(lab[2] == lab[3]) > np.mean(lab[2] == other) - 0.02


def test_dataset_files_and_labels_json(dataset):
    names = sorted(p.name for p in (dataset / "images").glob("*.png"))
    assert len(names) == 24
    assert names[0] == "patient000_slice00.png" and names[-1] == "patient005_slice03.png"
    for sub in ("masks", "masks_color"):
        assert sorted(p.name for p in (dataset / sub).glob("*.png")) == names
    assert not list(dataset.rglob("*.tmp*"))
    meta = json.loads((dataset / "labels.json").read_text())
    assert meta == {
        "labels": {str(i): {"name": n, "color": list(c)} for i, (n, c) in enumerate(zip(CLASS_NAMES, CLASS_COLORS))}
    }
    assert meta["labels"]["0"] == {"name": "background", "color": [0, 0, 0]}
    assert len({tuple(c) for c in CLASS_COLORS}) == 4


def test_dataset_images_masks_and_colours(dataset):
    palette = np.asarray(CLASS_COLORS, dtype=np.uint8)
    slices_without_tumour = 0
    for path in sorted((dataset / "images").glob("*.png")):
        mode, image = _read(path)
        assert mode == "L" and image.shape == (128, 128)
        mmode, mask = _read(dataset / "masks" / path.name)
        assert mmode == "L" and mask.shape == (128, 128)
        assert set(np.unique(mask)) <= {0, 1, 2, 3}
        cmode, colour = _read(dataset / "masks_color" / path.name)
        assert cmode == "RGB" and colour.shape == (128, 128, 3)
        assert np.array_equal(colour, palette[mask])  # index -> colour
        decoded = np.argmax(np.all(colour[:, :, None, :] == palette[None, None], axis=-1), axis=-1)
        assert np.array_equal(decoded, mask)  # colour -> index
        slices_without_tumour += int(not (mask == 3).any())
    assert 0 < slices_without_tumour < 24


def test_dataset_deterministic_bytes(dataset, tmp_path):
    again = make_phantom_dataset(tmp_path / "b", n_patients=6, slices_per_patient=4, size=128, seed=3)
    other = make_phantom_dataset(tmp_path / "c", n_patients=6, slices_per_patient=4, size=128, seed=4)
    files = sorted(p.relative_to(dataset) for p in dataset.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(again) for p in again.rglob("*") if p.is_file())
    for rel in files:
        assert (dataset / rel).read_bytes() == (again / rel).read_bytes(), rel
    differ = [rel for rel in files if rel.suffix == ".png" and (dataset / rel).read_bytes() != (other / rel).read_bytes()]
    assert len(differ) == 3 * 24
