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
- Each study goes through :meth:`~medseg.inference.predictor.Predictor.predict_case`, the path ``medseg predict``
  takes for files: nothing about reading, sliding windows, TTA or writing is repeated here.
"""

from __future__ import annotations

import csv
import hashlib
import io
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from medseg.errors import DataError, MedsegError
from medseg.inference.inputs import InputCase, collect_inputs
from medseg.io.atomic import claim_folder, write_text

log = logging.getLogger(__name__)

STATUS_CSV = "manifest_status.csv"
FAILURES_CSV = "failures.csv"
COHORT_LOG = "cohort.log"
STATUS_FIELDS = ["id", "input", "output", "sha256", "seconds", "check", "qc_score"]


@dataclass
class Study:
    id: str
    case: InputCase
    extra: dict = field(default_factory=dict)


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
    missing, studies, seen = [], [], {}
    for i, row in enumerate(rows, 2):
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
        if name in seen:
            raise DataError(f"id '{name}' on lines {seen[name]} and {i}: outputs would share a name", path=path,
                            hint="give each study its own id")
        seen[name] = i
        studies.append(Study(name, InputCase(name, case.paths), {k: v for k, v in row.items() if k not in ("path", "id")}))
    if missing:
        shown = "\n".join(f"    - {m}" for m in missing[:20]) + (f"\n    ... and {len(missing) - 20} more" if len(missing) > 20 else "")
        raise DataError(f"{len(missing)} of {len(rows)} studies in the manifest are not found:\n{shown}", path=path,
                        hint="fix the paths (relative ones are read from the manifest's folder) or remove the rows")
    return studies


def studies_of(inputs: list[Path], dims: int) -> list[Study]:
    """A folder (or list) of studies, as :func:`~medseg.inference.inputs.collect_inputs` finds them."""
    return [Study(c.name, c) for c in collect_inputs(inputs, dims)]


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def finished(out: Path) -> dict[str, dict]:
    """The studies ``OUT/manifest_status.csv`` records whose output is still there with its checksum."""
    status = out / STATUS_CSV
    if not status.is_file():
        return {}
    done = {}
    with status.open(newline="") as f:
        for row in csv.DictReader(f):
            target = out / (row.get("output") or "")
            if row.get("sha256") and target.is_file() and _sha256(target) == row["sha256"]:
                done[row["id"]] = row
    return done


@dataclass
class CohortResult:
    done: int = 0
    skipped: int = 0
    failed: list[tuple[str, str, str]] = field(default_factory=list)
    stopped: bool = False


def run_cohort(predictor, studies: list[Study], out: str | Path, *, fmt: str = "native", max_failures: int | None = None,
               series_uid: str | None = None, on_study: Callable[[str, int, int], None] | None = None) -> CohortResult:
    """Predict every study not already finished into ``out`` (see the module doc)."""
    out = Path(out)
    claim_folder(out, "predict --manifest")
    writer = predictor.make_writer(fmt, overlays=False)
    done = finished(out)
    todo = [s for s in studies if s.id not in done]
    result = CohortResult(skipped=len(studies) - len(todo))
    extra_fields = sorted({k for s in studies for k in s.extra})
    status = out / STATUS_CSV
    new_file = not status.is_file()
    quality = predictor.quality is not None
    started = time.monotonic()
    with status.open("a", newline="") as sf, (out / COHORT_LOG).open("a") as logf:
        w = csv.DictWriter(sf, fieldnames=STATUS_FIELDS + extra_fields, extrasaction="ignore")
        if new_file:
            w.writeheader()
        note = f"{time.strftime('%Y-%m-%d %H:%M:%S')} cohort: {len(studies)} studies, {result.skipped} already done, {len(todo)} to do"
        logf.write(note + "\n")
        logf.flush()
        for i, study in enumerate(todo, 1):
            t0 = time.monotonic()
            try:
                target, _, pred = predictor.predict_case(study.case, out, writer, quality=quality, series_uid=series_uid)
                row = {"id": study.id, "input": str(study.case.paths[0]), "output": target.name, "sha256": _sha256(target),
                       "seconds": f"{time.monotonic() - t0:.3f}", **study.extra}
                if pred.quality is not None:
                    row.update(check=int(pred.quality.check), qc_score=f"{pred.quality.score:.4f}")
                w.writerow(row)
                sf.flush()
                os.fsync(sf.fileno())
                result.done += 1
            except (MedsegError, OSError, RuntimeError, ValueError, MemoryError) as e:
                reason = str(e) if isinstance(e, MedsegError) else f"{type(e).__name__}: {e}"
                log.error("%s: %s", study.id, reason)
                result.failed.append((study.id, str(study.case.paths[0]), reason))
                _write_failures(out, result.failed)
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
    if not result.failed and (out / FAILURES_CSV).is_file():
        (out / FAILURES_CSV).unlink()  # an earlier run's failures, all redone now
    return result


def _write_failures(out: Path, failed: list[tuple[str, str, str]]) -> None:
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["id", "input", "error"])
    w.writerows(failed)
    write_text(out / FAILURES_CSV, buf.getvalue())

