"""How file names say which case a file belongs to, and what it is.

- :func:`pairing_key`: a file name stem without its role words (``21_training`` -> ``21``,
  ``21_manual1`` -> ``21``), so that an image and its masks share a key;
- :func:`pattern_key_fn`: a key taken from a user's regular expression;
- :func:`prefix_pairs`: the fallback when keys do not match: each mask goes to the one image whose
  stem is the longest prefix of the mask's stem (``01.jpg`` <- ``01_1stObs.png``);
- :func:`file_role`: whether a file in a flat folder is an image, a mask or a field of view.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

from medseg.errors import ConfigError, DataError

#: name tokens that say what a file is rather than which case it belongs to
ROLE_TOKENS = frozenset({
    "image", "img", "imgs", "images", "training", "train", "test", "testing", "val", "validation",
    "manual", "manual1", "manual2", "mask", "masks", "label", "labels", "seg", "segmentation",
    "segmentations", "gt", "groundtruth", "annotation", "annotations", "anno", "fov", "roi",
})
#: tokens that make a file in a flat folder a label mask
MASK_TOKENS = frozenset({
    "mask", "masks", "label", "labels", "seg", "segmentation", "segmentations", "gt", "groundtruth",
    "manual", "manual1", "manual2", "annotation", "annotations", "anno",
})
#: tokens that make a file in a flat folder a field-of-view mask
FOV_TOKENS = frozenset({"fov", "roi"})
#: folder and name words that name a subset of an official split, not a patient
SPLIT_WORDS = frozenset({"train", "training", "trainval", "val", "valid", "validation", "test", "testing"})

_TOKEN_SPLIT = re.compile(r"[_\-. ()\[\]]+")
_SEPARATORS = "_-. ()[]"


def tokens(stem: str) -> list[str]:
    """The lower-case words of a name stem (split at ``_ - . ( ) [ ]`` and spaces)."""
    return [t for t in _TOKEN_SPLIT.split(stem.lower()) if t]


def file_role(stem: str) -> str:
    """``"fov"``, ``"mask"`` or ``"image"``: what a file in a flat folder is, by the words of its name."""
    words = set(tokens(stem))
    if words & FOV_TOKENS:
        return "fov"
    if words & MASK_TOKENS:
        return "mask"
    return "image"


def pairing_key(stem: str, is_mask: bool) -> str:
    """The case key of a file name stem: the stem without its role words.

    ``21_training`` -> ``21``; ``21_manual1`` -> ``21``; ``21_training_mask`` ->
    ``21``; ``case7_mask_1`` -> ``case7`` (in a mask name a number right after a
    role word is an instance index); ``patient003_slice012`` unchanged.
    The instance index is kept when nothing else would remain (``mask_1`` ->
    ``1``, to pair with ``img_1``). A stem made only of role words keys as itself.
    """
    words = tokens(stem)
    kept: list[str] = []
    index_tokens: list[str] = []
    prev_role = False
    for t in words:
        if t in ROLE_TOKENS:
            prev_role = True
            continue
        if is_mask and prev_role and t.isdigit():
            index_tokens.append(t)
        else:
            kept.append(t)
        prev_role = False
    if not kept:
        kept = index_tokens
    if not kept:
        return "_".join(words) if words else stem.lower()
    return "_".join(kept)


def pattern_key_fn(pattern: str, what: str, group_name: str) -> Callable[[Path], str]:
    """A function giving a file's key from the regular expression ``pattern`` (its group
    ``group_name``, else group 1, else the whole match); a file that does not match is an error."""
    try:
        rx = re.compile(pattern)
    except re.error as e:
        flag = "--" + what.replace(" ", "-")
        raise ConfigError(f"{flag}: invalid {what} regular expression {pattern!r}: {e}",
                          hint="fix the regular expression (e.g. '(?P<key>case\\d+)')") from None

    def key(path: Path) -> str:
        m = rx.search(path.stem)
        if m is None:
            raise DataError(
                f"file name '{path.stem}' does not match the {what} {pattern!r}",
                path=path,
                hint=f"adjust the {what} so that it matches every file name",
            )
        if group_name in rx.groupindex:
            value = m.group(group_name)
        elif rx.groups >= 1:
            value = m.group(1)
        else:
            value = m.group(0)
        if not value:
            raise DataError(f"the {what} {pattern!r} matched an empty {group_name} in '{path.stem}'", path=path)
        return value

    return key


def _is_prefix(prefix: str, name: str) -> bool:
    """``prefix`` begins ``name`` and ends at a word boundary of it (case-insensitive)."""
    p, n = prefix.lower(), name.lower()
    return len(n) > len(p) and n.startswith(p) and (n[len(p)] in _SEPARATORS or p[-1] in _SEPARATORS)


def prefix_pairs(images: Sequence[Path], masks: Iterable[Path]) -> tuple[dict[Path, list[Path]], list[Path]]:
    """Pair each mask with the one image whose stem is the longest prefix of the mask's stem
    (ending at a word boundary: ``01`` is a prefix of ``01_1stObs`` but not of ``011_1stObs``).

    Returns ``(masks by image, masks that no image stem begins)``. An image that receives
    several masks is ambiguous (two raters, or stems that nest): :class:`DataError` lists them.
    """
    by_length = sorted(images, key=lambda p: -len(p.stem))
    paired: dict[Path, list[Path]] = {}
    unmatched: list[Path] = []
    for m in masks:
        image = next((p for p in by_length if _is_prefix(p.stem, m.stem)), None)
        if image is None:
            unmatched.append(m)
        else:
            paired.setdefault(image, []).append(m)
    ambiguous = {p: ms for p, ms in paired.items() if len(ms) > 1}
    if ambiguous:
        lines = [f"{p.name} <- {', '.join(sorted(m.name for m in ms))}" for p, ms in sorted(ambiguous.items())[:5]]
        more = f" ... ({len(ambiguous)} images in all)" if len(ambiguous) > 5 else ""
        first = next(iter(sorted(ambiguous)))
        raise DataError(
            "pairing masks by name prefix is ambiguous: " + "; ".join(lines) + more,
            path=first,
            hint="keep one mask per image in the mask folder (e.g. one rater's), or give --pair-pattern with a "
            "(?P<key>...) group that tells them apart",
        )
    return paired, unmatched
