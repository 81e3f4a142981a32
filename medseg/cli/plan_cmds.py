"""``medseg inspect DATA`` (the dataset fingerprint) and ``medseg plan DATA`` (plan.json)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich import box
from rich.table import Table
from rich.markup import escape

from medseg.cli.main import console


def _fingerprint(data: Path, images: Optional[str], masks: Optional[str], pair_pattern: Optional[str],
                 label_colors: Optional[str], workers: Optional[int], max_cases: Optional[int],
                 allow_new_labels: bool = False, channels: Optional[int] = None) -> dict:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from medseg.data.dataset2d import DataOptions2D
    from medseg.planning.fingerprint import compute_fingerprint

    opts = DataOptions2D(images=images, masks=masks, pair_pattern=pair_pattern, label_colors=label_colors,
                         allow_new_labels=allow_new_labels, channels=channels)
    with Progress(TextColumn("reading cases"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=console, transient=True) as bar:
        task = bar.add_task("cases", total=None)
        return compute_fingerprint(data, data_options=opts, workers=workers, max_cases=max_cases,
                                   progress=lambda done, total: bar.update(task, completed=done, total=total))


def _axes(v) -> str:
    return " x ".join(f"{x:.4g}" for x in v)


def print_fingerprint(fp: dict) -> None:
    """A readable summary of a fingerprint (see :mod:`medseg.planning.fingerprint`)."""
    t = Table(box=box.SIMPLE, show_header=False, title=escape(f"{fp['name']} ({fp['dims']}D, {fp['layout']})"))
    t.add_column(style="bold")
    t.add_column()
    t.add_row("cases", f"{fp['cases_used']} read of {fp['num_cases']}")
    for label, text in discovery_rows(fp.get("discovery")):
        t.add_row(label, escape(text))
    t.add_row("channels", f"{fp['channels']} ({', '.join(fp['modality'])}); pixel types {', '.join(fp['dtypes'])}"
              + ("; intensities look like CT (HU)" if fp.get("looks_like_ct") else ""))
    for key, label in (("shape", "shape"), ("cropped_shape", "shape after crop"), ("spacing", "spacing (mm)")):
        s = fp[key]
        t.add_row(label, f"median {_axes(s['median'])}   (min {_axes(s['min'])}, max {_axes(s['max'])}, "
                         f"p10 {_axes(s['p10'])}, p90 {_axes(s['p90'])})")
    t.add_row("anisotropy", f"{fp['anisotropy']:.2f} (max/min median spacing); crop keeps a median {fp['crop_fraction']:.0%}")
    for c, st in enumerate(fp["intensity"]):
        t.add_row(f"foreground ch {c}", "no foreground" if st is None else
                  f"mean {st['mean']:.4g}, std {st['std']:.4g}, 0.5-99.5% {st['p005']:.4g} .. {st['p995']:.4g}")
    res = fp.get("resolution") or {}
    if res.get("fidelity_p10"):
        curve = ", ".join(f"{sc:.2g}: {f:.3f}" for sc, f in zip(res["scales"], res["fidelity_p10"]) if f is not None)
        t.add_row("coarser grids", f"labels' Dice after a round trip (10th percentile of {res['cases_measured']} cases) "
                                   f"by scale: {curve}")
    if res.get("object_extent"):
        t.add_row("largest object", f"median {_axes(res['object_extent']['median'])} px "
                                    f"({_axes(res['relative_extent']['median'])} of the image)")
    console.print(t)
    ct = Table(box=box.SIMPLE, title="classes")
    for col in ("value", "name", "voxels", "cases", "parts/case", "median part", "min part", "largest part", ""):
        ct.add_column(col, justify="right" if col not in ("name", "") else "left")
    for cl in fp["classes"]:
        comp = cl["components"]
        sv, sm = comp.get("size_voxels") or {}, comp.get("size_mm3") or {}
        ct.add_row(str(cl["value"]), cl["name"], f"{cl['voxel_fraction']:.2%}", str(cl["cases_present"]),
                   f"{comp['count_median']:.0f}",
                   f"{sv.get('median', 0):.0f} vx, {sm.get('median', 0):.4g} mm³" if sv else "-",
                   f"{sv.get('min', 0):.0f} vx" if sv else "-",
                   f"{comp['largest_voxels_median']:.0f} vx" if comp.get("largest_voxels_median") is not None else "-",
                   "[yellow]tiny[/]" if cl.get("tiny") else "")
    console.print(ct)
    if fp["problems"]:
        pt = Table(box=box.SIMPLE, title=f"problems ({len(fp['problems'])})")
        for col in ("case", "problem", "detail"):
            pt.add_column(col)
        for p in fp["problems"][:30]:
            pt.add_row(escape(str(p["case"] or "-")), p["kind"], escape(p["detail"]))
        console.print(pt)
        if len(fp["problems"]) > 30:
            console.print(f"... and {len(fp['problems']) - 30} more (see the JSON)")
    else:
        console.print("no problems found")


def discovery_rows(d: dict | None) -> list[tuple[str, str]]:
    """How a 2D dataset's cases were found, paired and grouped, with examples, as table rows."""
    if not d:
        return []
    rows = []
    if d["folders"] > 1:
        rows.append(("folders", f"cases in {d['folders']} folders (e.g. {', '.join(d['folder_examples'])})"))
    for method, n in d["pairing"].items():
        rows.append((f"paired by {method}", f"{n} images; e.g. " + "; ".join(d["pairing_examples"].get(method, []))))
    g = d["groups"]
    if g["method"] == "none":
        rows.append(("patients", "none found: each image is its own group in the split (--group-pattern or --groups-csv to set them)"))
    else:
        ex = g["example"]
        rows.append(("patients", f"{g['groups']} groups by {g['method']} (sizes {g['size_min']}-{g['size_max']}, median "
                                 f"{g['size_median']}); e.g. {ex['case']} -> {ex['group']}; a split keeps each group on one side"))
    return rows


def _resolution_text(spacing: dict) -> str:
    if spacing.get("target"):
        return _axes(spacing["target"]) + " mm"
    if spacing.get("scale"):
        return f"scale {spacing['scale']:.3g}"
    if spacing.get("long_side"):
        return f"long side {spacing['long_side']} px"
    return "the images' own pixels"


def print_plan(plan) -> None:
    """The plan's decisions with their reasons."""
    s = plan.sections
    t = Table(box=box.SIMPLE, title=f"plan for {s['data']['name']} ({s['device']['kind']}, {s['device']['memory_budget']})")
    for col in ("decision", "value", "why"):
        t.add_column(col, overflow="fold")
    net = s["network"]
    tb = s["training"]["time_budget"]
    rows = [
        ("configuration", f"{s['configuration']['value']} (candidates {', '.join(s['configuration']['candidates'])})",
         s["configuration"]["reason"]),
        ("target spacing" if s["data"]["dims"] == 3 else "working resolution", _resolution_text(s["spacing"]),
         s["spacing"]["reason"]),
        ("normalisation", ", ".join(s["normalization"]["scheme"]), s["normalization"]["reason"]),
        ("crop to non-zero", str(s["crop_to_nonzero"]["value"]).lower(), s["crop_to_nonzero"]["reason"]),
        ("patch", "x".join(map(str, s["patch"]["size"])), s["patch"]["reason"]),
        ("batch", str(s["batch"]["size"]), s["batch"]["reason"]),
        ("network", f"{net['model']} {net.get('features')} features, depth {net.get('depth')}, strides "
                    f"{net.get('strides')}, kernels {net.get('kernel_sizes')}", net.get("reason", "")),
        ("training", f"{'budget %.0f s' % tb if tb else 'no budget'}, <= {s['training']['max_epochs']} epochs x "
                     f"{s['training']['iterations_per_epoch']} steps, foreground {s['training']['foreground_fraction']:.0%}",
         s["training"]["reason"]),
    ]
    for r in rows:
        t.add_row(*r)
    console.print(t)


def inspect(
    data: Path = typer.Argument(..., help="Data folder: 2D images + masks, or a 3D dataset."),
    out: Path = typer.Option(Path("fingerprint.json"), "--out", "-o", help="Where to save the fingerprint JSON."),
    workers: Optional[int] = typer.Option(None, help="Processes reading the cases (default: up to 4)."),
    max_cases: Optional[int] = typer.Option(None, help="Read only this many cases, evenly spaced (a quick look)."),
    images: Optional[str] = typer.Option(None, help="2D: image subfolder (detected by default)."),
    masks: Optional[str] = typer.Option(None, help="2D: mask subfolder (detected by default)."),
    pair_pattern: Optional[str] = typer.Option(None, help="2D: regex pairing images and masks."),
    label_colors: Optional[str] = typer.Option(None, help="2D: class colours 'name=r,g,b;...' or a labels.json path."),
    allow_new_labels: bool = typer.Option(False, "--allow-new-labels", help="2D: accept mask values found in only a few masks as classes."),
    channels: Optional[int] = typer.Option(None, "--channels", help="2D: convert every image to 1 (grey) or 3 (colour) channels."),
) -> None:
    """Describe a dataset: cases, channels, shapes, spacings, intensities, classes, problems (the fingerprint)."""
    from medseg.io.atomic import write_json

    fp = _fingerprint(data, images, masks, pair_pattern, label_colors, workers, max_cases, allow_new_labels, channels)
    print_fingerprint(fp)
    write_json(out, fp)
    console.print(f"fingerprint of {fp['cases_used']} case(s) in {fp['elapsed_s']:.1f} s: {out}", highlight=False, markup=False)


def plan(
    data: Path = typer.Argument(..., help="Data folder: 2D images + masks, or a 3D dataset."),
    out: Path = typer.Option(Path("plan.json"), "--out", "-o", help="Where to save the plan."),
    memory_budget: Optional[str] = typer.Option(None, help="Memory for a training step, e.g. 8GiB (default: measured on --device)."),
    time_budget: Optional[str] = typer.Option(None, help="Training time budget, e.g. 30m (default: none, early stopping)."),
    device: str = typer.Option("auto", help="Plan for auto | cpu | cuda."),
    fingerprint: Optional[Path] = typer.Option(None, help="Use this fingerprint JSON (from `medseg inspect`) instead of reading the data."),
    fingerprint_out: Optional[Path] = typer.Option(None, help="Also save the fingerprint here."),
    workers: Optional[int] = typer.Option(None, help="Processes reading the cases (default: up to 4)."),
    images: Optional[str] = typer.Option(None, help="2D: image subfolder (detected by default)."),
    masks: Optional[str] = typer.Option(None, help="2D: mask subfolder (detected by default)."),
    pair_pattern: Optional[str] = typer.Option(None, help="2D: regex pairing images and masks."),
    label_colors: Optional[str] = typer.Option(None, help="2D: class colours 'name=r,g,b;...' or a labels.json path."),
    allow_new_labels: bool = typer.Option(False, "--allow-new-labels", help="2D: accept mask values found in only a few masks as classes."),
    channels: Optional[int] = typer.Option(None, "--channels", help="2D: convert every image to 1 (grey) or 3 (colour) channels."),
) -> None:
    """Decide how to train on a dataset and save it as an editable plan.json (each decision with its reason)."""
    import json

    from medseg.errors import ConfigError
    from medseg.io.atomic import write_json
    from medseg.planning.planner import make_plan
    from medseg.units import parse_duration

    if fingerprint is not None:
        try:
            fp = json.loads(fingerprint.read_text())
        except (OSError, ValueError) as e:
            raise ConfigError(f"cannot read the fingerprint: {e}", path=fingerprint, hint="make one with `medseg inspect DATA`") from None
    else:
        fp = _fingerprint(data, images, masks, pair_pattern, label_colors, workers, None, allow_new_labels, channels)
    if fingerprint_out is not None:
        write_json(fingerprint_out, fp)
    p = make_plan(fp, device=device, memory_budget=memory_budget, time_budget=parse_duration(time_budget),
                  fingerprint_file=str(fingerprint_out or fingerprint) if (fingerprint_out or fingerprint) else None)
    print_plan(p)
    p.save(out)
    console.print(f"plan saved: {out}  (edit it, then: medseg train {data} --out RUN --plan {out})", highlight=False, markup=False)
