"""Which prediction belongs to which truth: label files listed and paired by name, never by position
(the rules are in :mod:`medseg.evaluation.evaluate_dirs`), and field-of-view masks paired to cases."""

from __future__ import annotations

import logging
import re
from pathlib import Path

from medseg.data.files import IMAGE_SUFFIXES
from medseg.data.naming import pairing_key
from medseg.errors import DataError
from medseg.io.base import file_suffix
from medseg.io.volume import VOLUME_SUFFIXES

log = logging.getLogger(__name__)

LABEL_SUFFIXES = (*VOLUME_SUFFIXES, *IMAGE_SUFFIXES)
_SKIP_NAMES = frozenset({"dataset.json", "labels.json", "thumbs.db", "desktop.ini", "splits_final.json", "plans.json"})
_SKIP_STEM = re.compile(r"(?i)_(probabilities|overlay)$")
_EXTRA_ROLE_WORDS = frozenset({"pred", "preds", "prediction", "predictions", "predicted", "output"})


def _stem(path: Path) -> str:
    s = file_suffix(path)
    return path.name[: len(path.name) - len(s)] if s else path.name


def list_label_files(folder: Path, what: str) -> list[Path]:
    """The label files directly in ``folder`` (sorted); :class:`DataError` when there are none."""
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(f"{what} folder not found", path=folder)
    files, skipped = [], []
    for p in sorted(folder.iterdir(), key=lambda p: p.name):
        if p.name.startswith(".") or p.is_dir() or p.name.lower() in _SKIP_NAMES:
            continue
        suffix = file_suffix(p)
        if suffix in (".raw", ".zraw"):  # MetaImage data files
            continue
        if suffix not in LABEL_SUFFIXES:
            skipped.append(p.name)
        elif _SKIP_STEM.search(_stem(p)):
            log.debug("%s: skipped (not a label map)", p)
        else:
            files.append(p)
    if skipped:
        log.warning("%s: skipping %d file(s) that are not label maps: %s", folder, len(skipped), ", ".join(skipped[:10]))
    if not files:
        raise DataError(f"the {what} folder holds no label files", path=folder,
                        hint=f"put the {what} label maps ({', '.join(LABEL_SUFFIXES)}) directly in this folder")
    return files


def _exact_keys(files: list[Path]) -> list[str]:
    stems = [_stem(p) for p in files]
    if all(s.endswith("_0000") and len(s) > 5 for s in stems):
        stems = [s[:-5] for s in stems]
    return stems


def _role_key(key: str) -> str:
    k = pairing_key(key, is_mask=True)
    kept = [t for t in k.split("_") if t not in _EXTRA_ROLE_WORDS]
    return "_".join(kept) if kept else k


def _keyed(files: list[Path], keys: list[str]) -> tuple[dict[str, Path], list[tuple[Path, Path]]]:
    out: dict[str, Path] = {}
    dups = []
    for p, k in zip(files, keys):
        if k in out:
            dups.append((out[k], p))
        else:
            out[k] = p
    return out, dups


def _names(items, limit: int = 10) -> str:
    items = sorted(items)
    return ", ".join(items[:limit]) + (f" ... ({len(items)} in all)" if len(items) > limit else "")


def pair_files(pred_files: list[Path], gt_files: list[Path]) -> list[tuple[str, Path, Path]]:
    """``[(case, prediction, truth)]`` paired by name (see the module docs); unmatched names are a :class:`DataError`."""
    candidates = []
    for keyer in (lambda ks: ks, lambda ks: [_role_key(k) for k in ks]):
        pred, pdup = _keyed(pred_files, keyer(_exact_keys(pred_files)))
        gt, gdup = _keyed(gt_files, keyer(_exact_keys(gt_files)))
        if not pdup and not gdup and set(pred) == set(gt):
            return [(k, pred[k], gt[k]) for k in sorted(gt)]
        candidates.append((pred, gt, pdup, gdup))
    pred, gt, pdup, gdup = min(candidates, key=lambda c: len(set(c[0]) ^ set(c[1])) + len(c[2]) + len(c[3]))
    if pdup or gdup:
        a, b = (pdup or gdup)[0]
        raise DataError(f"{a.name} and {b.name} have the same case name", path=b,
                        hint="give every case one file per folder (same name in both folders)")
    only_pred, only_gt = set(pred) - set(gt), set(gt) - set(pred)
    if only_pred:
        first = pred[sorted(only_pred)[0]]
        raise DataError(f"{len(only_pred)} prediction(s) without a ground truth of the same name: "
                        f"{_names(pred[k].name for k in only_pred)}", path=first.parent,
                        hint=f"add their truth to {next(iter(gt.values())).parent}, or remove them from the predictions")
    first = gt[sorted(only_gt)[0]]
    raise DataError(f"{len(only_gt)} ground truth file(s) without a prediction of the same name: "
                    f"{_names(gt[k].name for k in only_gt)}", path=first.parent,
                    hint="predict them too, or evaluate on a truth folder holding only the predicted cases")


def pair_fov_files(fov_dir: str | Path, keys: list[str]) -> dict[str, Path]:
    files = [p for p in list_label_files(Path(fov_dir), "field-of-view") if not file_suffix(p) in VOLUME_SUFFIXES]
    by_role = {_role_key(k): p for k, p in zip(_exact_keys(files), files)}
    by_exact = dict(zip(_exact_keys(files), files))
    out, missing = {}, []
    for k in keys:
        p = by_exact.get(k) or by_role.get(_role_key(k))
        if p is None:
            missing.append(k)
        else:
            out[k] = p
    if missing:
        raise DataError(f"no field-of-view mask for {len(missing)} case(s): {_names(missing)}", path=fov_dir,
                        hint="give every case a FOV mask of the same name, or leave out --fov")
    return out
