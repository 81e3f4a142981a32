"""Which series of a DICOM folder to read: the one named, or by a stated rule.

A folder may hold several series (a study exported flat: the scan, a localizer, a SEG). Without a
Series Instance UID the rule is: leave out non-image objects (modality SEG, RTSTRUCT, SR, KO, PR,
REG), then take the series with the most slice files; two such series of equal size are refused as
ambiguous, listing the series. With a UID, that series or an error listing them all.
"""

from __future__ import annotations

import logging
from pathlib import Path

from medseg.errors import DataError

log = logging.getLogger(__name__)

#: modalities of DICOM objects that are not images to segment
NON_IMAGE_MODALITIES = frozenset({"SEG", "RTSTRUCT", "SR", "KO", "PR", "REG", "RTPLAN", "RTDOSE"})


def choose_series(series: list, folder: Path, series_uid: str | None = None):
    """The chosen one of ``series`` (:class:`~medseg.io.dicom.DicomSeriesInfo`) in ``folder``."""
    listing = "\n".join(f"    - {s.describe()}" for s in series)
    if series_uid is not None:
        matches = [s for s in series if s.uid == series_uid]
        if not matches:
            raise DataError(f"no DICOM series with UID {series_uid}; the folder holds:\n{listing}", path=folder,
                            hint="pass one of the UIDs listed (--series-uid)")
        return matches[0]
    images = [s for s in series if s.modality.upper() not in NON_IMAGE_MODALITIES] or series
    if len(images) == 1:
        return images[0]
    ranked = sorted(images, key=lambda s: len(s.files), reverse=True)
    if len(ranked[0].files) == len(ranked[1].files):
        raise DataError(f"folder holds {len(images)} image series and the two largest have {len(ranked[0].files)} "
                        f"slices each; choose one:\n{listing}", path=folder,
                        hint="pass --series-uid <one of the UIDs above> (series_uid= in Python), or give each series its own folder")
    log.info("%s: %d image series; reading the largest, %s (choose another with --series-uid)", folder, len(images),
             ranked[0].describe())
    return ranked[0]
