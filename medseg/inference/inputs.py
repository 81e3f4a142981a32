"""What to predict: the cases in a list of files and folders, and reading one.

2D runs take image files and folders of images; 3D runs take volume files, folders of volumes and
DICOM series folders, where names that all end in nnU-Net's ``_0000``-style channel numbers are
grouped into multi-channel cases. Each case has the name its outputs are written under.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from medseg.data.files import IMAGE_SUFFIXES, list_image_files
from medseg.data.volume_case import VolumeCase, load_case
from medseg.errors import ConfigError, DataError
from medseg.io import ImageData, read_image
from medseg.io.base import file_suffix
from medseg.io.volume import VOLUME_SUFFIXES

_CHANNEL_RE = re.compile(r"^(?P<case>.+)_(?P<channel>\d{4})$")


@dataclass(frozen=True)
class InputCase:
    """One case to predict: its name (for the output files) and its file(s): one image, one volume per
    channel, or one DICOM folder."""

    name: str
    paths: tuple[Path, ...]

    @property
    def suffix(self) -> str:
        """The output ending of a volume: the input's format, ``.nii.gz`` for DICOM series."""
        s = file_suffix(self.paths[0]) if self.paths[0].is_file() else ""
        return s if s in VOLUME_SUFFIXES else ".nii.gz"


def _is_dicom_folder(folder: Path) -> bool:
    files = [f for f in folder.iterdir() if f.is_file() and not f.name.startswith(".")]
    if any(f.suffix.lower() == ".dcm" for f in files):
        return True
    if not files or any(file_suffix(f) in VOLUME_SUFFIXES for f in files):
        return False
    from medseg.io.dicom import list_dicom_series

    try:
        return bool(list_dicom_series(folder))
    except DataError:
        return False


def _strip(name: str) -> str:
    s = file_suffix(name)
    return name[: len(name) - len(s)] if s else name


def _images(inputs: list[str | Path]) -> list[InputCase]:
    cases: list[InputCase] = []
    for raw in inputs:
        p = Path(raw)
        if p.is_dir():
            found = list_image_files(p)
            if not found:
                raise DataError("no images in this folder", path=p, hint=f"medseg predicts {', '.join(IMAGE_SUFFIXES)} files")
            cases += [InputCase(f.stem, (f,)) for f in found]
        elif p.exists():
            if file_suffix(p) in VOLUME_SUFFIXES:
                raise DataError("a 3D volume file, but this run was trained on 2D images", path=p,
                                hint=f"predict {', '.join(IMAGE_SUFFIXES)} files with this run, or volumes with a 3D run")
            cases.append(InputCase(p.stem, (p,)))
        else:
            raise DataError("input not found", path=p)
    return cases


def _volumes(inputs: list[str | Path]) -> list[InputCase]:
    entries: list[tuple[str, Path]] = []
    for raw in inputs:
        p = Path(raw)
        if not p.exists():
            raise DataError("input not found", path=p)
        if p.is_file():
            if file_suffix(p) in IMAGE_SUFFIXES:
                raise DataError("a 2D image file, but this run was trained on 3D volumes", path=p,
                                hint=f"predict {', '.join(VOLUME_SUFFIXES)} files or DICOM series folders with this run")
            entries.append((_strip(p.name), p))
        elif _is_dicom_folder(p):
            entries.append((p.name, p))
        else:
            found = []
            for f in sorted(x for x in p.iterdir() if not x.name.startswith(".")):
                if f.is_file() and file_suffix(f) in VOLUME_SUFFIXES:
                    found.append((_strip(f.name), f))
                elif f.is_dir() and _is_dicom_folder(f):
                    found.append((f.name, f))
            if not found:
                raise DataError("no volume files or DICOM series in this folder", path=p,
                                hint=f"medseg predicts {', '.join(VOLUME_SUFFIXES)} files and DICOM series folders")
            entries += found
    if entries and all(_CHANNEL_RE.match(name) for name, _ in entries):
        groups: dict[str, dict[int, Path]] = {}
        for name, p in entries:
            m = _CHANNEL_RE.match(name)
            groups.setdefault(m["case"], {})[int(m["channel"])] = p  # type: ignore[index]
        return [InputCase(k, tuple(g[c] for c in sorted(g))) for k, g in groups.items()]
    return [InputCase(name, (p,)) for name, p in entries]


def collect_inputs(inputs: list[str | Path], dims: int) -> list[InputCase]:
    """The cases in ``inputs`` for a run with ``dims`` spatial axes (see the module docs); a missing input,
    or a folder without anything to predict, is an error."""
    return _images(inputs) if dims == 2 else _volumes(inputs)


def check_output_folder(out_dir: str | Path, inputs: list[str | Path], cases: list[InputCase],
                        force: bool = False) -> None:
    """Refuse an output folder that would put predictions among the scans: the folder of an input (its masks
    would sit beside, and could replace, the user's files) always; a folder inside an input folder (the next
    prediction of that folder would read the masks as scans) unless ``force``."""
    if Path(out_dir).exists() and not Path(out_dir).is_dir():
        raise ConfigError("a file stands where the output folder should be", path=out_dir, hint="choose another --out folder")
    out = Path(out_dir).resolve()
    folders = {Path(p).resolve() for p in inputs if Path(p).is_dir()}
    holders = folders | {p.resolve().parent for case in cases for p in case.paths if p.is_file()}
    holders |= {p.resolve() for case in cases for p in case.paths if p.is_dir()}  # DICOM series folders
    if out in holders:
        raise ConfigError("the output folder holds the scans to predict; their masks would be written among "
                          "(and could replace) them", path=out_dir, hint="choose another --out folder")
    above = sorted(str(h) for h in folders if h in out.parents)
    if above and not force:
        raise ConfigError(f"the output folder lies inside the input folder {above[0]}; predicting that folder again "
                          "would read the masks as scans", path=out_dir,
                          hint="choose an --out folder outside the inputs, or pass --force")


def check_output_files(out_dir: str | Path, cases: list[InputCase], targets: Callable[[InputCase], list[Path]],
                       shared: list[Path], overwrite: bool = False) -> None:
    """Refuse, before anything is written, inputs whose outputs (``targets(case)``) share a name (``a.png``
    and ``a.tif`` both give ``a.png``; ``a.png`` gives ``a_overlay.png``, the mask of an input of that name), and,
    unless ``overwrite``, existing files that an output (or one of the ``shared`` files) would replace."""
    owner: dict[Path, InputCase] = {}
    for case in cases:
        for t in targets(case):
            if t in owner:
                first = owner[t]
                raise ConfigError(f"the inputs {first.paths[0]} and {case.paths[0]} would both write {t.name}",
                                  path=case.paths[0], hint="rename one of them, or predict them into separate --out folders")
            owner[t] = case
    existing = [t for t in [*owner, *shared] if t.exists() or t.is_symlink()]
    if existing and not overwrite:
        names = ", ".join(t.name for t in existing[:5]) + (f" and {len(existing) - 5} more" if len(existing) > 5 else "")
        raise ConfigError(f"{len(existing)} file(s) already in the output folder would be replaced: {names}",
                          path=out_dir, hint="choose an empty --out folder, or pass --overwrite to replace them")


def read_input(case: InputCase, dims: int, num_channels: int | None, series_uid: str | None = None) -> ImageData:
    """The image of one case: a 2D image file as it is, or a volume with its channels stacked and checked
    as for training data; ``series_uid`` names the series of a DICOM folder holding several."""
    if dims == 2:
        return read_image(case.paths[0])
    if series_uid is not None and len(case.paths) == 1 and case.paths[0].is_dir():
        from medseg.io.dicom import read_dicom_series

        return read_dicom_series(case.paths[0], series_uid)
    image, _ = load_case(VolumeCase(case.name, case.paths, None, None, num_channels))
    return image
