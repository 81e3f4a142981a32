"""2D raster formats through Pillow: PNG, TIF, GIF, JPG, BMP.

Reading returns ``(C, H, W)`` with the file's own values and these channel
conventions, so that mask decoding can work by meaning rather than raw mode:

- ``1`` (bilevel) becomes one channel of 0/255;
- ``L``/``I``/``I;16``/``F`` stay one channel;
- ``P`` (palette) is expanded to its RGB(A) colours; ``LA`` to L plus alpha;
- ``RGB``/``RGBA`` stay 3/4 channels; ``CMYK``/``YCbCr`` become RGB.

The original mode is kept in ``ImageData.meta["mode"]``.
"""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from medseg.errors import DataError
from medseg.io.atomic import atomic_path
from medseg.io.base import Geometry, ImageData, ReaderWriter, register


# What Pillow's decoders raise on corrupt content (a TIFF entry of the wrong type can surface as a TypeError,
# a short header field as struct.error, a bad palette or table index as IndexError/KeyError).
_CORRUPT = (OSError, SyntaxError, ValueError, TypeError, LookupError, ArithmeticError, struct.error)


def _to_array(img: Image.Image) -> np.ndarray:
    mode = img.mode
    if mode == "1":
        arr = np.asarray(img.convert("L"))
    elif mode == "P":
        has_alpha = "transparency" in img.info or img.palette.mode == "RGBA"
        arr = np.asarray(img.convert("RGBA" if has_alpha else "RGB"))
    elif mode in ("RGB", "RGBA", "L", "LA", "I", "F"):
        arr = np.asarray(img)
    elif mode.startswith("I;16"):
        arr = np.asarray(img).astype(np.uint16)
    else:  # CMYK, YCbCr, HSV, LAB, ...
        arr = np.asarray(img.convert("RGB"))
    if arr.ndim == 2:
        arr = arr[None]
    else:
        arr = np.moveaxis(arr, -1, 0)
    return np.ascontiguousarray(arr)


class PillowReaderWriter(ReaderWriter):
    suffixes = (".png", ".tif", ".tiff", ".gif", ".jpg", ".jpeg", ".bmp")

    def read(self, path: Path) -> ImageData:
        try:
            with Image.open(path) as img:
                img.load()
                mode = img.mode
                arr = _to_array(img)
                dpi = img.info.get("dpi")
        except Image.DecompressionBombError as e:  # a size field far beyond any real image: do not allocate it
            raise DataError(f"image header declares too many pixels to read: {e}", path=path,
                            hint="the header is probably corrupt; re-export the file") from None
        except UnidentifiedImageError:
            raise DataError(
                "not a readable image (unknown or corrupt content)",
                path=path,
                hint="re-export the file, or remove it from the folder",
            ) from None
        except _CORRUPT as e:
            raise DataError(
                f"cannot read image: {e}",
                path=path,
                hint="the file looks truncated or corrupt; re-export or re-download it",
            ) from None
        del dpi  # pixel spacing of 2D files is not trustworthy; unit spacing is used
        return ImageData(arr, Geometry.identity(2), path=path, meta={"mode": mode})

    def write(self, path: Path, array: np.ndarray, geometry: Geometry | None = None) -> None:
        arr = np.asarray(array)
        if arr.ndim == 3:
            if arr.shape[0] == 1:
                arr = arr[0]
            else:
                arr = np.moveaxis(arr, 0, -1)
        if arr.dtype != np.uint8:
            if arr.min() < 0 or arr.max() > 255:
                raise DataError(f"cannot write values outside 0..255 as {path.suffix}", path=path)
            arr = arr.astype(np.uint8)
        with atomic_path(path) as tmp:
            Image.fromarray(np.ascontiguousarray(arr)).save(tmp)


register(PillowReaderWriter())
