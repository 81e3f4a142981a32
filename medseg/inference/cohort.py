"""Cohort prediction from a manifest: resumable, one failure never stops the others (``medseg predict RUN
--manifest cohort.csv --out OUT``).

- **Manifest**: a CSV with a header; column ``path`` (a volume file, a DICOM series folder, or a 2D image) and
  optionally ``id`` (the output's name; default the input's name); every other column is kept in the status
  file. A folder of studies is accepted too. Missing files and duplicate ids are reported up front, all of them.
- **Status** (``OUT/manifest_status.csv``): one row appended, and flushed to disk, per finished study: its id,
  input, output file, the output's SHA-256, seconds, the quality-control flag and score when the run has a
  quality model, and the manifest's own columns. A rerun skips studies whose output is still there with the
  recorded checksum and redoes the others, so a killed driver loses at most the study in flight.
- **Failures** (``OUT/failures.csv``): id, input and error of each study that failed, rewritten atomically after
  each; ``max_failures`` stops the cohort when more fail (exit status 1).
- **Progress**: done, failed, remaining, studies per minute and ETA, in ``OUT/cohort.log`` and the command's bar.
- Each study goes through the three stages of :mod:`medseg.inference.cohort_stages` (the predictor's ``prepare``,
  ``network`` and ``finish``, the ones ``medseg predict`` runs on files, and the writer), in this process or on Ray
  (:mod:`medseg.inference.cohort_ray`): nothing about reading, sliding windows, TTA or writing is repeated here.
"""

from __future__ import annotations

import csv
import io
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from medseg.errors import ConfigError, DataError
from medseg.inference.cohort_stages import NO_OUTPUT, Study, StudyFailed, inprocess_results
from medseg.inference.inputs import InputCase, check_output_folder, collect_inputs
from medseg.io.atomic import claim_folder, write_text
from medseg.io.checksum import file_sha256

log = logging.getLogger(__name__)

STATUS_CSV = "manifest_status.csv"
FAILURES_CSV = "failures.csv"
COHORT_LOG = "cohort.log"
COHORT_JSON = "cohort.json"
STATUS_FIELDS = ["id", "input", "output", "sha256", "seconds", "check", "qc_score", "note"]


def read_manifest(path: str | Path, dims: int) -> list[Study]:
    """The studies of a manifest CSV (see the module doc); paths relative to the manifest's folder."""
    path = Path(path)
    try:
        with path.open(newline="", encoding="utf-8-sig") as f:
            rows = list(csv.DictReader(f))
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise DataError(f"cannot read the manifest: {e}", path=path) from None
    if not rows or "path" not in rows[0]:
        raise DataError("the manifest needs a header with a 'path' column (and optionally 'id')", path=path,
                        hint="path,id\\nscans/case1.nii.gz,case1")
    reserved = sorted(set(rows[0]) & set(STATUS_FIELDS) - {"id"})
    if reserved:
        raise DataError(f"manifest column(s) {', '.join(reserved)} are names the status file uses for its own values",
                        path=path, hint="rename those columns (e.g. manifest_sha256)")
    missing, studies, seen = [], [], {}
    for i, row in enumerate(rows, 2):
        if None in row:
            raise DataError(f"line {i} has more fields than the header (an unquoted comma?)", path=path,
                            hint="quote values that hold commas")
        raw = (row.get("path") or "").strip()
        p = Path(raw) if Path(raw).is_absolute() else path.parent / raw
        if not raw or not p.exists():
            missing.append(f"line {i}: {raw or '(empty)'}")
            continue
        cases = collect_inputs([p], dims)
        if len(cases) != 1:
            raise DataError(f"line {i}: a study is one file or one DICOM series folder; {raw} holds {len(cases)}", path=path,
                            hint="list each study on its own line")
        case = cases[0]
        name = (row.get("id") or "").strip() or case.name
        check_id(name, path, f"line {i}")
        if name.casefold() in seen:
            raise DataError(f"id '{name}' on lines {seen[name.casefold()]} and {i}: outputs would share a name", path=path,
                            hint="give each study its own id (ids differing only in case count as the same)")
        seen[name.casefold()] = i
        studies.append(Study(name, InputCase(name, case.paths), {k: v for k, v in row.items() if k not in ("path", "id")}))
    if missing:
        shown = "\n".join(f"    - {m}" for m in missing[:20]) + (f"\n    ... and {len(missing) - 20} more" if len(missing) > 20 else "")
        raise DataError(f"{len(missing)} of {len(rows)} studies in the manifest are not found:\n{shown}", path=path,
                        hint="fix the paths (relative ones are read from the manifest's folder) or remove the rows")
    return studies


def check_id(name: str, where: Path, line: str) -> None:
    """Refuse an id that is not one plain file name (it names the output inside OUT)."""
    if (not name or name in (".", "..") or name.startswith(".") or any(c in name for c in "/\\:")
            or any(ord(c) < 32 for c in name)):
        raise DataError(f"{line}: id '{name}' is not a plain file name (no path separators, no leading dot)", path=where,
                        hint="ids name the output files inside OUT")


def studies_of(inputs: list[Path], dims: int) -> list[Study]:
    """A folder (or list) of studies, as :func:`~medseg.inference.inputs.collect_inputs` finds them; two whose outputs
    would share a name (``a.png`` and ``a.jpg``) are refused."""
    studies, seen = [], {}
    for c in collect_inputs(inputs, dims):
        if c.name.casefold() in seen:
            raise DataError(f"{seen[c.name.casefold()].name} and {c.paths[0].name} would both be written as '{c.name}'",
                            path=c.paths[0], hint="rename one, or list them in a manifest with their own ids")
        seen[c.name.casefold()] = c.paths[0]
        studies.append(Study(c.name, c, {}))
    return studies


def finished(out: Path) -> dict[str, dict]:
    """The studies ``OUT/manifest_status.csv`` records whose output is still there with its checksum."""
    status = out / STATUS_CSV
    if not status.is_file():
        return {}
    done = {}
    with status.open(newline="") as f:
        for row in csv.DictReader(f):
            if row.get("sha256") == NO_OUTPUT:  # nothing predicted, nothing to write (a SEG needs a segment)
                done[row["id"]] = row
                continue
            target = out / (row.get("output") or "")
            if row.get("sha256") and target.is_file() and file_sha256(target) == row["sha256"]:
                done[row["id"]] = row
    return done


@dataclass
class CohortResult:
    done: int = 0
    skipped: int = 0
    failed: list[tuple[str, str, str]] = field(default_factory=list)
    stopped: bool = False
    stage_seconds: dict = field(default_factory=dict)  # summed over the studies predicted: read, network, write


def _identity(predictor, fmt: str, series_uid: str | None) -> dict:
    """What a cohort's outputs depend on besides the inputs: the model and the options."""
    return {"model": predictor.identity, "tta": bool(predictor.mirror), "format": fmt, "series_uid": series_uid,
            "temperature": predictor.temperature}


def _check_identity(out: Path, identity: dict) -> None:
    from medseg.io.atomic import write_json
    from medseg.io.json_file import read_json_object

    path = out / COHORT_JSON
    if path.is_file():
        before = read_json_object(path)
        if before != identity:
            changed = ", ".join(f"{k}: {before.get(k)!r} -> {v!r}" for k, v in identity.items() if before.get(k) != v)
            raise ConfigError(f"this cohort folder was predicted with other settings ({changed}); resuming would mix them",
                              path=out, hint="use a new --out folder, or the same run and options")
    else:
        write_json(path, identity)


def _check_header(status: Path, fields: list[str]) -> None:
    if status.is_file():
        with status.open(newline="") as f:
            header = next(csv.reader(f), [])
        if header != fields:
            raise ConfigError("the manifest's columns differ from those of the earlier run into this folder "
                              f"({', '.join(header[len(STATUS_FIELDS):]) or 'none'})", path=status,
                              hint="resume with the same manifest columns, or use a new --out folder")


def run_cohort(predictor, studies: list[Study], out: str | Path, *, fmt: str = "native", max_failures: int | None = None,
               series_uid: str | None = None, roots: tuple[Path, ...] = (),
               on_study: Callable[[str, int, int], None] | None = None, engine=None) -> CohortResult:
    """Predict every study not already finished into ``out`` (see the module doc). Before anything is predicted:
    every study's outputs are checked (a format its input cannot take is refused), an OUT among the inputs is
    refused (``roots``: the folder of studies given, if any), and a folder of an earlier cohort must have been made
    with the same run, options and columns. ``engine(predictor, studies, out, writer, quality, series_uid)`` yields
    (study, status row or :class:`~medseg.inference.cohort_stages.StudyFailed`, seconds per stage) as studies finish,
    in any order (default: :func:`~medseg.inference.cohort_stages.inprocess_results`; the Ray engine:
    :class:`~medseg.inference.cohort_ray.RayEngine`); this process alone writes the status, failures and log."""
    out = Path(out)
    writer = predictor.make_writer(fmt, overlays=False)
    for study in studies:
        writer.targets(out, study.case, False, False)  # e.g. --format dicom-seg for a NIfTI study: refused now
    check_output_folder(out, [*roots, *(p for s in studies for p in s.case.paths)], [s.case for s in studies])
    extra_fields = sorted({k for s in studies for k in s.extra})
    status = out / STATUS_CSV
    _check_header(status, STATUS_FIELDS + extra_fields)
    claim_folder(out, "predict --manifest")
    _check_identity(out, _identity(predictor, fmt, series_uid))
    done = finished(out)
    todo = [s for s in studies if s.id not in done]
    result = CohortResult(skipped=len(studies) - len(todo))
    earlier = _read_failures(out)
    new_file = not status.is_file()
    started = time.monotonic()
    reached: set[str] = set()
    results = (engine or inprocess_results)(predictor, todo, out, writer, predictor.quality is not None, series_uid)
    with status.open("a", newline="") as sf, (out / COHORT_LOG).open("a") as logf:
        w = csv.DictWriter(sf, fieldnames=STATUS_FIELDS + extra_fields, extrasaction="ignore")
        if new_file:
            w.writeheader()
        note = f"{time.strftime('%Y-%m-%d %H:%M:%S')} cohort: {len(studies)} studies, {result.skipped} already done, {len(todo)} to do"
        logf.write(note + "\n")
        logf.flush()
        try:
            for i, (study, row, timings) in enumerate(results, 1):
                reached.add(study.id)
                if isinstance(row, StudyFailed):
                    log.error("%s: %s", study.id, row.reason)
                    result.failed.append((study.id, str(study.case.paths[0]), row.reason))
                else:
                    w.writerow(row)
                    sf.flush()
                    os.fsync(sf.fileno())
                    result.done += 1
                    for stage, seconds in timings.items():
                        result.stage_seconds[stage] = result.stage_seconds.get(stage, 0.0) + seconds
                _write_failures(out, result.failed + [f for f in earlier if f[0] not in reached and f[0] not in done])
                elapsed = time.monotonic() - started
                rate = i / elapsed if elapsed > 0 else 0.0
                line = (f"{time.strftime('%H:%M:%S')} done {result.done + result.skipped}, failed {len(result.failed)}, "
                        f"remaining {len(todo) - i}; {60 * rate:.1f} studies/min, ETA {(len(todo) - i) / rate if rate else 0:.0f} s")
                logf.write(line + "\n")
                logf.flush()
                if on_study:
                    on_study(study.id, i, len(todo))
                if max_failures is not None and len(result.failed) > max_failures:
                    result.stopped = True
                    logf.write(f"stopped: {len(result.failed)} failures, more than --max-failures {max_failures}\n")
                    break
        finally:
            close = getattr(results, "close", None)
            if close:
                close()  # an engine's studies in flight are cancelled
        if result.stage_seconds:
            logf.write("seconds per stage, summed: " + ", ".join(f"{k} {v:.1f}" for k, v in result.stage_seconds.items()) + "\n")
    if (out / FAILURES_CSV).is_file() and not _read_failures(out):
        (out / FAILURES_CSV).unlink()  # an earlier run's failures, all redone now
    return result


def _read_failures(out: Path) -> list[tuple[str, str, str]]:
    path = out / FAILURES_CSV
    if not path.is_file():
        return []
    with path.open(newline="") as f:
        return [(r["id"], r["input"], r["error"]) for r in csv.DictReader(f)]


def _write_failures(out: Path, failed: list[tuple[str, str, str]]) -> None:
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["id", "input", "error"])
    w.writerows(failed)
    write_text(out / FAILURES_CSV, buf.getvalue())

