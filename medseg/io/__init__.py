"""Readers and writers, one per file format, chosen by file ending.

``read_image(path)`` returns an :class:`ImageData`: a channel-first array plus
its geometry (spacing, origin, direction). ``write_image`` keeps that geometry.
"""

from medseg.io.base import Geometry, ImageData, ReaderWriter, read_image, reader_for, supported_suffixes, write_image

__all__ = ["Geometry", "ImageData", "ReaderWriter", "read_image", "reader_for", "supported_suffixes", "write_image"]
