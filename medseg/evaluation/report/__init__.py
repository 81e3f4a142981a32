"""``RUN/report.html``: one self-contained page showing how good a trained model is and where it fails.

Sections: at a glance (headline metrics per class, the run's identity, quality
control, the worst cases; :mod:`.first_screen`), a gallery of every case, then
the details: dataset, plan, training configuration, training curves, metrics with
confidence intervals, a sortable per-case table, Bland-Altman volumes, box plots
per class, and the worst and best cases drawn as overlays. Everything is read from the run folder
(see :mod:`.contents`); what is absent (no evaluation yet, no ``cases.json``,
no ``plan.json``) becomes a note, never an error. Images are embedded as base64
PNG data URIs and CSS/JS are inline: the file needs no network and no other file.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path

import medseg
from medseg.evaluation.report import first_screen as first
from medseg.evaluation.report import sections as sec
from medseg.evaluation.report.contents import RunContents, read_run_contents
from medseg.evaluation.report.html import note
from medseg.evaluation.report.page import Section, render_page
from medseg.io.atomic import write_text

log = logging.getLogger(__name__)

REPORT_FILE = "report.html"

__all__ = ["REPORT_FILE", "build_sections", "render_report", "write_report"]


def _guarded(ident: str, title: str, build: Callable[[], Section | None]) -> Section | None:
    """One section; should it fail on something unforeseen in the run folder, a note takes its place
    (the report is written at the end of training and evaluation and must not stop them)."""
    try:
        return build()
    except Exception as e:  # noqa: BLE001 - any failure of one section must leave the others
        log.warning("report: the %s section could not be built: %s: %s", ident, type(e).__name__, e, exc_info=log.isEnabledFor(logging.DEBUG))
        return Section(ident, title, "", note(f"This section could not be built: {type(e).__name__}: {e}"))


def build_sections(c: RunContents, cases_shown: int = 3, report_dir: Path | None = None) -> list[Section]:
    """The report's sections in order; those needing an evaluation are replaced by a note when there is none.
    ``report_dir``: where the page will be (links to prediction files are relative to it; default the run folder)."""
    where = Path(report_dir) if report_dir is not None else Path(c.run_dir)
    builders: list[tuple[str, str, Callable[[], Section | None]]] = []
    if c.summary is not None or c.per_case is not None:
        builders += [
            ("glance", "At a glance", lambda: first.glance_section(c)),
            ("gallery", "Gallery", lambda: first.gallery_section(c, where)),
        ]
    builders += [
        ("notes", "Notes", lambda: sec.notes_section(c)),
        ("dataset", "Dataset", lambda: sec.dataset_section(c)),
        ("plan", "Plan", lambda: sec.plan_section(c)),
        ("training", "Training", lambda: sec.training_section(c)),
        ("curves", "Training curves", lambda: sec.curves_section(c)),
    ]
    if c.summary is not None or c.per_case is not None:
        builders += [
            ("metrics", "Metrics", lambda: sec.metrics_section(c)),
            ("per-case", "Per-case results", lambda: sec.per_case_section(c)),
            ("volumes", "Volumes", lambda: first.volumes_section(c)),
            ("box-plots", "Box plots", lambda: sec.box_plots_section(c)),
            ("cases", "Worst and best cases", lambda: sec.cases_section(c, cases_shown)),
        ]
    else:
        builders.append(("evaluation", "Evaluation", sec.no_evaluation_section))
    parts = [_guarded(ident, title, build) for ident, title, build in builders]
    return [p for p in parts if p is not None]


def render_report(run_dir: str | Path, *, evaluation: str | Path | None = None, cases_shown: int = 3,
                  report_dir: str | Path | None = None) -> str:
    """The report of a run folder as an HTML string (see :func:`write_report`)."""
    c = read_run_contents(run_dir, evaluation)
    name = Path(run_dir).resolve().name
    meta = sec.meta_lines(c, time.strftime("%Y-%m-%d %H:%M"), medseg.__version__)
    return render_page(f"medseg report: {name}", meta, build_sections(c, cases_shown, Path(report_dir) if report_dir else None))


def write_report(
    run_dir: str | Path,
    out: str | Path | None = None,
    *,
    evaluation: str | Path | None = None,
    cases_shown: int = 3,
) -> Path:
    """Write the run's report (atomically) and return its path.

    ``out`` defaults to ``RUN/report.html``; ``evaluation`` is the folder of
    ``summary.json``, the per-case CSV and ``cases.json`` (default ``RUN/evaluation``);
    ``cases_shown`` worst and as many best cases are drawn. Raises
    :class:`~medseg.errors.RunFolderError` only when ``RUN`` is not a run folder.
    """
    path = Path(out) if out else Path(run_dir) / REPORT_FILE
    write_text(path, render_report(run_dir, evaluation=evaluation, cases_shown=cases_shown, report_dir=path.resolve().parent))
    log.debug("report written: %s", path)  # the commands print the path
    return path
