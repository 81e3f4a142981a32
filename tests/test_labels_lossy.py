"""Lossy (JPEG) masks: compression noise is not a class."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from tests.conftest import shared_path
from medseg.data.labels import LabelScheme
from medseg.data.mask_reading import detect_scheme, read_mask
from medseg.errors import DataError


def _jpeg_mask(path, mode="L", gray_band=False):
    yy, xx = np.mgrid[:64, :80]
    arr = (((yy - 30) ** 2 + (xx - 40) ** 2) < 400).astype(np.uint8) * 255
    if gray_band:
        arr[:, :20] = 128  # a mid-gray class
    Image.fromarray(arr).convert(mode).save(path, quality=60)
    return path, arr


@pytest.mark.parametrize("mode", ["L", "RGB"])
def test_jpeg_masks_are_binary_with_a_threshold(tmp_path, mode):
    path, truth = _jpeg_mask(tmp_path / "a.jpg", mode)
    raw = np.asarray(Image.open(path))
    assert len(np.unique(raw)) > 2  # compression put stray values at the edge
    scheme = detect_scheme([path])
    assert scheme.kind == "binary" and scheme.threshold == 128 and scheme.num_classes == 2
    labels = read_mask([path], scheme)
    assert set(np.unique(labels)) == {0, 1}
    assert (labels == (truth > 0)).mean() > 0.99
    # the scheme survives its JSON round trip
    again = LabelScheme.from_json(scheme.to_json())
    assert again.threshold == 128 and np.array_equal(read_mask([path], again), labels)


def test_jpeg_masks_with_mid_gray_classes_are_refused(tmp_path):
    path, _ = _jpeg_mask(tmp_path / "a.jpg", gray_band=True)
    with pytest.raises(DataError) as e:
        detect_scheme([path])
    assert "a.jpg" in str(e.value) and "PNG" in str(e.value)


def test_a_threshold_only_for_binary_schemes():
    with pytest.raises(ValueError):
        LabelScheme(kind="index", codes=[0, 1, 2], threshold=128)


@pytest.mark.shared
def test_kvasir_masks_read_as_two_classes():
    masks = sorted(shared_path("datasets", "kvasir_seg", "masks").glob("*.jpg"))[:40]
    scheme = detect_scheme(masks)
    assert scheme.num_classes == 2 and scheme.threshold == 128
    labels = read_mask([masks[0]], scheme)
    assert 0.05 < labels.mean() < 0.95


def test_a_threshold_scheme_holds_lossless_files_to_its_codes(tmp_path):
    path, _ = _jpeg_mask(tmp_path / "a.jpg")
    scheme = detect_scheme([path])
    ok = tmp_path / "b.png"
    Image.fromarray(np.array([[0, 255], [255, 0]], np.uint8)).save(ok)
    assert read_mask([ok], scheme).tolist() == [[0, 1], [1, 0]]
    ones = tmp_path / "c.png"  # 0/1 PNG masks against a run trained on 0/255 JPEGs: an error, not all background
    Image.fromarray(np.array([[0, 1], [1, 0]], np.uint8)).save(ones)
    with pytest.raises(DataError, match="c.png"):
        read_mask([ones], scheme)
