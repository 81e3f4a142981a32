"""The report's first screen and its pictures of every case.

- **At a glance** (:func:`glance_section`): one headline per class (Dice, HD95, NSD with their 95% CIs, or why
  there is none), the run's identity (data, model, budget, versions, device, precision), and the quality control
  (how many cases it asks to check, and why).
- **Gallery** (:func:`gallery_section`), right below it: every case, worst first (its first row is the worst
  cases, on the first screen), a thumbnail with its Dice, its QC flag and a link to its prediction file.
- **Volumes** (:func:`volumes_section`): Bland-Altman plots of predicted against true volume per class.
"""

from __future__ import annotations

import logging
import math
import os
from pathlib import Path

from medseg.errors import MedsegError
from medseg.evaluation.report import figures
from medseg.evaluation.report.contents import RunContents
from medseg.evaluation.report.html import caption, esc, figure, fmt, kv_table, note, png_data_uri, table
from medseg.evaluation.report.overlays import load_case, thumbnail
from medseg.evaluation.report.page import Section

log = logging.getLogger(__name__)

HEADLINE = (("dice", "Dice"), ("hd95", "HD95"), ("nsd", "NSD"))
#: cases drawn in the gallery (the worst first); the rest are listed in the per-case table
GALLERY_LIMIT = 120
GALLERY_ID = "gallery"


def _stat(stats) -> str:
    """``mean [low, high]``, or the mean with the reason there is no interval."""
    if not isinstance(stats, dict) or not isinstance(stats.get("mean"), (int, float)):
        return "–"
    text = fmt(stats["mean"], 3)
    ci = stats.get("ci95")
    if isinstance(ci, (list, tuple)) and len(ci) == 2 and all(isinstance(v, (int, float)) and math.isfinite(v) for v in ci):
        return f"{text} [{fmt(ci[0], 3)}, {fmt(ci[1], 3)}]"
    return f"{text} ({stats['ci_note']})" if stats.get("ci_note") else text


def headline_table(c: RunContents) -> str:
    s = c.summary or {}
    units = s.get("units") if isinstance(s.get("units"), dict) else {}
    heads = ["class"] + [f"{title} ({units[key]})" if units.get(key) else title for key, title in HEADLINE]
    rows = [[name] + [_stat(stats.get(key)) for key, _ in HEADLINE]
            for name, stats in (s.get("classes") or {}).items() if isinstance(stats, dict)]
    if isinstance(s.get("mean_dice"), dict):
        rows.append(["mean over classes", _stat(s["mean_dice"]), "", ""])
    if not rows:
        return note("No evaluation yet: run `medseg evaluate RUN`.")
    unit = next((st["dice"].get("ci_unit") for st in (s.get("classes") or {}).values()
                 if isinstance(st, dict) and isinstance(st.get("dice"), dict)), None)
    return (table(heads, rows, table_id="headline", numeric=[False, True, True, True])
            + caption(f"mean [95% CI] over {s.get('images', '?')} case(s) of the {s.get('source', 'evaluation')}"
                      + (f"; the bootstrap resamples {unit}s" if unit else "")))


def identity_pairs(c: RunContents) -> list[tuple[str, object]]:
    info, env = c.info, c.info.get("environment") or {}
    train = info.get("train") or {}
    model = info.get("model") or {}
    budget = train.get("time_budget")
    epochs = len(c.history) if c.history else None
    return [
        ("data", info.get("data")),
        ("model", f"{model.get('name', '?')} ({', '.join(f'{k} {v}' for k, v in model.items() if k in ('features', 'depth'))})"),
        ("training", (f"budget {budget:.0f} s" if isinstance(budget, (int, float)) else f"up to {train.get('max_epochs', '?')} epochs")
         + (f", {epochs} epochs" if epochs else "")),
        ("device, precision", f"{env.get('device', '?')} ({env.get('device_name', '?')}), {env.get('precision', '?')}" if env else "not recorded"),
        ("versions", f"medseg {info.get('medseg_version', '?')}"
         + (f", torch {env.get('torch', '?')}, Python {env.get('python', '?')}" if env else " (the rest not recorded by this version)")
         + (f", commit {env['medseg_commit'][:12]}" if env.get("medseg_commit") else "")),
    ]


def _qc_rows(c: RunContents) -> list[tuple[str, float, float | None, str]]:
    """(case, mean Dice, predicted Dice, reasons) of the cases the quality control flagged, worst predicted first."""
    t = c.per_case
    if t is None or "check" not in t.columns:
        return []
    names, checks = t.case_names(), t.column("check")
    dice = t.column("mean_dice") if "mean_dice" in t.columns else [math.nan] * len(names)
    predicted = t.column("predicted_dice") if "predicted_dice" in t.columns else [None] * len(names)
    reasons = t.column("qc_reasons") if "qc_reasons" in t.columns else [""] * len(names)
    rows = [(n, d, p, str(r)) for n, ch, d, p, r in zip(names, checks, dice, predicted, reasons) if ch == 1]
    return sorted(rows, key=lambda r: (r[1] if not math.isnan(r[1]) else 2.0))


def qc_block(c: RunContents) -> str:
    qc = (c.summary or {}).get("quality_control")
    if not isinstance(qc, dict):
        return note("No quality control in this evaluation: fit it with `medseg qc RUN`, then `medseg evaluate RUN`.")
    flagged = _qc_rows(c)
    figures_text = ""
    if isinstance(qc.get("auroc_worst20"), (int, float)):
        figures_text = (f" On these cases the score's AUROC for the worst 20% by Dice is {qc['auroc_worst20']:.2f} and its "
                        f"Spearman correlation with Dice {qc.get('spearman_score_dice', math.nan):+.2f}.")
    head = (f"<p><b>{qc.get('flagged', len(flagged))} of {qc.get('cases', '?')} cases to check.</b> "
            f"{esc('Fitted on ' + str(qc.get('fitted_on_cases', '?')) + ' validation cases' + (' with TTA' if qc.get('mirror_tta') else '') + '.' + figures_text)}</p>")
    rows = [[name, fmt(dice, 3), "–" if p is None or (isinstance(p, float) and math.isnan(p)) else fmt(p, 3), reasons]
            for name, dice, p, reasons in flagged[:4]]
    more = caption(f"{len(flagged) - 4} more: column check of the per-case table") if len(flagged) > 4 else ""
    return head + (table(["case", "Dice", "predicted", "why"], rows, table_id="qc-table", numeric=[False, True, True, False]) + more
                   if rows else "")


def _report_link(path: str | None, report_dir: Path) -> str:
    if not path:
        return ""
    try:
        href = os.path.relpath(path, report_dir).replace(os.sep, "/")
    except ValueError:  # another drive
        href = Path(path).as_uri()
    return f'<a href="{esc(href)}">{esc(Path(path).name)}</a>'


def _ranked(c: RunContents) -> list[tuple[str, float, int]]:
    """(case, mean Dice, row) of the evaluated cases, worst first (cases without a Dice last)."""
    from medseg.evaluation.report.sections import case_scores

    t = c.per_case
    if t is None:
        return []
    scores = case_scores(t, c.class_names)
    rows = [(n, s, i) for i, (n, s) in enumerate(zip(t.case_names(), scores))]
    return sorted(rows, key=lambda r: (math.isnan(r[1]), r[1] if not math.isnan(r[1]) else 0.0, r[0]))


def _tiles(c: RunContents, ranked, report_dir: Path, size: int) -> list[str]:
    t = c.per_case
    checks = t.column("check") if t is not None and "check" in t.columns else None
    tiles = []
    for name, score, row in ranked:
        entry = (c.cases or {}).get(name)
        flag = checks is not None and checks[row] == 1
        label = f"{esc(name)}<br>Dice {esc(fmt(score, 3))}" + (' <span class="flag" title="quality control: check this case">check</span>' if flag else "")
        picture = ""
        if entry is not None:
            try:
                view = thumbnail(load_case(entry, [c.eval_dir, c.run_dir], c.scheme), c.colors, size)
                picture = f'<img class="overlay" src="{png_data_uri(view.png)}" alt="{esc(name)}: {esc(view.title)}">'
            except (MedsegError, OSError, ValueError, KeyError, TypeError, IndexError) as e:
                log.warning("report: cannot draw case %s: %s", name, e)
                picture = note(f"could not be drawn: {e}")
            label += f"<br>{_report_link(entry.get('prediction'), report_dir)}"
        tiles.append(f'<div class="tile{" flagged" if flag else ""}">{picture}<div class="tile-label">{label}</div></div>')
    return tiles


def glance_section(c: RunContents) -> Section:
    how = ("How good the model is and which predictions to check; the worst cases open the gallery below it, "
           "and the details follow.")
    left = headline_table(c) + kv_table(identity_pairs(c))
    right = "<h3>Quality control</h3>" + qc_block(c)
    return Section("glance", "At a glance", how, f'<div class="glance"><div>{left}</div><div>{right}</div></div>')


def gallery_section(c: RunContents, report_dir: Path) -> Section | None:
    how = ("Every evaluated case, worst Dice first: prediction filled, truth outlined"
           + (" (the plane across the slice axis through the largest error)" if c.is_3d else "") + "; each links to its prediction file.")
    ranked = _ranked(c)
    if not ranked or c.cases is None:
        return None
    from medseg.evaluation.report.sections import legend

    tiles = _tiles(c, ranked[:GALLERY_LIMIT], report_dir, 150)
    more = caption(f"The {len(ranked) - GALLERY_LIMIT} best cases are not drawn; see the per-case table.") if len(ranked) > GALLERY_LIMIT else ""
    return Section(GALLERY_ID, "Gallery, worst first", how, legend(c) + f'<div class="tiles">{"".join(tiles)}</div>' + more)


def volumes_section(c: RunContents) -> Section | None:
    from medseg.evaluation.report.sections import metric_columns

    t = c.per_case
    if t is None:
        return None
    cols = metric_columns(t, c.class_names)
    true_cols, diff_cols = cols.get("vol_true", {}), cols.get("vol_diff", {})
    pairs = {name: ([r[true_cols[name]] + r[diff_cols[name]] for r in t.rows], [r[true_cols[name]] for r in t.rows])
             for name in true_cols if name in diff_cols}
    units = (c.summary or {}).get("units") or {}
    png = figures.bland_altman(pairs, units.get("vol_true", "voxels") if isinstance(units, dict) else "voxels", c.colors)
    if png is None:
        return None
    how = ("Bland-Altman: per case, predicted minus true volume against their mean; the solid line is the mean difference "
           "(bias: above 0, the model over-segments), the dashed lines its 95% limits of agreement.")
    return Section("volumes", "Volumes", how, figure(png, "predicted vs true volume per class"))


__all__ = ["gallery_section", "glance_section", "volumes_section"]
