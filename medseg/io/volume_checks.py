"""Checks a volume file must pass before SimpleITK reads its voxels.

Declared size
-------------
A header states the image size; ITK allocates it before reading the data, so a
corrupt size field (``DimSize = 16384 16384 16384``) would allocate terabytes.
:func:`read_information` reads the header alone and refuses an image with no
voxels, or one larger than its file could hold: the data on disk times
deflate's largest compression ratio (1032:1; gzip and zlib are the only
compressions ITK reads these formats with).

Integrity
---------
ITK reads a truncated ``.nii``/``.nii.gz`` without complaint (missing voxels are
silently filled), and its NIfTI reader replaces NaN/inf voxels by 0. Before a
NIfTI file is read its header is parsed and the file is checked to hold all the
voxels the header promises (integer types: through the gzip trailer; float
types: by reading the voxel data, whose NaN/inf are then put back, so that
:func:`check_finite` sees them). The voxel size is the one ITK uses, that of the
header's datatype (``bitpix`` only for datatypes ITK does not know).

GDCM allocates what a DICOM file's meta header declares, so :func:`dicom_file_meta`
checks those lengths before a folder is scanned.

ITK likewise fills the voxels missing from a compressed MetaImage (``.mha``, or
a ``.mhd`` with one data file) with zeros, and ignores a corrupt zlib stream;
its compressed data is decompressed once (in chunks) and must be complete.
"""

from __future__ import annotations

import gzip
import logging
import math
import os
import re
import struct
import zlib
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from medseg.errors import DataError
from medseg.io.base import file_suffix

logger = logging.getLogger(__name__)

TRUNCATED_HINT = "the file is truncated or corrupt (an interrupted copy or download?); re-export or re-download it"
#: Deflate (zlib, gzip) never expands data more than this.
MAX_COMPRESSION_RATIO = 1032
_NIFTI_FLOAT = {16: "f4", 64: "f8"}  # NIfTI datatype codes of real float voxels
#: Bytes per voxel of each NIfTI datatype code (what niftilib, and so ITK, reads).
_NIFTI_BYTES = {2: 1, 4: 2, 8: 4, 16: 4, 32: 8, 64: 8, 128: 3, 256: 1, 512: 2, 768: 4, 1024: 8, 1280: 8,
                1536: 16, 1792: 16, 2048: 32, 2304: 4}


def itk_message(err: Exception) -> str:
    """The useful part of an ITK exception (drops the C++ source-location lines)."""
    lines = [ln.strip() for ln in str(err).splitlines() if ln.strip()]
    keep = [
        ln for ln in lines if not ln.startswith("Exception thrown") and not re.search(r"\.(cxx|hxx|txx|h):\d+:$", ln)
    ]
    text = " ".join(keep or lines)
    for prefix in ("sitk::ERROR:", "ITK ERROR:"):
        text = text.replace(prefix, "")
    return re.sub(r"\s+", " ", text).strip()[:400]


# --------------------------------------------------------------------------- declared size


def _meta_header(path: Path) -> tuple[dict[str, str], int]:
    """A MetaImage header's ``key = value`` fields, and the offset where LOCAL voxel data starts.

    ITK's MetaImage reader crashes the process (segfault or abort) on an ``NDims``
    below 1 or above 64; SimpleITK reads at most 5 dimensions, so an ``NDims`` that
    is not a whole number from 1 to 9 is refused here, before ITK sees the file.
    """
    with open(path, "rb") as f:
        head = f.read(1 << 16)
    fields: dict[str, str] = {}
    offset = 0
    for line in head.split(b"\n"):
        offset += len(line) + 1
        key, _, value = line.partition(b"=")
        fields[key.strip().decode("latin-1")] = value.strip().decode("latin-1")
        if key.strip() == b"ElementDataFile":
            break
    ndims = fields.get("NDims", "")
    if not (ndims.isascii() and ndims.isdigit() and 1 <= int(ndims) <= 9):
        raise DataError(f"invalid MetaImage header (NDims = {ndims[:40]!r})", path=path, hint=TRUNCATED_HINT)
    return fields, offset


def _meta_data_source(path: Path, fields: dict[str, str], offset: int) -> tuple[Path, int, bool] | None:
    """Where a MetaImage's voxel data is: (file, offset, compressed); ``None`` for a list or pattern of files."""
    name = fields.get("ElementDataFile", "LOCAL")
    compressed = fields.get("CompressedData", "False").lower() == "true"
    if name == "LOCAL":
        return path, offset, compressed
    if name.upper().startswith("LIST") or "%" in name or " " in name:
        return None
    return path.parent / name, 0, compressed


def _check_meta_data(source: Path, offset: int, need: int, path: Path) -> None:
    """A compressed MetaImage's zlib stream must decompress without error to at least ``need`` bytes."""
    total, pending = 0, b""
    inflate = zlib.decompressobj()
    with open(source, "rb") as f:
        f.seek(offset)
        try:  # in bounded pieces; past the last voxel only to check the stream's checksum
            while not inflate.eof and total <= need:
                pending = pending or f.read(1 << 20)
                if not pending:
                    break
                total += len(inflate.decompress(pending, min(need - total + 1, 1 << 24)))
                pending = inflate.unconsumed_tail
        except zlib.error as e:
            raise DataError(f"compressed voxel data is corrupt ({e})", path=path, hint=TRUNCATED_HINT) from None
    if total < need:
        raise DataError(f"compressed voxel data is incomplete: {total} of {need} bytes", path=path, hint=TRUNCATED_HINT)


def _stored_bytes_per_voxel(reader: sitk.ImageFileReader) -> int | None:
    """Bytes per voxel as a DICOM file stores them (BitsAllocated / 8; the samples per pixel are ITK's components),
    or ``None`` when the header does not say (not DICOM)."""
    try:
        if not reader.HasMetaDataKey("0028|0100"):
            return None
        return max(1, int(str(reader.GetMetaData("0028|0100")).strip()) // 8)
    except (RuntimeError, ValueError):
        return None


def read_information(reader: sitk.ImageFileReader, path: Path, ratio: int | None = MAX_COMPRESSION_RATIO) -> None:
    """Read the header of ``path`` into ``reader`` and refuse a size the file cannot hold (see the module doc).

    ``ratio``: the most bytes of voxels one byte of the file can hold (``None``: no bound is known); a
    MetaImage header says itself whether its data is compressed.
    """
    suffix = file_suffix(path)
    meta = _meta_header(path) if suffix in (".mha", ".mhd") else None
    try:
        reader.ReadImageInformation()
        size = [int(s) for s in reader.GetSize()]
        pixel = sitk.GetPixelIDValueAsString(reader.GetPixelIDValue())  # e.g. "vector of 16-bit signed integer"
    except RuntimeError as e:
        raise DataError(
            f"cannot read {suffix} image: {itk_message(e)}",
            path=path,
            hint="the file is unreadable, truncated or not in the format its ending says; re-export or re-download it",
        ) from None
    bits = re.search(r"(\d+)-bit", pixel)
    itemsize = (int(bits.group(1)) // 8 if bits else 1) * (2 if pixel.startswith("complex") else 1)
    stored = _stored_bytes_per_voxel(reader)
    if stored is not None:  # DICOM: GDCM's output type (float after a rescale slope) is larger than what is stored
        itemsize = stored
    shape = " x ".join(str(s) for s in size)
    if min(size, default=0) < 1:
        raise DataError(f"the header declares an image with no voxels ({shape})", path=path, hint=TRUNCATED_HINT)
    need = math.prod(size) * reader.GetNumberOfComponents() * itemsize
    source = _meta_data_source(path, *meta) if meta is not None else (path, 0, ratio != 1)
    if source is None or ratio is None:
        return
    data, offset, compressed = source
    try:
        on_disk = data.stat().st_size - offset
    except (OSError, ValueError):  # a missing data file, or a name no file can have: ITK says so
        return
    if need > on_disk * (MAX_COMPRESSION_RATIO if compressed else 1):
        raise DataError(f"the header declares an image of {shape} voxels ({need} bytes), more than the file's "
                        f"{on_disk} bytes can hold", path=path, hint=TRUNCATED_HINT)
    if meta is not None and compressed:
        _check_meta_data(data, offset, need, path)


# --------------------------------------------------------------------------- DICOM file meta header

_DICOM_SHORT_VRS = {b"AE", b"AS", b"AT", b"CS", b"DA", b"DS", b"DT", b"FL", b"FD", b"IS", b"LO", b"LT", b"PN", b"SH",
                    b"SL", b"SS", b"ST", b"TM", b"UI", b"UL", b"US"}


def dicom_file_meta(path: Path) -> dict[int, bytes]:
    """The file meta elements (group 0002) of a DICOM file, ``{element number: value}``; empty without "DICM".

    GDCM allocates, and fills, the length a meta element declares (up to 4 GiB; it reads an unknown VR as
    one with a 4-byte length) before it finds the file too short, even while only scanning a folder, so a
    length beyond the end of the file is refused here.
    """
    with open(path, "rb") as f:
        head = f.read(1 << 12)
        size = os.fstat(f.fileno()).st_size
    out: dict[int, bytes] = {}
    pos = 132 if head[128:132] == b"DICM" else len(head)
    while pos + 8 <= len(head) and head[pos : pos + 2] == b"\x02\x00":
        element, vr = int.from_bytes(head[pos + 2 : pos + 4], "little"), head[pos + 4 : pos + 6]
        if vr in _DICOM_SHORT_VRS:
            length, pos = int.from_bytes(head[pos + 6 : pos + 8], "little"), pos + 8
        else:
            length, pos = int.from_bytes(head[pos + 8 : pos + 12], "little"), pos + 12
        if length > size - pos:
            raise DataError(f"DICOM file meta element (0002,{element:04X}) declares {length} bytes, more than the "
                            "file holds", path=path, hint=TRUNCATED_HINT)
        out[element] = head[pos : pos + length]
        pos += length
    return out


# --------------------------------------------------------------------------- NIfTI integrity


def _nifti_header(header: bytes, path: Path) -> dict:
    """The fields of a NIfTI-1/2 header needed to locate the voxel data."""
    if len(header) < 348:
        raise DataError(f"NIfTI header is incomplete ({len(header)} bytes)", path=path, hint=TRUNCATED_HINT)
    for endian in "<>":
        size = struct.unpack(endian + "i", header[:4])[0]
        if size == 348:  # NIfTI-1
            dims = struct.unpack(endian + "8h", header[40:56])
            datatype, bitpix = struct.unpack(endian + "2h", header[70:74])
            vox_offset = struct.unpack(endian + "f", header[108:112])[0]
            pixdim = struct.unpack(endian + "8f", header[76:108])
            first = 352
            break
        if size == 540:  # NIfTI-2
            if len(header) < 540:
                raise DataError("NIfTI-2 header is incomplete", path=path, hint=TRUNCATED_HINT)
            datatype, bitpix = struct.unpack(endian + "2h", header[12:16])
            dims = struct.unpack(endian + "8q", header[16:80])
            vox_offset = struct.unpack(endian + "q", header[168:176])[0]
            pixdim = struct.unpack(endian + "8d", header[104:168])
            first = 544
            break
    else:
        raise DataError("not a NIfTI file (bad header size field)", path=path, hint="check the file's format and ending")
    n = int(dims[0])
    if not 1 <= n <= 7:
        raise DataError(f"invalid NIfTI header (dim[0] = {n})", path=path)
    if not math.isfinite(vox_offset):
        raise DataError(f"invalid NIfTI header (vox_offset = {vox_offset})", path=path, hint=TRUNCATED_HINT)
    vox_offset = max(int(vox_offset), first)
    count = 1
    for d in dims[1 : n + 1]:
        count *= max(int(d), 1)
    nbytes = count * _NIFTI_BYTES.get(int(datatype), max(int(bitpix), 8) // 8)
    return {
        "endian": endian,
        "datatype": int(datatype),
        "count": count,
        "vox_offset": vox_offset,
        "need": vox_offset + nbytes,
        "spacing": tuple(float(v) for v in pixdim[1 : min(n, 3) + 1]),
    }


def _read_nifti_raw(path: Path, gz: bool) -> bytes:
    """The whole (decompressed) file; :class:`DataError` when the gzip stream is broken."""
    try:
        if gz:
            with gzip.open(path, "rb") as f:
                return f.read()
        return path.read_bytes()
    except (EOFError, zlib.error, gzip.BadGzipFile) as e:
        raise DataError(f"compressed data is incomplete or corrupt ({e})", path=path, hint=TRUNCATED_HINT) from None


def _check_size(have: int, hdr: dict, path: Path) -> None:
    if have < hdr["need"]:
        raise DataError(
            f"file is truncated: it holds {have} bytes, its header needs {hdr['need']}", path=path, hint=TRUNCATED_HINT
        )


def inspect_nifti(path: str | Path) -> np.ndarray | None:
    """Check that a ``.nii``/``.nii.gz`` holds all voxels its header promises.

    Raises :class:`DataError` for a truncated or corrupt file. For float voxel
    types the voxel data is returned (flat, file order) so that the caller can
    restore NaN/inf, which ITK's NIfTI reader silently replaces by 0; otherwise
    ``None``. Integer ``.nii.gz`` files are checked through the gzip trailer
    (uncompressed size), decompressing fully only when it disagrees.
    """
    path = Path(path)
    gz = file_suffix(path) == ".nii.gz"
    try:
        if gz:
            try:
                with gzip.open(path, "rb") as f:
                    head = f.read(544)
            except (OSError, EOFError, zlib.error) as e:
                raise DataError(f"not a readable gzip file: {e}", path=path, hint=TRUNCATED_HINT) from None
        else:
            with open(path, "rb") as f:
                head = f.read(544)
        hdr = _nifti_header(head, path)
        bad = [i for i, v in enumerate(hdr["spacing"]) if not (math.isfinite(v) and v > 0)]
        if bad:
            logger.warning("%s: the header's voxel spacing (pixdim) is %s along axis %s, not a positive length; it is "
                           "read as 1 mm, so sizes and distances in mm are not physical. Fix the header if you can",
                           path, ", ".join(f"{hdr['spacing'][i]:g}" for i in bad), ", ".join(str(i) for i in bad))
        dtype = _NIFTI_FLOAT.get(hdr["datatype"])
        if dtype is not None:
            raw = _read_nifti_raw(path, gz)
            _check_size(len(raw), hdr, path)
            return np.frombuffer(raw, dtype=hdr["endian"] + dtype, count=hdr["count"], offset=hdr["vox_offset"])
        if not gz:
            _check_size(path.stat().st_size, hdr, path)
            return None
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            if f.tell() >= 4:
                f.seek(-4, os.SEEK_END)
                if struct.unpack("<I", f.read(4))[0] == hdr["need"] % (1 << 32):
                    return None  # the trailer agrees with the header: complete
        # Truncated, or multi-member / trailing data: decompress to be sure.
        total = 0
        try:
            with gzip.open(path, "rb") as f:
                while chunk := f.read(1 << 22):
                    total += len(chunk)
        except (EOFError, zlib.error, gzip.BadGzipFile) as e:
            raise DataError(f"compressed data is incomplete or corrupt ({e})", path=path, hint=TRUNCATED_HINT) from None
        _check_size(total, hdr, path)
        return None
    except OSError as e:
        raise DataError(f"cannot read file: {e}", path=path) from None


def restore_nonfinite(arr: np.ndarray, raw: np.ndarray) -> None:
    """Put the file's NaN/inf back where ITK wrote 0 (scalar images only)."""
    if arr.shape[0] != 1 or raw.size != arr[0].size or arr.dtype.kind != "f":
        return
    bad = ~np.isfinite(raw)
    if not bad.any():
        return
    mask = bad.reshape(arr.shape[1:], order="F")  # NIfTI voxel order: x fastest = our (x, y, z) axes
    arr[0][mask] = raw.reshape(arr.shape[1:], order="F")[mask]
