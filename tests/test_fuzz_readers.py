"""Property-based fuzzing of every medseg reader (issue 16).

Property
--------
Each reader gets files made from a small *valid* file of its kind (written by medseg's own writers, or
``json.dumps`` of a valid object) and then damaged: truncated at a drawn offset, bit-flipped or overwritten
at drawn positions, or given an absurd header field (NIfTI ``dim[]``/``datatype``/``bitpix``/``vox_offset``,
NRRD ``sizes:``, MHA ``DimSize =``, PNG IHDR width/height with the CRC fixed up, TIFF IFD entries, the JPEG
SOF size, DICOM Rows/Columns/positions/pixel-data length, safetensors header fields; JSON values replaced by
huge, negative, NaN or 5000-digit numbers, strings, swapped types, deep nesting). The only allowed outcomes:

* a normal return holding at least one voxel, or
* a :class:`medseg.errors.MedsegError` (DataError, ConfigError, RunFolderError) naming a path.

Any other exception fails, and so does a read that raises the process's peak memory by 1 GiB or more
(:data:`PEAK_GROWTH`; the files are a few KiB). On top: a file that was only *truncated* must fail or read
back exactly as the original, and a volume may not return more voxels than its (decompressed) data has bytes.
``test_voxels_missing_from_the_file_are_refused`` pins damage ITK itself reads without complaint, and
``test_absurd_sizes_are_refused_before_allocation`` headers declaring 2^32 to 2^62 voxels (and a DICOM meta
element of 4 GiB, a network of about 2^36 weights, a model.json count of 10^9): each must be refused within 2 s
by a size check, growing the peak memory by less than 256 MiB.

Budget
------
``EXAMPLES`` holds the number of examples per reader (3,300 in all); :func:`test_every_reader_ran_its_examples`
checks that hypothesis ran exactly that many. ``derandomize=True`` and ``database=None`` make every run the same.
The file takes 20-30 s on 2 CPU cores. Hangs: a hypothesis ``deadline`` of 3 s per example (5 s for a DICOM
folder or a model), and a faulthandler watchdog that dumps the stacks and exits the process when one read runs
:data:`WATCHDOG_S` (a hang inside C code cannot be interrupted otherwise). Memory: every read runs under an
address-space limit (``RLIMIT_AS``) of the process's current size + :data:`MEMORY_HEADROOM` (2 GiB), so a reader
that tries to allocate for an absurd header fails (a MemoryError, or a MedsegError saying it could not allocate,
both count as failures) instead of exhausting the machine.
"""

from __future__ import annotations

import contextlib
import copy
import faulthandler
import gzip
import json
import re
import resource
import shutil
import struct
import time
import zlib
from collections import Counter
from datetime import timedelta
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from medseg.data.label_files import load_labels_json
from medseg.errors import MedsegError
from medseg.io import Geometry, read_image, write_image
from medseg.io.dicom import read_dicom_series, write_dicom_series
from medseg.io.volume import read_volume
from medseg.models import create_model
from medseg.models.weights import load_model, save_model
from medseg.planning.plan import load_plan

EXAMPLES = {"png": 300, "tif": 300, "jpg": 200, "nii": 300, "nii.gz": 300, "nrrd": 300, "mha": 300, "dicom": 250,
            "plan": 400, "labels": 400, "model": 250}
RAN: Counter[str] = Counter()
pytestmark = pytest.mark.filterwarnings("ignore::UserWarning:PIL.*", "ignore::PIL.Image.DecompressionBombWarning")
MEMORY_HEADROOM = 2 * 2**30
PEAK_GROWTH = 2**30
WATCHDOG_S = 60.0


def fuzz_settings(reader: str, deadline_s: float = 3.0) -> settings:
    return settings(max_examples=EXAMPLES[reader], deadline=timedelta(seconds=deadline_s), derandomize=True,
                    database=None, print_blob=False,
                    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])


# --------------------------------------------------------------------------- guards and the property


def _vm_size() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmSize:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmSize in /proc/self/status")


@contextlib.contextmanager
def guarded():
    """An address-space cap of the current size + MEMORY_HEADROOM and a hang watchdog, for one read."""
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    cap = min([_vm_size() + MEMORY_HEADROOM] + [v for v in (soft, hard) if v != resource.RLIM_INFINITY])
    resource.setrlimit(resource.RLIMIT_AS, (cap, hard))
    faulthandler.dump_traceback_later(WATCHDOG_S, exit=True)
    try:
        yield
    finally:
        faulthandler.cancel_dump_traceback_later()
        resource.setrlimit(resource.RLIMIT_AS, (soft, hard))


def _peak_rss() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def outcome(reader, path: Path):
    """``reader(path)`` under :func:`guarded`: its result, or the MedsegError it raised. Anything else propagates."""
    peak = _peak_rss()
    with guarded():
        try:
            result = reader(path)
        except MedsegError as e:
            assert e.path is not None, f"a MedsegError that names no file: {e}"
            assert "allocate" not in str(e), f"the reader tried an allocation beyond the memory cap: {e}"
            result = e
    grown = _peak_rss() - peak
    assert grown < PEAK_GROWTH, f"reading a file of {_size(path)} bytes raised the peak memory by {grown / 2**20:.0f} MiB"
    return result


def _size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.iterdir() if p.is_file()) if path.is_dir() else path.stat().st_size


def check_image(result, original: np.ndarray, ops: list[str], payload: int | None = None) -> None:
    """The integrity properties of a successful image/volume read."""
    if isinstance(result, MedsegError):
        return
    assert result.array.size > 0, f"a valid read with no voxels: shape {result.array.shape}"
    if payload is not None:
        assert result.array.size <= payload, f"{result.array.size} voxels read from {payload} bytes of data"
    if ops == ["truncate"]:
        np.testing.assert_array_equal(result.array, original, err_msg="a truncated file read as different data")


# --------------------------------------------------------------------------- byte-level damage

BYTE_OPS = ("truncate", "flip", "flip_head", "overwrite")


def damage_bytes(draw, data: bytes, op: str) -> bytes:
    if not data:
        return data
    if op == "truncate":
        return data[: draw(st.integers(0, len(data) - 1))]
    b = bytearray(data)
    if op == "overwrite":
        pos = draw(st.integers(0, len(b) - 1))
        chunk = draw(st.binary(min_size=1, max_size=8))
        b[pos : pos + len(chunk)] = chunk
        return bytes(b)
    end = min(len(b), 512) if op == "flip_head" else len(b)
    for pos, bit in draw(st.lists(st.tuples(st.integers(0, end - 1), st.integers(0, 7)), min_size=1, max_size=4)):
        b[pos] ^= 1 << bit
    return bytes(b)


@st.composite
def damaged(draw, seeds: dict[str, bytes], patch=None, patch_raw=None):
    """``(name, damaged bytes, ops)``: a drawn seed with 1-3 damages, header patches first.

    ``patch(draw, data)`` rewrites a header field; ``patch_raw`` does so on the decompressed stream of a
    gzipped file (recompressed afterwards).
    """
    name = draw(st.sampled_from(sorted(seeds)))
    data = seeds[name]
    kinds = list(BYTE_OPS) + (["patch"] if patch or patch_raw else [])
    ops = draw(st.lists(st.sampled_from(kinds), min_size=1, max_size=3))
    ops.sort(key=lambda o: o != "patch")
    for op in ops:
        if op != "patch":
            data = damage_bytes(draw, data, op)
        elif patch_raw is not None and name.endswith(".gz"):
            data = gzip.compress(patch_raw(draw, gzip.decompress(data)), mtime=0)
        else:
            data = (patch or patch_raw)(draw, data)
    return name, data, ops


def payload_bytes(data: bytes, header_end: bytes | None) -> int:
    """Bytes of voxel data a volume file can hold: its data part, decompressed where it is zlib/gzip."""
    start = 0
    if header_end is not None:
        i = data.find(header_end)
        start = i + len(header_end) if i >= 0 else 0
    body = data[start:]
    d = zlib.decompressobj(wbits=47)  # zlib or gzip
    total = 0
    try:
        for i in range(0, len(body), 64):
            total += len(d.decompress(body[i : i + 64]))
    except zlib.error:
        pass
    return max(total, len(body))


# --------------------------------------------------------------------------- format-specific header patches

UINT32_SIZES = st.one_of(st.sampled_from([0, 1, 2, 3, 9, 10_000, 65_535, 2**31 - 1, 2**32 - 1]), st.integers(0, 2**32 - 1))
UINT16_SIZES = st.one_of(st.sampled_from([0, 1, 2, 3, 5, 6, 8, 12, 16, 255, 4096, 65_535]), st.integers(0, 65_535))
INT16 = st.one_of(st.sampled_from([-32768, -1, 0, 1, 2, 3, 4, 5, 7, 8, 16, 255, 4096, 32767]), st.integers(-32768, 32767))
FLOAT32 = st.one_of(st.sampled_from([0.0, -1.0, 1e30, float("nan"), float("inf"), float("-inf"), 3.4e38]), st.floats(width=32))
TEXT_SIZES = st.sampled_from(["0", "1", "-1", "6", "1000", "65535", "2147483648", "4294967296", "1099511627776",
                              "99999999999999999999", "1e9", "nan", "x", ""])


def patch_png(draw, data: bytes) -> bytes:
    """Set an IHDR field (width, height, bit depth, colour type, interlace) and fix the chunk's CRC."""
    b = bytearray(data)
    if len(b) < 33 or b[12:16] != b"IHDR":
        return data
    field = draw(st.sampled_from(["width", "height", "depth", "color", "interlace"]))
    if field in ("width", "height"):
        struct.pack_into(">I", b, 16 if field == "width" else 20, draw(UINT32_SIZES))
    else:
        b[{"depth": 24, "color": 25, "interlace": 28}[field]] = draw(st.sampled_from([0, 1, 2, 3, 4, 6, 8, 16, 255]))
    struct.pack_into(">I", b, 29, zlib.crc32(bytes(b[12:29])))
    return bytes(b)


def patch_tif(draw, data: bytes) -> bytes:
    """Set the value of one entry of the first IFD (size, strip offsets and counts, samples, compression...)."""
    b = bytearray(data)
    if len(b) < 8 or b[:4] != b"II*\x00":
        return data
    ifd = struct.unpack_from("<I", b, 4)[0]
    if ifd + 2 > len(b):
        return data
    n = struct.unpack_from("<H", b, ifd)[0]
    entries = [ifd + 2 + 12 * i for i in range(n) if ifd + 2 + 12 * (i + 1) <= len(b)]
    if not entries:
        return data
    at = draw(st.sampled_from(entries))
    kind = struct.unpack_from("<H", b, at + 2)[0]
    if draw(st.booleans()):
        struct.pack_into("<I", b, at + 4, draw(UINT32_SIZES))  # the entry's count
    elif kind == 3:
        struct.pack_into("<H", b, at + 8, draw(UINT16_SIZES))
    else:
        struct.pack_into("<I", b, at + 8, draw(UINT32_SIZES))
    return bytes(b)


def patch_jpg(draw, data: bytes) -> bytes:
    """Set the frame's height, width, precision or component count in the SOF0 segment."""
    b = bytearray(data)
    at = b.find(b"\xff\xc0")
    if at < 0 or at + 10 > len(b):
        return data
    field = draw(st.sampled_from(["height", "width", "precision", "components"]))
    if field in ("height", "width"):
        struct.pack_into(">H", b, at + (5 if field == "height" else 7), draw(UINT16_SIZES))
    else:
        b[at + (4 if field == "precision" else 9)] = draw(st.sampled_from([0, 1, 3, 4, 8, 12, 16, 255]))
    return bytes(b)


NIFTI_TYPES = st.sampled_from([0, 1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 768, 1024, 1280, 1536, 1792, 2048, 2304, -1, 32767])


def patch_nifti(draw, raw: bytes) -> bytes:
    """Set a NIfTI-1 header field: dim[i], datatype, bitpix, vox_offset, pixdim[i], scl_slope."""
    b = bytearray(raw)
    if len(b) < 348:
        return raw
    field = draw(st.sampled_from(["dim", "dim", "datatype", "bitpix", "vox_offset", "pixdim", "scl_slope"]))
    if field == "dim":
        struct.pack_into("<h", b, 40 + 2 * draw(st.integers(0, 7)), draw(INT16))
    elif field == "datatype":
        struct.pack_into("<h", b, 70, draw(NIFTI_TYPES))
    elif field == "bitpix":
        struct.pack_into("<h", b, 72, draw(INT16))
    elif field == "vox_offset":
        struct.pack_into("<f", b, 108, draw(FLOAT32))
    elif field == "pixdim":
        struct.pack_into("<f", b, 76 + 4 * draw(st.integers(0, 7)), draw(FLOAT32))
    else:
        struct.pack_into("<f", b, 112, draw(FLOAT32))
    return bytes(b)


def _text_line(data: bytes, key: bytes, sep: bytes, value: bytes) -> bytes:
    return re.sub(rb"(?m)^" + re.escape(key) + re.escape(sep) + rb"[^\n]*", lambda _: key + sep + value, data, count=1)


def _sizes(draw, lo: int = 0, hi: int = 5) -> bytes:
    return " ".join(draw(st.lists(TEXT_SIZES, min_size=lo, max_size=hi))).encode()


def patch_nrrd(draw, data: bytes) -> bytes:
    key = draw(st.sampled_from(["sizes", "sizes", "dimension", "type", "encoding", "endian", "space directions"]))
    value = {
        "sizes": lambda: _sizes(draw, 1),
        "dimension": lambda: draw(TEXT_SIZES).encode(),
        "type": lambda: draw(st.sampled_from([b"uchar", b"short", b"int", b"float", b"double", b"int64", b"block", b"x"])),
        "encoding": lambda: draw(st.sampled_from([b"raw", b"gzip", b"hex", b"bzip2", b"x"])),
        "endian": lambda: draw(st.sampled_from([b"big", b"little", b"x"])),
        "space directions": lambda: draw(st.sampled_from([b"(nan,0,0) (0,1,0) (0,0,1)", b"(0,0,0) (0,0,0) (0,0,0)",
                                                          b"none (0,1,0)", b"(1e999,0,0) (0,1,0) (0,0,1)"])),
    }[key]()
    return _text_line(data, key.encode(), b": ", value)


def patch_mha(draw, data: bytes) -> bytes:
    key = draw(st.sampled_from(["DimSize", "DimSize", "NDims", "ElementType", "CompressedData", "CompressedDataSize",
                                "ElementSpacing", "BinaryDataByteOrderMSB"]))
    value = {
        "DimSize": lambda: _sizes(draw),
        "NDims": lambda: draw(TEXT_SIZES).encode(),
        "ElementType": lambda: draw(st.sampled_from([b"MET_UCHAR", b"MET_SHORT", b"MET_FLOAT", b"MET_DOUBLE",
                                                     b"MET_LONG_LONG", b"MET_STRING", b"MET_NONE", b"MET_X"])),
        "CompressedData": lambda: draw(st.sampled_from([b"True", b"False", b"x"])),
        "CompressedDataSize": lambda: draw(TEXT_SIZES).encode(),
        "ElementSpacing": lambda: _sizes(draw),
        "BinaryDataByteOrderMSB": lambda: draw(st.sampled_from([b"True", b"False"])),
    }[key]()
    return _text_line(data, key.encode(), b" = ", value)


# DICOM (implicit VR little endian data set): (group, element) of unsigned-short and decimal-string elements.
DICOM_US = [(0x0028, 0x0010), (0x0028, 0x0011), (0x0028, 0x0002), (0x0028, 0x0100), (0x0028, 0x0101),
            (0x0028, 0x0102), (0x0028, 0x0103)]
DICOM_TEXT = [(0x0020, 0x0032), (0x0020, 0x0037), (0x0028, 0x0030), (0x0018, 0x0050), (0x0020, 0x0013)]
DICOM_STRINGS = st.sampled_from([b"", b"0\\0\\0", b"1\\2", b"nan\\nan\\nan", b"1e999\\0\\0", b"abc", b"-0",
                                 b"0\\0\\0\\0\\0\\0", b"1\\0\\0\\0\\1\\0\\0", b"\xb2\\\xb3\\1", b"99999999999999999999"])


def _dicom_element(b: bytes, group: int, element: int) -> int:
    """Offset of an implicit-VR element's tag in a data set (after the 132-byte preamble), or -1."""
    return b.find(struct.pack("<HH", group, element), 132)


def patch_dicom(draw, data: bytes) -> bytes:
    kind = draw(st.sampled_from(["us", "us", "text", "pixel_length", "meta"]))
    if kind == "meta":  # the VR of a file meta element (its length field is read by VR), or its 4-byte length
        at = draw(st.sampled_from([m.start() for m in re.finditer(rb"\x02\x00[\x00-\x16]\x00(UL|OB|UI|SH|AE)", data)]
                                  or [0]))
        b = bytearray(data)
        if draw(st.booleans()):
            b[at + 4 : at + 6] = draw(st.sampled_from([b"OB", b"UN", b"SQ", b"QH", b"UL", b"\x00\x00"]))
        else:
            struct.pack_into("<I", b, at + 8, draw(UINT32_SIZES))
        return bytes(b)
    if kind == "us":
        at = _dicom_element(data, *draw(st.sampled_from(DICOM_US)))
        if at < 0 or at + 10 > len(data):
            return data
        b = bytearray(data)
        struct.pack_into("<H", b, at + 8, draw(UINT16_SIZES))
        return bytes(b)
    if kind == "pixel_length":
        at = _dicom_element(data, 0x7FE0, 0x0010)
        if at < 0 or at + 8 > len(data):
            return data
        b = bytearray(data)
        struct.pack_into("<I", b, at + 4, draw(UINT32_SIZES))
        return bytes(b)
    at = _dicom_element(data, *draw(st.sampled_from(DICOM_TEXT)))
    if at < 0 or at + 8 > len(data):
        return data
    old = struct.unpack_from("<I", data, at + 4)[0]
    value = draw(DICOM_STRINGS)
    value += b" " * (len(value) % 2)
    return data[: at + 4] + struct.pack("<I", len(value)) + value + data[at + 8 + old :]


# --------------------------------------------------------------------------- JSON damage

DEEP, DIGITS = "\x00deep\x00", "\x00digits\x00"
NASTY = st.one_of(
    st.sampled_from([0, -1, 1, 2**31, 2**63, -(2**63) - 1, 10**30, 10**400, 1e308, -0.0, 5e-324, float("nan"),
                     float("inf"), float("-inf"), "", "a", "1e999", "NaN", "#ff00zz", "\u0663", "30x", "-5 GiB",
                     "9" * 400 + " GiB", True, False, None, [], {}, [[]], {"": None}, [1] * 3, DEEP, DIGITS]),
    st.integers(), st.floats(), st.text(max_size=6), st.lists(st.integers(-3, 10**6), max_size=4),
)


def _paths(obj, prefix=()):
    yield prefix
    items = obj.items() if isinstance(obj, dict) else enumerate(obj) if isinstance(obj, list) else ()
    for k, v in items:
        yield from _paths(v, (*prefix, k))


def _parent(obj, path):
    for k in path[:-1]:
        obj = obj[k]
    return obj


@st.composite
def damaged_json(draw, seed):
    """JSON text of ``seed`` with 1-3 structural damages, then possibly byte damage."""
    obj = copy.deepcopy(seed)
    ops = draw(st.lists(st.sampled_from(["replace", "replace", "delete", "add", "wrap", "bytes"]), min_size=1, max_size=3))
    for op in ops:
        if op == "bytes":
            continue
        paths = list(_paths(obj))[1:]
        if not paths:
            obj = draw(NASTY) if op == "replace" else obj
            continue
        path = draw(st.sampled_from(paths))
        parent, key = _parent(obj, path), path[-1]
        if op == "replace":
            parent[key] = draw(NASTY)
        elif op == "wrap":
            parent[key] = draw(st.sampled_from([[parent[key]], {"value": parent[key]}, str(parent[key])]))
        elif op == "delete":
            del parent[key]
        elif isinstance(parent, dict):
            parent[draw(st.sampled_from(["unknown", "", "0", "-1", "labels"]))] = draw(NASTY)
        else:
            parent.append(draw(NASTY))
    text = json.dumps(obj, allow_nan=True)
    text = text.replace(json.dumps(DEEP), "[" * 100_000 + "]" * 100_000).replace(json.dumps(DIGITS), "7" * 5000)
    data = text.encode()
    if "bytes" in ops:
        data = damage_bytes(draw, data, draw(st.sampled_from(BYTE_OPS)))
    return data, ops


# --------------------------------------------------------------------------- seeds

VOLUME = np.random.default_rng(0).integers(0, 200, size=(1, 6, 5, 4)).astype(np.int16)
GEOMETRY = Geometry((1.0, 1.5, 2.0), (3.0, -4.0, 5.0))
IMAGE = np.random.default_rng(1).integers(0, 255, size=(3, 8, 9)).astype(np.uint8)
PLAN = {
    "plan_version": 1, "medseg_version": "0", "created": "2024-01-01T00:00:00",
    "data": {"path": "data", "name": "toy", "dims": 3, "channels": 1, "modality": ["CT"], "num_classes": 3,
             "class_names": ["background", "liver", "tumour"], "num_cases": 4, "data_hash": "abc"},
    "device": {"kind": "cpu", "memory_budget": "2.0 GiB", "reason": "r"},
    "configuration": {"value": "3d", "candidates": ["3d", "2d"], "reason": "r"},
    "spacing": {"target": [1.0, 1.0, 2.5], "reason": "r"},
    "normalization": {"scheme": ["ct"], "stats": [{"mean": 10.0, "std": 20.0, "p005": -100.0, "p995": 300.0}],
                      "reason": "r"},
    "crop_to_nonzero": {"value": True, "reason": "r"},
    "patch": {"size": [32, 32, 16], "reason": "r"},
    "batch": {"size": 2, "estimated_memory": "1.0 GiB", "reason": "r"},
    "network": {"model": "unet", "features": 8, "depth": 2, "strides": [[2, 2, 2], [2, 2, 1]],
                "kernel_sizes": [[3, 3, 3], [3, 3, 3], [3, 3, 1]], "max_features": 64, "dropout": 0.0, "reason": "r"},
    "training": {"time_budget": "30m", "max_epochs": 10, "iterations_per_epoch": 20, "foreground_fraction": 0.33,
                 "monitor": "val_dice", "augment_warmup": 0.1, "val_max_cases": None, "val_every": 1, "reason": "r"},
    "overrides": {},
}
LABELS = [{"labels": {"0": {"name": "background", "color": [0, 0, 0]}, "1": {"name": "lung", "color": "#ff0000"},
                      "2": {"name": "heart", "color": 128}}},
          {"background": [0, 0, 0], "lung": [255, 0, 0], "heart": "0,255,0"}]


@pytest.fixture(scope="module")
def seeds(tmp_path_factory) -> dict[str, dict[str, bytes]]:
    """Valid files of every kind, as bytes, keyed by reader then by file name."""
    root = tmp_path_factory.mktemp("seeds")
    out: dict[str, dict[str, bytes]] = {}
    for ext in ("png", "tif", "jpg"):
        write_image(root / f"i.{ext}", IMAGE)
        out[ext] = {f"i.{ext}": (root / f"i.{ext}").read_bytes()}
    for ext in ("nii", "nii.gz", "nrrd", "mha"):
        for name, arr in (("int16", VOLUME), ("float32", VOLUME.astype(np.float32) / 7)):
            write_image(root / f"{name}.{ext}", arr, GEOMETRY)
            out.setdefault(ext, {})[f"{name}.{ext}"] = (root / f"{name}.{ext}").read_bytes()
        if ext in ("nrrd", "mha"):  # medseg writes compressed files; users also have raw ones
            sitk.WriteImage(sitk.ReadImage(str(root / f"int16.{ext}")), str(root / f"raw.{ext}"), False)
            out[ext][f"raw.{ext}"] = (root / f"raw.{ext}").read_bytes()
    write_dicom_series(root / "dicom", VOLUME, GEOMETRY, modality="CT", series_uid="1.2.3.4", study_uid="1.2.3.5")
    out["dicom"] = {p.name: p.read_bytes() for p in sorted((root / "dicom").iterdir())}
    model = create_model("unet", 2, 1, 2, features=2, depth=1, max_features=4)
    save_model(root / "model", model)
    out["model"] = {p.name: p.read_bytes() for p in sorted((root / "model").iterdir())}
    return out


def written_array(name: str) -> np.ndarray:
    if name.startswith("i."):
        return IMAGE
    return VOLUME.astype(np.float32) / 7 if name.startswith("float32") else VOLUME


@pytest.fixture(scope="module")
def work(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("fuzz")


@pytest.fixture(scope="module")
def originals(seeds, tmp_path_factory) -> dict[str, np.ndarray]:
    """What each seed file reads as (a JPEG differs from the array written to it)."""
    root = tmp_path_factory.mktemp("originals")
    out = {}
    for kind, files in seeds.items():
        for name, data in files.items():
            if kind not in ("dicom", "model"):
                (root / name).write_bytes(data)
                out[name] = read_image(root / name).array
    return out


def test_seeds_are_valid(seeds, originals, work):
    for name, arr in originals.items():
        if not name.endswith(".jpg"):
            np.testing.assert_allclose(arr, written_array(name), rtol=1e-6)
    for kind, reader in (("dicom", read_dicom_series), ("model", load_model)):
        folder = work / f"seed-{kind}"
        folder.mkdir()
        for name, data in seeds[kind].items():
            (folder / name).write_bytes(data)
        assert reader(folder) is not None
    (work / "plan.json").write_text(json.dumps(PLAN))
    assert load_plan(work / "plan.json").dims == 3
    for seed in LABELS:
        (work / "labels.json").write_text(json.dumps(seed))
        assert list(load_labels_json(work / "labels.json")) == ["background", "lung", "heart"]


# --------------------------------------------------------------------------- the fuzz tests


def _fuzz_image(reader: str, originals, work, case, header_end=None, volume=False):
    name, data, ops = case
    RAN[reader] += 1
    path = work / name
    path.write_bytes(data)
    result = outcome(read_volume if volume else read_image, path)
    check_image(result, originals[name], ops, payload_bytes(data, header_end) if volume else None)


@pytest.mark.parametrize("ext, patch", [("png", patch_png), ("tif", patch_tif), ("jpg", patch_jpg)])
def test_fuzz_2d_images(seeds, originals, work, ext, patch):
    @fuzz_settings(ext)
    @given(case=damaged(seeds[ext], patch=patch))
    def run(case):
        _fuzz_image(ext, originals, work, case)

    run()


VOLUME_PATCHES = [("nii", patch_nifti, None), ("nii.gz", patch_nifti, None), ("nrrd", patch_nrrd, b"\n\n"),
                  ("mha", patch_mha, b"ElementDataFile = LOCAL\n")]


@pytest.mark.parametrize("ext, patch, header_end", VOLUME_PATCHES)
def test_fuzz_volumes(seeds, originals, work, ext, patch, header_end):
    @fuzz_settings(ext)
    @given(case=damaged(seeds[ext], patch=None if ext == "nii.gz" else patch, patch_raw=patch if ext == "nii.gz" else None))
    def run(case):
        _fuzz_image(ext, originals, work, case, header_end, volume=True)

    run()


@st.composite
def damaged_series(draw, files: dict[str, bytes]) -> dict[str, bytes]:
    """One slice file damaged, or one header patch applied alike to every slice file."""
    files = dict(files)
    if draw(st.booleans()):
        values: list = []

        def record(strategy):
            values.append(draw(strategy))
            return values[-1]

        first, *others = sorted(files)
        files[first] = patch_dicom(record, files[first])
        for name in others:
            replay = iter(values)
            files[name] = patch_dicom(lambda _, replay=replay: next(replay), files[name])
    else:
        target = draw(st.sampled_from(sorted(files)))
        _, files[target], _ = draw(damaged({target: files[target]}, patch=patch_dicom))
    return files


def test_fuzz_dicom_series(seeds, work):
    @fuzz_settings("dicom", deadline_s=5.0)
    @given(files=damaged_series(seeds["dicom"]))
    def run(files):
        RAN["dicom"] += 1
        folder = work / "dicom"
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir()
        for name, content in files.items():
            (folder / name).write_bytes(content)
        check_image(outcome(read_dicom_series, folder), VOLUME, [])

    run()


@fuzz_settings("plan")
@given(case=damaged_json(PLAN))
def test_fuzz_plan_json(work, case):
    RAN["plan"] += 1
    path = work / "plan.json"
    path.write_bytes(case[0])
    outcome(load_plan, path)


@fuzz_settings("labels")
@given(case=st.sampled_from(LABELS).flatmap(damaged_json))
def test_fuzz_labels_json(work, case):
    RAN["labels"] += 1
    path = work / "labels.json"
    path.write_bytes(case[0])
    outcome(load_labels_json, path)


def patch_safetensors(draw, data: bytes) -> bytes:
    """Damage the safetensors JSON header (shapes, dtypes, offsets) or its length field."""
    if len(data) < 8:
        return data
    n = struct.unpack_from("<Q", data)[0]
    if draw(st.booleans()):
        return struct.pack("<Q", draw(st.sampled_from([0, 1, n - 1, n + 1, 2**32, 2**63 - 1, 2**64 - 1]))) + data[8:]
    try:
        seed = json.loads(data[8 : 8 + n])
    except ValueError:  # an earlier damage broke the header already
        return data
    header, _ = draw(damaged_json(seed))
    return struct.pack("<Q", len(header)) + header + data[8 + n :]


@st.composite
def damaged_model(draw, files: dict[str, bytes]) -> dict[str, bytes]:
    """model.json damaged as JSON, or model.safetensors damaged as bytes or in its header."""
    files = dict(files)
    target = draw(st.sampled_from(sorted(files)))
    if target.endswith(".json"):
        files[target], _ = draw(damaged_json(json.loads(files[target])))
    else:
        _, files[target], _ = draw(damaged({target: files[target]}, patch=patch_safetensors))
    return files


def test_fuzz_model_folder(seeds, work):
    @fuzz_settings("model", deadline_s=5.0)
    @given(files=damaged_model(seeds["model"]))
    def run(files):
        RAN["model"] += 1
        folder = work / "model"
        folder.mkdir(exist_ok=True)
        for name, content in files.items():
            (folder / name).write_bytes(content)
        outcome(load_model, folder)

    run()


# --------------------------------------------------------------------------- absurd sizes, explicitly


def _absurd(kind: str, seeds, work) -> Path:
    """A file or folder whose header declares 2^32 to 2^62 voxels, a 4 GiB DICOM meta element, a network of ~2^36
    weights or one of 10^9 layers."""
    if kind == "png":
        b = bytearray(seeds["png"]["i.png"])
        struct.pack_into(">II", b, 16, 2**31 - 1, 2**31 - 1)
        struct.pack_into(">I", b, 29, zlib.crc32(bytes(b[12:29])))
        data, name = bytes(b), "absurd.png"
    elif kind == "jpg":
        b = bytearray(seeds["jpg"]["i.jpg"])
        struct.pack_into(">HH", b, b.find(b"\xff\xc0") + 5, 65535, 65535)
        data, name = bytes(b), "absurd.jpg"
    elif kind == "tif":
        b = bytearray(seeds["tif"]["i.tif"])
        ifd = struct.unpack_from("<I", b, 4)[0]
        for i in range(struct.unpack_from("<H", b, ifd)[0]):
            at = ifd + 2 + 12 * i
            if struct.unpack_from("<H", b, at)[0] in (256, 257):
                struct.pack_into("<I" if struct.unpack_from("<H", b, at + 2)[0] == 4 else "<H", b, at + 8,
                                 2**31 - 1 if struct.unpack_from("<H", b, at + 2)[0] == 4 else 65535)
        data, name = bytes(b), "absurd.tif"
    elif kind in ("nii", "nii.gz"):
        raw = bytearray(gzip.decompress(seeds[kind][f"int16.{kind}"]) if kind == "nii.gz" else seeds[kind][f"int16.{kind}"])
        struct.pack_into("<4h", raw, 40, 3, 32767, 32767, 32767)
        data, name = (gzip.compress(bytes(raw)) if kind == "nii.gz" else bytes(raw)), f"absurd.{kind}"
    elif kind == "nrrd":
        data, name = _text_line(seeds["nrrd"]["int16.nrrd"], b"sizes", b": ", b"16384 16384 16384"), "absurd.nrrd"
    elif kind == "nrrd-raw":
        data, name = _text_line(seeds["nrrd"]["raw.nrrd"], b"sizes", b": ", b"16384 16384 16384"), "absurd-raw.nrrd"
    elif kind == "mha":
        data, name = _text_line(seeds["mha"]["int16.mha"], b"DimSize", b" = ", b"16384 16384 16384"), "absurd.mha"
    elif kind == "mha-raw":
        data, name = _text_line(seeds["mha"]["raw.mha"], b"DimSize", b" = ", b"16384 16384 16384"), "absurd-raw.mha"
    elif kind == "dicom-meta":  # a file meta element declaring 4 GiB: GDCM would fill that much while scanning
        folder = work / "absurd-dicom-meta"
        folder.mkdir(exist_ok=True)
        for fname, content in seeds["dicom"].items():
            at = content.index(b"\x02\x00\x01\x00OB")
            (folder / fname).write_bytes(content[: at + 8] + struct.pack("<I", 2**32 - 16) + content[at + 12 :])
        return folder
    elif kind == "dicom":
        folder = work / "absurd-dicom"
        folder.mkdir(exist_ok=True)
        for fname, content in seeds["dicom"].items():
            b = bytearray(content)
            for element in (0x0010, 0x0011):
                struct.pack_into("<H", b, _dicom_element(b, 0x0028, element) + 8, 65535)
            (folder / fname).write_bytes(bytes(b))
        return folder
    else:  # a valid model.json beside small weights: a network of ~2^36 weights, or a count of 10^9 layers
        folder = work / f"absurd-{kind}"
        folder.mkdir(exist_ok=True)
        (folder / "model.safetensors").write_bytes(seeds["model"]["model.safetensors"])
        config = json.loads(seeds["model"]["model.json"])
        if kind == "model":
            config.update(features=2**15, max_features=2**15)
        else:
            config.update(depth=10**9)
        (folder / "model.json").write_text(json.dumps(config))
        return folder
    (work / name).write_bytes(data)
    return work / name


@pytest.mark.parametrize("kind", ["png", "jpg", "tif", "nii", "nii.gz", "nrrd", "nrrd-raw", "mha", "mha-raw", "dicom",
                                  "dicom-meta", "model", "model-depth"])
def test_absurd_sizes_are_refused_before_allocation(seeds, work, kind):
    path = _absurd(kind, seeds, work)
    reader = load_model if kind.startswith("model") else read_dicom_series if kind.startswith("dicom") else read_image
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    start = time.perf_counter()
    result = outcome(reader, path)
    seconds = time.perf_counter() - start
    grown = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - peak
    assert isinstance(result, MedsegError), f"{kind}: a header declaring ~2^40 voxels was read"
    assert seconds < 2.0, f"{kind}: refusing took {seconds:.2f} s"
    assert grown < 256 * 2**20, f"{kind}: peak memory grew by {grown / 2**20:.0f} MiB before the refusal"


def _flip_data_byte(data: bytes, header_end: bytes) -> bytes:
    b = bytearray(data)
    b[(data.index(header_end) + len(header_end) + len(data)) // 2] ^= 0x10
    return bytes(b)


def _nifti_datatype(data: bytes, datatype: int) -> bytes:
    b = bytearray(data)
    struct.pack_into("<h", b, 70, datatype)  # bitpix stays 16
    return bytes(b)


SILENT = {  # damage ITK reads without an error, making up the missing voxels
    "mha: DimSize larger than the data": lambda s: _text_line(s["mha"]["int16.mha"], b"DimSize", b" = ", b"6 5 5"),
    "mha: corrupt zlib stream": lambda s: _flip_data_byte(s["mha"]["float32.mha"], b"ElementDataFile = LOCAL\n"),
    "nii: datatype int32 with bitpix 16": lambda s: _nifti_datatype(s["nii"]["int16.nii"], 8),
    "nii: datatype float32 with bitpix 16": lambda s: _nifti_datatype(s["nii"]["int16.nii"], 16),
}


@pytest.mark.parametrize("case", sorted(SILENT))
def test_voxels_missing_from_the_file_are_refused(seeds, work, case):
    path = work / f"silent.{case[:3]}"
    path.write_bytes(SILENT[case](seeds))
    assert isinstance(outcome(read_image, path), MedsegError), f"{case}: read without an error"


# --------------------------------------------------------------------------- the example counts


def test_every_reader_ran_its_examples(record_testsuite_property):
    """Hypothesis ran exactly ``EXAMPLES[reader]`` examples of every fuzz test that ran in this session."""
    ran = {k: v for k, v in RAN.items() if v}
    if not ran:
        pytest.skip("no fuzz test ran before this one")
    record_testsuite_property("examples_per_reader", json.dumps(ran))  # in the JUnit XML report
    assert {k: EXAMPLES[k] for k in ran} == ran
