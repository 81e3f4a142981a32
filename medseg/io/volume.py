"""3D (and N-D) volumes through SimpleITK: NIfTI, NRRD, MetaImage.

Array convention
----------------
Arrays are channel-first ``(C, x, y, z)``: the spatial axes are in ITK *index*
order, i.e. SimpleITK's ``(z, y, x)`` numpy view transposed. ``Geometry``'s
``spacing``, ``origin`` and ``direction`` are exactly what ITK reports (LPS
physical space, direction row-major with the axis directions as columns), so
they match the array axes one to one. Multi-component (vector) images become
channels; scalar images have ``C == 1``.

Precision of the stored geometry
--------------------------------
MHA/MHD keep spacing, origin and direction bit for bit. NRRD keeps them to the
last float64 bit or two (it stores ``direction * spacing``). NIfTI stores
geometry as float32 (and ITK recomputes the direction from a float32
quaternion), so a NIfTI round trip keeps geometry to about 1e-7 (direction
cosines) and 1e-6 relative (spacing/origin); voxel values are always exact.

Integrity
---------
Before ITK reads the voxels, :mod:`medseg.io.volume_checks` refuses a header
declaring more voxels than the file can hold (ITK would allocate them first), a
truncated or corrupt NIfTI or compressed MetaImage file (ITK fills the missing
voxels silently), and puts back the NaN/inf voxels ITK's NIfTI reader replaces
by 0, so that :func:`check_finite` sees them.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from medseg.errors import DataError
from medseg.io.atomic import atomic_path
from medseg.io.base import Geometry, ImageData, ReaderWriter, file_suffix, reader_for, register
from medseg.io.volume_checks import inspect_nifti, read_information, restore_nonfinite
from medseg.io.volume_checks import itk_message as _itk_message

VOLUME_SUFFIXES: tuple[str, ...] = (".nii", ".nii.gz", ".nrrd", ".mha", ".mhd")

# numpy dtypes SimpleITK can hold directly; others are converted on write.
_WRITE_CAST = {np.dtype(bool): np.uint8, np.dtype(np.float16): np.float32}


# --------------------------------------------------------------------------- conversion


def sitk_to_image_data(img: sitk.Image, path: Path | None = None, meta: dict | None = None) -> ImageData:
    """Convert a SimpleITK image to channel-first ``(C, x, y, z)`` :class:`ImageData`."""
    arr = sitk.GetArrayFromImage(img)  # (z, y, x) or (z, y, x, C)
    ndim = img.GetDimension()
    if img.GetNumberOfComponentsPerPixel() > 1:
        arr = np.transpose(arr, (ndim, *range(ndim - 1, -1, -1)))
    else:
        arr = np.transpose(arr, tuple(range(ndim - 1, -1, -1)))[None]
    arr = np.ascontiguousarray(arr)
    geometry = Geometry(
        spacing=tuple(float(v) for v in img.GetSpacing()),
        origin=tuple(float(v) for v in img.GetOrigin()),
        direction=tuple(float(v) for v in img.GetDirection()),
    )
    info = {"pixel_type": img.GetPixelIDTypeAsString(), "components": img.GetNumberOfComponentsPerPixel()}
    info.update(meta or {})
    return ImageData(arr, geometry, path=Path(path) if path is not None else None, meta=info)


def image_data_to_sitk(array: np.ndarray, geometry: Geometry | None = None, *, path: Path | None = None) -> sitk.Image:
    """Convert a channel-first array ``(C, x, y, z)`` plus geometry to a SimpleITK image."""
    arr = np.asarray(array)
    if arr.ndim < 3:
        raise DataError(
            f"expected a channel-first array (C, x, y[, z]), got shape {arr.shape}",
            path=path,
            hint="add a leading channel axis, e.g. array[None]",
        )
    if arr.dtype in _WRITE_CAST:
        arr = arr.astype(_WRITE_CAST[arr.dtype])
    if arr.dtype.kind not in "uif":
        raise DataError(f"cannot write an array of dtype {arr.dtype}", path=path)
    spatial = arr.ndim - 1
    if geometry is None:
        geometry = Geometry.identity(spatial)
    if geometry.ndim != spatial:
        raise DataError(
            f"geometry is {geometry.ndim}-D but the array has {spatial} spatial axes (shape {arr.shape})", path=path
        )
    reverse = tuple(range(spatial, 0, -1))
    if arr.shape[0] == 1:
        img = sitk.GetImageFromArray(np.ascontiguousarray(np.transpose(arr[0], tuple(a - 1 for a in reverse))), isVector=False)
    else:
        img = sitk.GetImageFromArray(np.ascontiguousarray(np.transpose(arr, (*reverse, 0))), isVector=True)
    img.SetSpacing([float(v) for v in geometry.spacing])
    img.SetOrigin([float(v) for v in geometry.origin])
    img.SetDirection([float(v) for v in geometry.direction])
    return img


# --------------------------------------------------------------------------- reader/writer


class SimpleITKReaderWriter(ReaderWriter):
    """NIfTI (``.nii``, ``.nii.gz``), NRRD, MetaImage (``.mha``, ``.mhd``) through SimpleITK."""

    suffixes = VOLUME_SUFFIXES

    def read(self, path: Path) -> ImageData:
        path = Path(path)
        suffix = file_suffix(path)
        raw = inspect_nifti(path) if suffix in (".nii", ".nii.gz") else None
        reader = sitk.ImageFileReader()
        reader.SetFileName(str(path))
        read_information(reader, path)
        try:
            img = reader.Execute()
        except RuntimeError as e:
            raise DataError(
                f"cannot read {suffix} image: {_itk_message(e)}",
                path=path,
                hint="the file is unreadable, truncated or not in the format its ending says; re-export or re-download it",
            ) from None
        image = sitk_to_image_data(img, path, meta={"format": suffix})
        if raw is not None:
            restore_nonfinite(image.array, raw)
        return image

    def write(self, path: Path, array: np.ndarray, geometry: Geometry | None = None) -> None:
        path = Path(path)
        img = image_data_to_sitk(array, geometry, path=path)
        write_sitk_image(img, path)


def write_sitk_image(img: sitk.Image, path: str | Path) -> None:
    """Write a SimpleITK image atomically (``.mhd``: data file first, then the header)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        if file_suffix(path) == ".mhd":
            # The header names its data file, so write both under their final names in a
            # private folder beside the target, then move the data file(s) and the header last.
            tmpdir = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
            try:
                sitk.WriteImage(img, str(tmpdir / path.name), True)
                for f in sorted(tmpdir.iterdir(), key=lambda p: p.name == path.name):
                    os.replace(f, path.parent / f.name)
            finally:
                shutil.rmtree(tmpdir, ignore_errors=True)
        else:
            with atomic_path(path) as tmp:
                sitk.WriteImage(img, str(tmp), True)
    except RuntimeError as e:
        raise DataError(f"cannot write image: {_itk_message(e)}", path=path) from None


register(SimpleITKReaderWriter())


# --------------------------------------------------------------------------- checked reading


def read_volume(
    path: str | Path,
    expect_spatial_dims: int | None = 3,
    *,
    fourth_dim_as_channels: bool = False,
) -> ImageData:
    """Read a volume file (or a DICOM series folder) and check its dimensionality.

    - ``expect_spatial_dims=3``: a 4D file whose extra axes are all of size 1 is
      squeezed to 3D; a real 4D file (time series, stacked modalities) raises
      :class:`DataError` with a hint, unless ``fourth_dim_as_channels`` is set, in
      which case its 4th axis becomes the channel axis (MSD multi-modal images).
    - ``None`` skips the check.
    """
    path = Path(path)
    if path.is_dir():
        from medseg.io.dicom import read_dicom_series

        image = read_dicom_series(path)
    else:
        if not path.is_file():
            raise DataError("file not found", path=path)
        rw = reader_for(path)
        if not isinstance(rw, SimpleITKReaderWriter):
            raise DataError(
                f"'{file_suffix(path)}' is a 2D image format, expected a volume",
                path=path,
                hint=f"3D volumes are read from: {', '.join(VOLUME_SUFFIXES)} or a DICOM series folder",
            )
        image = rw.read(path)
    if expect_spatial_dims is None:
        return image
    n = image.array.ndim - 1
    if n > expect_spatial_dims:
        extra = image.spatial_shape[expect_spatial_dims:]
        if all(s == 1 for s in extra):
            image = _drop_trailing_axes(image, expect_spatial_dims)
        elif fourth_dim_as_channels and n == expect_spatial_dims + 1 and image.array.shape[0] == 1:
            arr = np.ascontiguousarray(np.moveaxis(image.array[0], -1, 0))
            geometry = _sub_geometry(image.geometry, expect_spatial_dims)
            image = ImageData(arr, geometry, image.path, dict(image.meta))
        else:
            shape = " x ".join(str(s) for s in image.spatial_shape)
            raise DataError(
                f"is a {n}D image ({shape}), expected a {expect_spatial_dims}D volume",
                path=path,
                hint=(
                    "a 4D file is a time series or stacked channels: split it into one "
                    f"{expect_spatial_dims}D file per channel (CASE_0000.nii.gz, CASE_0001.nii.gz, ...) or keep one volume"
                ),
            )
    elif n < expect_spatial_dims:
        raise DataError(
            f"is a {n}D image (shape {image.spatial_shape}), expected a {expect_spatial_dims}D volume",
            path=path,
            hint="use the 2D pipeline for 2D images, or export the data as 3D volumes",
        )
    return image


def read_volume_header(path: str | Path, keep: int = 3) -> tuple[tuple[int, ...], Geometry]:
    """The size and geometry of the first ``keep`` axes of a volume file, from its header alone, behind the same
    header guards as :func:`read_volume` (a corrupt header is a :class:`DataError` naming the file)."""
    path = Path(path)
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    read_information(reader, path)
    n = min(keep, reader.GetDimension())
    full = Geometry(spacing=tuple(float(v) for v in reader.GetSpacing()), origin=tuple(float(v) for v in reader.GetOrigin()),
                    direction=tuple(float(v) for v in reader.GetDirection()))
    return tuple(int(v) for v in reader.GetSize()[:n]), _sub_geometry(full, n)


def _sub_geometry(g: Geometry, keep: int) -> Geometry:
    n = g.ndim
    direction = np.asarray(g.direction, dtype=float).reshape(n, n)[:keep, :keep]
    return Geometry(
        spacing=tuple(g.spacing[:keep]),
        origin=tuple(g.origin[:keep]),
        direction=tuple(float(v) for v in direction.ravel()),
    )


def _drop_trailing_axes(image: ImageData, keep: int) -> ImageData:
    arr = image.array.reshape(image.array.shape[: keep + 1])
    return ImageData(arr, _sub_geometry(image.geometry, keep), image.path, dict(image.meta))


def check_finite(image: ImageData, name: str | None = None) -> None:
    """Raise :class:`DataError` when ``image`` has NaN or infinite voxels.

    ``name`` (e.g. the case key) is included in the message.
    """
    arr = image.array
    if arr.dtype.kind not in "fc" or arr.size == 0:
        return
    if np.isfinite(arr.min()) and np.isfinite(arr.max()):
        return
    n_nan = int(np.count_nonzero(np.isnan(arr)))
    n_inf = int(np.count_nonzero(np.isinf(arr)))
    what = f"case '{name}' has" if name else "image has"
    raise DataError(
        f"{what} {n_nan} NaN and {n_inf} infinite voxel(s) of {arr.size}",
        path=image.path,
        hint="fix or remove the case; NaN/inf usually come from a failed conversion or division by zero",
    )
