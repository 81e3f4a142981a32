"""Uploaded scans, checked by their content and stored under names the server chooses.

The kind of an upload is read from its first bytes, never from a name: NIfTI (plain or gzip), NRRD, MetaImage
(``.mha``), PNG, JPEG, TIFF, BMP, or a zip archive of one DICOM series. The stored file is ``input`` plus the
ending of that kind, inside the job's folder; a zip is unpacked member by member into numbered files (member names
are never used as paths), bounded in count and unpacked size, and every member must be DICOM ("DICM" at byte 128).
"""

from __future__ import annotations

import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path

from medseg.errors import DataError

#: kind -> (file ending, spatial dimensions)
KINDS = {"nifti": (".nii", 3), "nifti-gz": (".nii.gz", 3), "nrrd": (".nrrd", 3), "mha": (".mha", 3), "png": (".png", 2),
         "jpeg": (".jpg", 2), "tiff": (".tif", 2), "bmp": (".bmp", 2), "dicom-zip": ("", 3)}
ACCEPTED = "NIfTI (.nii, .nii.gz), NRRD, MetaImage (.mha), PNG, JPEG, TIFF, BMP, or a zip of one DICOM series"
MAX_ZIP_MEMBERS = 5000


@dataclass(frozen=True)
class Upload:
    kind: str
    path: Path      # the stored file, or the folder of a DICOM series
    dims: int
    size: int       # bytes received


def sniff(head: bytes) -> str | None:
    """The kind of a file from its first 512 bytes (or ``None``)."""
    if head[:2] == b"\x1f\x8b":
        return "nifti-gz" if _is_nifti(_gunzip_head(head)) else None
    if _is_nifti(head):
        return "nifti"
    if head.startswith(b"NRRD000"):
        return "nrrd"
    if b"ObjectType = Image" in head[:256] or head.startswith(b"ObjectType"):
        return "mha"
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "png"
    if head.startswith(b"\xff\xd8\xff"):
        return "jpeg"
    if head[:4] in (b"II*\x00", b"MM\x00*"):
        return "tiff"
    if head.startswith(b"BM"):
        return "bmp"
    if head.startswith(b"PK\x03\x04"):
        return "dicom-zip"
    return None


def _gunzip_head(data: bytes) -> bytes:
    try:
        return zlib.decompressobj(16 + 15).decompress(data, 1024)
    except zlib.error:  # a corrupt stream is simply not a NIfTI
        return b""


def _is_nifti(head: bytes) -> bool:
    if len(head) < 348:
        return False
    size_le, size_be = int.from_bytes(head[:4], "little"), int.from_bytes(head[:4], "big")
    return (348 in (size_le, size_be) and head[344:348] in (b"n+1\x00", b"ni1\x00")) or \
        (540 in (size_le, size_be) and head[4:8] in (b"n+2\x00", b"ni2\x00"))


def store(received: Path, folder: Path) -> Upload:
    """Check the received bytes (``received``, a file the server wrote) and place them in ``folder`` as the
    job's input; raises :class:`~medseg.errors.DataError` with what is wrong."""
    with received.open("rb") as f:
        head = f.read(4096)
    size = received.stat().st_size
    kind = sniff(head)
    if kind is None:
        raise DataError(f"the upload is not a file medseg reads (it must be {ACCEPTED}; the kind is read from the content, "
                        "not the name)")
    ending, dims = KINDS[kind]
    if kind == "dicom-zip":
        series = folder / "series"
        series.mkdir()
        _unzip_dicom(received, series)
        received.unlink()
        return Upload(kind, series, dims, size)
    target = folder / f"input{ending}"
    received.rename(target)
    return Upload(kind, target, dims, size)


def _unzip_dicom(archive: Path, series: Path) -> None:
    """Unpack the members as numbered files, streamed in chunks: each must start as DICOM does (checked on its
    first 132 bytes, before more is read), and the bytes unpacked are bounded in all (no zip bomb)."""
    budget = archive.stat().st_size * 20 + (64 << 20)
    try:
        with zipfile.ZipFile(archive) as z:
            members = [m for m in z.infolist() if not m.is_dir()]
            if not members:
                raise DataError("the zip archive is empty: it must hold the DICOM files of one series")
            if len(members) > MAX_ZIP_MEMBERS:
                raise DataError(f"the zip archive holds {len(members)} files, more than {MAX_ZIP_MEMBERS}")
            for i, m in enumerate(members):
                with z.open(m) as src, (series / f"{i:05d}.dcm").open("wb") as dst:
                    head = src.read(132)
                    if head[128:132] != b"DICM":
                        raise DataError("a file in the zip archive is not DICOM (no 'DICM' at byte 128): the archive must "
                                        "hold the files of one DICOM series only")
                    dst.write(head)
                    budget -= len(head)
                    while chunk := src.read(1 << 20):
                        budget -= len(chunk)
                        if budget < 0:
                            raise DataError("the zip archive unpacks to far more than its size (a zip bomb?)")
                        dst.write(chunk)
    except (zipfile.BadZipFile, zipfile.LargeZipFile, NotImplementedError, RuntimeError, EOFError, zlib.error) as e:
        raise DataError(f"the zip archive cannot be read: {e}") from None
