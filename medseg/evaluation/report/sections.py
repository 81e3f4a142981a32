"""The report's sections, each built from what the run folder holds (see :mod:`.contents`).

Every builder returns a :class:`~medseg.evaluation.report.page.Section`; a missing
piece becomes a short note in its section rather than an error.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path

import numpy as np

from medseg.errors import MedsegError
from medseg.evaluation.report import figures
from medseg.evaluation.report.contents import PerCaseTable, RunContents
from medseg.evaluation.report.html import (
    Raw,
    caption,
    columns,
    esc,
    figure,
    fmt,
    heading,
    hex_color,
    kv_table,
    note,
    sortable_table,
    swatch,
    table,
)
from medseg.evaluation.report.overlays import case_views, load_case
from medseg.evaluation.report.page import Section

log = logging.getLogger(__name__)

PER_CASE_TABLE_ID = "per-case-table"
METRICS_TABLE_ID = "metrics-table"


# --------------------------------------------------------------------------- helpers


def _flatten(obj, prefix: str = "", depth: int = 2) -> list[tuple[str, object]]:
    """Nested dicts as ``(dotted.key, value)`` pairs down to ``depth`` levels; deeper values stay compact JSON."""
    if isinstance(obj, dict) and depth > 0:
        out: list[tuple[str, object]] = []
        for k, v in obj.items():
            out += _flatten(v, f"{prefix}{k}.", depth - 1) if isinstance(v, dict) and v else [(f"{prefix}{k}", v)]
        return out
    return [(prefix.rstrip("."), obj)]


def _is_stats(obj) -> bool:
    return isinstance(obj, dict) and "mean" in obj


def _ci(stats: dict) -> tuple[float, float] | None:
    """The 95% confidence interval of a stats dict, whichever of the usual key spellings it uses."""
    for key in ("ci95", "ci", "ci_95", "confidence_interval"):
        v = stats.get(key)
        if isinstance(v, dict):
            v = [v.get("low", v.get("lower")), v.get("high", v.get("upper"))]
        if isinstance(v, (list, tuple)) and len(v) == 2 and all(isinstance(x, (int, float)) for x in v):
            return float(v[0]), float(v[1])
    for lo, hi in (("ci_low", "ci_high"), ("ci_lower", "ci_upper"), ("ci95_low", "ci95_high")):
        if isinstance(stats.get(lo), (int, float)) and isinstance(stats.get(hi), (int, float)):
            return float(stats[lo]), float(stats[hi])
    return None


def _num(v) -> float | None:
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else None


def metric_columns(per_case: PerCaseTable, class_names: list[str]) -> dict[str, dict[str, int]]:
    """``{metric: {class: column index}}`` for per-case columns named ``<metric>_<class>``, in column order."""
    by_length = sorted(class_names, key=len, reverse=True)
    out: dict[str, dict[str, int]] = {}
    for i, (col, numeric) in enumerate(zip(per_case.columns, per_case.numeric)):
        if not numeric:
            continue
        for name in by_length:
            if col.endswith("_" + name) and len(col) > len(name) + 1:
                out.setdefault(col[: -len(name) - 1], {})[name] = i
                break
    return out


def case_scores(per_case: PerCaseTable, class_names: list[str]) -> list[float]:
    """Mean foreground Dice per case: the ``mean_dice`` column, else the mean of the ``dice_<class>`` columns."""
    if "mean_dice" in per_case.columns:
        return [float(v) for v in per_case.column("mean_dice")]
    cols = list(metric_columns(per_case, class_names).get("dice", {}).values())
    scores = []
    for row in per_case.rows:
        v = [row[i] for i in cols if not math.isnan(row[i])]
        scores.append(float(np.mean(v)) if v else math.nan)
    return scores


def worst_and_best(names: list[str], scores: list[float], n: int) -> list[tuple[str, str, float]]:
    """``[("worst", case, score), ..., ("best", case, score), ...]``: the ``n`` lowest and the ``n`` highest
    scores, worst first and best first. With fewer than ``2 n`` cases each case is shown once, the lower
    half as worst and the upper half as best. Cases without a score are left out."""
    ranked = sorted(((s, i) for i, s in enumerate(scores) if not math.isnan(s)), key=lambda x: (x[0], x[1]))
    n_worst = min(n, (len(ranked) + 1) // 2)
    worst = ranked[:n_worst]
    best = ranked[n_worst:][::-1][:n]
    return [("worst", names[i], s) for s, i in worst] + [("best", names[i], s) for s, i in best]


# --------------------------------------------------------------------------- sections


def notes_section(c: RunContents) -> Section | None:
    if not c.notes:
        return None
    return Section("notes", "Notes", "Problems met while writing this report.", "".join(note(t) for t in c.notes))


def dataset_section(c: RunContents) -> Section:
    info = c.info
    general: list[tuple[str, object]] = [("data", info.get("data")), ("task", "3D volumes" if c.is_3d else "2D images")]
    if isinstance(info.get("dataset"), dict):
        general += [(f"dataset {k}", v) for k, v in info["dataset"].items()]
    general += [(f"option {k}", v) for k, v in (info.get("data_options") or {}).items() if v not in (None, "", [], {})]
    if info.get("patch_size"):
        general.append(("patch size", info["patch_size"]))
    blocks = [heading("Source") + kv_table(general)]
    if c.scheme is not None:
        rows = []
        for i, (name, code) in enumerate(zip(c.scheme.names, c.scheme.codes)):
            color = c.colors[i] if i < len(c.colors) else (0, 0, 0)
            rows.append([i, name, code, Raw(swatch(color) + esc(hex_color(color)))])
        blocks.append(heading(f"Classes ({c.scheme.kind} labels)")
                      + table(["id", "name", "code in the files", "display colour"], rows, numeric=[True]))
    counts = info.get("counts") or {k: len(v) for k, v in (c.split or {}).items() if isinstance(v, list)}
    if counts:
        split_meta = [(k, v) for k, v in (info.get("split") or {}).items() if v is not None]
        blocks.append(heading("Split") + table(["subset", "cases"], [[k, v] for k, v in counts.items()], numeric=[False, True])
                      + kv_table(split_meta))
    if info.get("preprocess"):
        blocks.append(heading("Preprocessing") + kv_table(_flatten(info["preprocess"], depth=1)))
    body = [columns(*blocks)]
    if c.fingerprint is not None:
        body.append(heading("Dataset fingerprint (fingerprint.json)"))
        pairs = _flatten(c.fingerprint)
        body.append(kv_table(pairs[:60]))
        if len(pairs) > 60:
            body.append(note(f"{len(pairs) - 60} more entries in fingerprint.json are not shown."))
    return Section("dataset", "Dataset", "Where the data came from, its classes, how it was split and preprocessed.", "".join(body))


_PLAN_META = ("plan_version", "medseg_version", "created", "reasons")


def plan_rows(plan) -> list[tuple[str, object, object]]:
    """``(decision, value, reason)`` rows of a ``plan.json``: ``{section: {..., "reason"}}`` (medseg's plans,
    see :mod:`medseg.planning.plan`), ``{"decisions": [{"name", "value", "reason"}, ...]}``, or
    ``{name: value, ..., "reasons": {name: reason}}``. A section's value is its ``value`` (or only) entry,
    else its entries without the reason."""
    if isinstance(plan, list):
        plan = {"decisions": plan}
    if not isinstance(plan, dict):
        return []
    decisions = plan.get("decisions")
    rows: list[tuple[str, object, object]] = []
    if isinstance(decisions, list):
        for d in decisions:
            if isinstance(d, dict):
                name = next((d[k] for k in ("name", "key", "decision", "what", "setting") if k in d), "?")
                rows.append((str(name), d.get("value", d.get("chosen")), d.get("reason", d.get("why"))))
        return rows
    reasons = plan.get("reasons") if isinstance(plan.get("reasons"), dict) else {}
    items = decisions if isinstance(decisions, dict) else {k: v for k, v in plan.items() if k not in _PLAN_META}
    for k, v in items.items():
        if isinstance(v, dict) and ("reason" in v or "why" in v):
            rest = {kk: vv for kk, vv in v.items() if kk not in ("reason", "why")}
            value = rest["value"] if "value" in rest and len(rest) == 1 else next(iter(rest.values())) if len(rest) == 1 else rest
            rows.append((k, value, v.get("reason", v.get("why"))))
        else:
            rows.append((k, v, reasons.get(k)))
    return rows


def _inline(value) -> str:
    """A plan value as text: a dict as ``key: value; ...`` (empty entries left out)."""
    if isinstance(value, dict):
        return "; ".join(f"{k}: {fmt(v)}" for k, v in value.items() if v not in (None, "", [], {})) or "none"
    return fmt(value)


def plan_section(c: RunContents) -> Section:
    how = "The settings chosen for this dataset (`medseg plan`) and why; a training flag that replaced one is listed under overrides."
    if c.plan is None:
        return Section("plan", "Plan", how, note("No plan.json in this run: the settings were the defaults or given on the command line "
                                                 "(see Training)."))
    rows = plan_rows(c.plan)
    body = table(["decision", "value", "reason"], [[k, _inline(v), r if r is not None else ""] for k, v, r in rows]) if rows else \
        note("plan.json holds no decisions.")
    return Section("plan", "Plan", how, body)


def training_section(c: RunContents) -> Section:
    info = c.info
    body = []
    if isinstance(info.get("model"), dict):
        body.append(heading("Model") + kv_table(info["model"].items()))
    if c.train_state:
        s = c.train_state
        monitor = (info.get("train") or {}).get("monitor", "monitored value")
        outcome = [("epochs run", (s["epoch"] + 1) if isinstance(s.get("epoch"), int) else None),
                   ("time (s)", s.get("elapsed")), ("finished", s.get("finished")), ("stopped by", s.get("stopped_by")),
                   ("best epoch", s.get("best_epoch")), (f"best {monitor}", s.get("best"))]
        if c.final_choice:
            f = c.final_choice
            outcome += [("epochs validated on", f"a fixed {f.get('subset')} of the {f.get('cases')} validation cases"),
                        ("final model", f"{'the best checkpoint' if f.get('kept') == 'best' else 'the weights at the end'}, "
                                        f"chosen on all {f.get('cases')} validation cases")]
        body.append(heading("Outcome") + kv_table((k, v) for k, v in outcome if v is not None))
    if isinstance(info.get("train"), dict):
        body.append(heading("Training configuration") + kv_table((k, v) for k, v in info["train"].items() if v not in ({}, [])))
    return Section("training", "Training", "The network and the settings it was trained with; the best epoch's weights are kept.",
                   columns(*body) if body else note("medseg_run.json records no training configuration."))


def curves_section(c: RunContents) -> Section:
    how = "Loss, Dice and accuracy per epoch on the training patches and the validation cases; a widening gap means overfitting."
    best = c.train_state.get("best_epoch") if c.train_state else None
    png = figures.training_curves(c.history, best if isinstance(best, int) else None) if c.history else None
    if png is None:
        return Section("curves", "Training curves", how, note("No training history (history.csv) yet."))
    return Section("curves", "Training curves", how, figure(png, f"{len(c.history)} epochs; dotted line: the best epoch"))


def _stat_rows(obj: dict, label: str, units: dict, prefix: str = "") -> list[list]:
    """Table rows ``[class, metric (unit), mean ± std, median, CI, n, pooled]`` of every stats dict in ``obj`` (recursively)."""
    rows = []
    for key, val in obj.items():
        if _is_stats(val):
            ci = _ci(val)
            mean, std = _num(val.get("mean")), _num(val.get("std"))
            mean_std = "–" if mean is None or math.isnan(mean) else fmt(mean) + (f" ± {fmt(std)}" if std is not None else "")
            unit = units.get(key)
            interval = f"[{fmt(ci[0])}, {fmt(ci[1])}]" if ci and not math.isnan(ci[0]) else val.get("ci_note", "–")
            if ci and not math.isnan(ci[0]) and val.get("ci_unit") == "patient":
                interval += " by patient"
            rows.append([label, prefix + key + (f" ({unit})" if unit else ""), mean_std, _num(val.get("median")),
                         interval, val.get("n"), _num(obj.get(f"{key}_pooled"))])
        elif isinstance(val, dict) and val:
            rows += _stat_rows(val, label, units, f"{prefix}{key}.")
    return rows


def _has_stats(obj) -> bool:
    return _is_stats(obj) or (isinstance(obj, dict) and any(_has_stats(v) for v in obj.values()))


def metrics_section(c: RunContents) -> Section:
    how = ("Each metric over the evaluated cases: mean ± standard deviation, median and the 95% confidence interval "
           "of the mean (– where the evaluation did not compute it); pooled = computed once over all cases' pixels together.")
    s = c.summary
    if not s:
        return Section("metrics", "Metrics", how, note("No evaluation/summary.json: run `medseg evaluate RUN`."))
    units = s.get("units") if isinstance(s.get("units"), dict) else {}
    scalars = [(k, v) for k, v in s.items() if not isinstance(v, (dict, list))]
    # other figures (e.g. calibration): dicts of plain values, shown flattened
    other = [(f"{k}.{kk}", vv) for k, v in s.items() if k not in ("classes", "units") and isinstance(v, dict) and not _has_stats(v)
             for kk, vv in _flatten(v, depth=1)]
    rows = _stat_rows({k: v for k, v in s.items() if k != "classes" and _has_stats(v)}, "all classes", units)
    for name, cls in (s.get("classes") or {}).items():
        if isinstance(cls, dict):
            rows += _stat_rows(cls, name, units)
    metrics = table(["class", "metric", "mean ± std", "median", "95% CI", "n", "pooled"], rows, table_id=METRICS_TABLE_ID,
                    numeric=[False, False, True, True, True, True, True]) if rows else note("summary.json holds no metrics.")
    pictures = "".join(figure(p.read_bytes(), f"{key} ({p.name})") for key, p in _pictures(c.eval_dir, other))
    return Section("metrics", "Metrics", how, columns(metrics, kv_table(scalars + other)) + pictures)


def _pictures(folder: Path, items: list[tuple[str, object]]) -> list[tuple[str, Path]]:
    """PNG files inside ``folder`` that summary values name (e.g. a reliability diagram)."""
    out = []
    root = folder.resolve()
    for key, value in items:
        if isinstance(value, str) and value.lower().endswith(".png"):
            path = (folder / value).resolve()
            if path.is_file() and path.is_relative_to(root):
                out.append((key, path))
    return out


def per_case_section(c: RunContents) -> Section:
    how = "One row per evaluated case; click a column header to sort by it (click again to reverse)."
    t = c.per_case
    if t is None:
        return Section("per-case", "Per-case results", how, note("No per-case CSV in the evaluation folder."))
    cols = [t.case_column] + [i for i, n in enumerate(t.numeric) if n and i != t.case_column]
    rows = [[r[i] for i in cols] for r in t.rows]
    body = sortable_table([t.columns[i] for i in cols], rows, [t.numeric[i] for i in cols], PER_CASE_TABLE_ID)
    return Section("per-case", "Per-case results", how, body + caption(f"{len(rows)} cases, from {t.path.name}."))


def box_plots_section(c: RunContents) -> Section:
    how = "The spread of each metric across cases, one box per class: the line is the median, the box the middle half, dots are cases."
    t = c.per_case
    groups = metric_columns(t, c.class_names) if t else {}
    if not groups:
        return Section("box-plots", "Box plots", how, note("No per-class metric columns to plot."))
    units = (c.summary or {}).get("units") or {}
    figs = []
    for metric, cols in groups.items():
        title = f"{metric} ({units[metric]})" if isinstance(units, dict) and units.get(metric) else metric
        png = figures.box_plot(title, {name: [r[i] for r in t.rows] for name, i in cols.items()})  # type: ignore[union-attr]
        figs.append(figure(png, f"{title} per class"))
    return Section("box-plots", "Box plots", how, f'<div class="grid">{"".join(figs)}</div>')



def legend(c: RunContents) -> str:
    """The class colours: each class's prediction is filled and its truth outlined in its colour."""
    items = [f'<span class="item">{swatch(c.colors[i])}{esc(name)}</span>'
             for i, name in enumerate(c.scheme.names if c.scheme else []) if 0 < i < len(c.colors)]
    return (f'<div class="legend">{"".join(items)}<span class="item">filled: prediction; outlined: truth; '
            'click a picture to enlarge it</span></div>')


def _legacy_overlays(c: RunContents) -> str:
    """The prediction-only overlays an older 2D evaluation saved, when there is no cases.json."""
    folder = c.eval_dir / "overlays"
    files = sorted(folder.glob("*.png")) if folder.is_dir() else []
    figs = [figure(p.read_bytes(), f"{p.stem} (prediction only)", "overlay") for p in files[:12]]
    return f'<div class="grid">{"".join(figs)}</div>' if figs else ""


def cases_section(c: RunContents, n: int = 3) -> Section:
    title = "Worst and best cases"
    how = ("The cases with the lowest and highest mean Dice: prediction filled in the class colours, the truth outlined in them; "
           + ("3D: three orthogonal planes through the largest error." if c.is_3d else "2D: the whole image."))
    t = c.per_case
    if t is None:
        return Section("cases", title, how, note("No per-case results to rank."))
    names = t.case_names()
    chosen = worst_and_best(names, case_scores(t, c.class_names), n)
    if not chosen:
        return Section("cases", title, how, note("No case has a Dice score to rank by."))
    if c.cases is None:
        msg = ("No evaluation/cases.json (written by `medseg evaluate` with the saved predictions): "
               "the cases cannot be drawn. Re-run `medseg evaluate RUN` to add them.")
        return Section("cases", title, how, note(msg) + _legacy_overlays(c))
    dice_cols = metric_columns(t, c.class_names).get("dice", {})
    bases = [c.eval_dir, c.run_dir]
    blocks = []
    for tag, name, score in chosen:
        row = t.rows[names.index(name)]
        detail = ", ".join(f"{cls} {fmt(row[i], 3)}" for cls, i in dice_cols.items())
        head = f"<h4>{esc(tag)}: {esc(name)}: mean Dice {esc(fmt(score, 3))}{esc(f' ({detail})' if detail else '')}</h4>"
        entry = c.cases.get(name)
        if entry is None:
            blocks.append(f'<div class="case">{head}{note("not listed in cases.json")}</div>')
            continue
        try:
            views = case_views(load_case(entry, bases, c.scheme), c.colors)
        except (MedsegError, OSError, ValueError, KeyError, TypeError, IndexError) as e:
            log.warning("report: cannot draw case %s: %s", name, e)
            blocks.append(f'<div class="case">{head}{note(f"could not be drawn: {e}")}</div>')
            continue
        figs = "".join(figure(v.png, f"{v.title}; {v.errors} wrong {'voxels' if c.is_3d else 'pixels'}", "overlay")
                       for v in views)
        blocks.append(f'<div class="case">{head}<div class="views">{figs}</div></div>')
    return Section("cases", title, how, legend(c) + f'<div class="grid">{"".join(blocks)}</div>')


def no_evaluation_section() -> Section:
    return Section("evaluation", "Evaluation", "Metrics, per-case results and pictures of cases appear here after evaluation.",
                   note("This run has not been evaluated yet: run `medseg evaluate RUN`, then `medseg report RUN`."))


def meta_lines(c: RunContents, now: str, version: str) -> list[str]:
    info = c.info
    lines = [f"generated {now} by medseg {version}", f"run folder {Path(c.run_dir).resolve()}"]
    if info.get("medseg_version") or info.get("written"):
        lines.append(f"trained with medseg {info.get('medseg_version', '?')}, started {info.get('written', '?')}")
    env = info.get("environment") or {}
    if env:
        commit = f", commit {env['medseg_commit'][:12]}" if env.get("medseg_commit") else ""
        lines.append(f"on {env.get('device', '?')} ({env.get('device_name', '?')}, {env.get('threads', '?')} threads) in "
                     f"{env.get('precision', '?')}; Python {env.get('python', '?')}, torch {env.get('torch', '?')}, "
                     f"MONAI {env.get('monai', '?')}{commit}")
    return lines
