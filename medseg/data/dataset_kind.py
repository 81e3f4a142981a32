"""Which kind of dataset a folder holds: 3D volumes (so `medseg train` takes the 3D pipeline) or 2D images."""

from __future__ import annotations

from pathlib import Path

from medseg.data.files import IMAGE_SUFFIXES
from medseg.errors import DataError
from medseg.io.base import file_suffix
from medseg.io.volume import VOLUME_SUFFIXES


def _visible(p: Path) -> bool:
    return not p.name.startswith(".")


def _holds_volumes(folder: Path) -> bool:
    for p in filter(_visible, folder.iterdir()):
        if p.is_file() and file_suffix(p) in VOLUME_SUFFIXES:
            return True
        if p.is_dir() and any(f.suffix.lower() == ".dcm" for f in p.iterdir() if f.is_file()):
            return True  # a DICOM series folder per case
    return False


def is_volume_dataset(path: str | Path) -> bool:
    """Whether ``path`` looks like a 3D dataset folder (so `medseg train` takes the 3D pipeline).

    True for a folder with ``dataset.json`` (Decathlon / nnU-Net), an ``imagesTr/``
    folder, or an ``images/`` folder holding volume files (``.nii.gz``, ``.nrrd``,
    ``.mha``, ...) or DICOM series folders (``*.dcm`` files), or, without ``images/``,
    a tree holding DICOM SEG files. Reads no image data.
    """
    root = Path(path)
    if not root.is_dir():
        return False
    if (root / "dataset.json").is_file() or (root / "imagesTr").is_dir():
        return True
    images = root / "images"
    if not images.is_dir():
        from medseg.data.dicom_layout import has_seg_files

        return has_seg_files(root)  # DICOM series with DICOM SEG labels
    if not _holds_volumes(images):
        return False
    flat = [p for p in filter(_visible, images.iterdir()) if p.is_file()]
    pictures = [p for p in flat if p.suffix.lower() in IMAGE_SUFFIXES]
    if pictures:  # neither pipeline can read the other kind: say so instead of failing on a missing labels/ folder
        volumes = [p.name for p in flat if file_suffix(p) in VOLUME_SUFFIXES]
        raise DataError(f"the folder holds {len(pictures)} 2D image(s) and {len(volumes)} volume(s) "
                        f"({', '.join(volumes[:3])}{' ...' if len(volumes) > 3 else ''})", path=images,
                        hint="keep 2D images and volumes in separate dataset folders")
    return True
