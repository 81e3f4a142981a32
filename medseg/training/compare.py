"""Compare networks on one dataset: same split, same preprocessing, same budget.

:func:`compare_models` trains every requested model from one template
:class:`~medseg.training.setup.TrainSetup` (same data options, preprocessing,
split fractions and seed, and the same :class:`~medseg.training.config.TrainConfig`,
so the same time or epoch budget), each into ``out/<model>/``. Each run is then
evaluated on the held-out test split (:func:`~medseg.evaluation.evaluate_run.evaluate_run`)
and its inference time measured: :meth:`Predictor.predict
<medseg.inference.predictor.Predictor.predict>` on every test image, after one
warm-up call, timed with :func:`time.perf_counter` (reading the files is not timed;
preprocessing, sliding-window inference and resizing back are).

One row per model: ``model``, ``params``, ``train_seconds``, ``epochs``,
``best_epoch``, ``stopped_by``, ``dice_<class>`` (mean over test images),
``mean_dice`` (per image mean over foreground classes, then mean over images),
``iou_mean`` (per-class mean IoU, averaged over classes), ``inference_ms``
(per image or volume), ``test_images`` and ``error`` (empty unless this model failed; the
others carry on). HD95 is not computed yet, so there is no column for it.

Writes ``out/comparison.csv``, ``out/comparison.json`` (settings + rows) and
``out/comparison.png`` (test Dice against training time; marker area grows with
the parameter count).
"""

from __future__ import annotations

import copy
import csv
import io
import logging
import math
import time
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import replace
from pathlib import Path
from typing import Any

from medseg.errors import ConfigError, RunFolderError
from medseg.io.atomic import atomic_path, write_json, write_text
from medseg.runfolder import read_run_info
from medseg.runfolder.split import read_split

log = logging.getLogger(__name__)

CSV_NAME, JSON_NAME, PLOT_NAME = "comparison.csv", "comparison.json", "comparison.png"

#: Columns before the per-class Dice columns, and after them.
_HEAD = ("model", "params", "train_seconds", "epochs", "best_epoch", "stopped_by")
_TAIL = ("mean_dice", "iou_mean", "hd95_mean", "inference_ms", "test_images", "error")

ProgressFactory = Callable[[str], AbstractContextManager]


def check_models(models: Sequence[str]) -> list[str]:
    """Validate model names (unknown names → :class:`ConfigError` listing the valid ones); drop duplicates."""
    from medseg.models import list_models

    names = [m.strip() for m in models if m and m.strip()]
    if not names:
        raise ConfigError("no models to compare", hint=f"give --models, e.g. {','.join(list_models())}")
    unknown = [m for m in names if m not in list_models()]
    if unknown:
        raise ConfigError(
            f"unknown model{'s' if len(unknown) > 1 else ''} {', '.join(repr(m) for m in unknown)}",
            hint=f"valid models: {', '.join(list_models())}",
        )
    return list(dict.fromkeys(names))


def kwargs_for(name: str, common: dict[str, Any] | None, specific: dict[str, Any] | None) -> dict[str, Any]:
    """``common`` arguments that model ``name`` accepts (others are skipped), then its own ``specific`` ones."""
    from medseg.models.registry import model_arguments

    valid = model_arguments(name)
    kw = {k: v for k, v in (common or {}).items() if v is not None and k in valid}
    skipped = sorted(k for k, v in (common or {}).items() if v is not None and k not in valid)
    if skipped:
        log.info("%s takes no argument(s) %s; not applied to it", name, ", ".join(skipped))
    kw.update({k: v for k, v in (specific or {}).items() if v is not None})
    return kw


def compare_models(
    data: str | Path,
    out: str | Path,
    models: Sequence[str],
    budget_seconds: float | None = None,
    epochs: int | None = None,
    base_setup=None,
    model_kwargs: dict[str, dict[str, Any]] | None = None,
    *,
    common_kwargs: dict[str, Any] | None = None,
    progress: ProgressFactory | None = None,
    on_row: Callable[[dict], None] | None = None,
    test_data: str | Path | None = None,
) -> list[dict]:
    """Train, evaluate and time every model of ``models`` on the same split; return one row per model.

    Args:
        data: labelled data folder: 2D images and masks, or a 3D dataset.
        out: comparison folder; model ``m`` trains into ``out/m``, which must not exist yet
            (or be empty).
        models: registered model names.
        budget_seconds: training time budget of each model (the LR schedule fits it).
        epochs: maximum epochs of each model. With neither, ``base_setup.train`` decides.
        base_setup: a :class:`~medseg.training.setup.TrainSetup` template: data options,
            preprocessing, split, training config and ``model_kwargs`` (applied, like
            ``common_kwargs``, to every model that accepts them). Its ``data``, ``out`` and
            ``model`` are replaced.
        model_kwargs: ``{model: {argument: value}}`` for single models.
        common_kwargs: arguments for every model that accepts them (e.g. ``features``).
        progress: ``progress(model)`` returns a context manager whose value gets the
            engine's callbacks (or ``None``) while that model trains.
        on_row: called with each row when its model is done.
        test_data: a labelled folder (e.g. an official test set) on which every model is
            evaluated and timed instead of the split's test part, which may then be empty.
    """
    from medseg.training.setup import TrainSetup

    names = check_models(models)
    data, out = Path(data), Path(out)
    base = copy.deepcopy(base_setup) if base_setup is not None else TrainSetup(data=str(data), out=str(out))
    if test_data is None and (len(base.split) < 3 or not base.split[2] > 0):
        raise ConfigError("the comparison needs a test subset in the split, or a test folder",
                          hint="use e.g. --split 60/20/20, or --test-data DIR")
    if budget_seconds is not None:
        if budget_seconds <= 0:
            raise ConfigError(f"time budget must be positive, got {budget_seconds}")
        base.train.time_budget = float(budget_seconds)
    if epochs is not None:
        if epochs < 1:
            raise ConfigError(f"epochs must be at least 1, got {epochs}")
        base.train.max_epochs = int(epochs)
    for name in names:
        run_dir = out / name
        if run_dir.exists() and any(run_dir.iterdir()):
            raise RunFolderError("a comparison already wrote here", path=run_dir,
                                 hint="choose a new --out folder (or delete the old one)")
    common = {**base.model_kwargs, **(common_kwargs or {})}
    specific = model_kwargs or {}
    stray = sorted(set(specific) - set(names))
    if stray:
        log.warning("model arguments given for %s, which %s not compared", ", ".join(stray), "is" if len(stray) == 1 else "are")
    # bad data fails once, here, not once per model
    log.info("comparing %s on the %d cases of %s", ", ".join(names), _count_cases(data, base), data)

    rows: list[dict] = []
    test_keys: dict[str, list[str]] = {}
    for name in names:
        setup = replace(
            base, data=str(data), out=str(out / name), model=name,
            model_kwargs=kwargs_for(name, common, specific.get(name)),
            preprocess=copy.deepcopy(base.preprocess), train=copy.deepcopy(base.train),
        )
        try:
            row = _run_one(setup, progress, test_data)
            test_keys[name] = row.pop("_test_keys")
        except Exception as e:  # noqa: BLE001 - one failed model must not stop the others
            log.error("%s failed: %s", name, e)
            log.debug("traceback of %s", name, exc_info=True)
            row = {"model": name, "error": _error_text(e, setup)}
        rows.append(row)
        if on_row:
            on_row(row)
    if len({tuple(v) for v in test_keys.values()}) > 1:  # the split is seeded, so this would be a bug
        log.warning("the models were tested on different images: %s", test_keys)

    write_comparison(out, rows, settings={
        "data": str(data.resolve()), "models": names, "budget_seconds": base.train.time_budget,
        "max_epochs": base.train.max_epochs, "split": list(base.split), "split_seed": base.split_seed,
        "train": {**base.train.to_json(), **({"patch_size": "auto"} if base.auto_patch else {})},
        "preprocess": base.preprocess.to_json() if base.preprocess else None,
        "common_kwargs": common, "model_kwargs": specific,
        "test_images": next(iter(test_keys.values()), []), "test_data": str(test_data) if test_data else "test split",
    })
    return rows


#: PyTorch's messages when a norm layer sees a single value: the network downsamples the patch to one pixel.
_TOO_SMALL = ("Expected more than 1 spatial element when training", "Expected more than 1 value per channel when training")


def _count_cases(data: Path, setup) -> int:
    """The dataset's cases, found as training will find them (an unreadable dataset fails here)."""
    if setup.dims == 2:
        from medseg.data.dataset2d import prepare_dataset

        return len(prepare_dataset(data, setup.data_options).cases)
    from medseg.data.layouts import discover_volume_cases

    return len(discover_volume_cases(data)[0])


def _error_text(e: BaseException, setup=None) -> str:
    text = " ".join(str(e).split())
    text = f"{type(e).__name__}: {text}" if text else type(e).__name__
    if any(m in str(e) for m in _TOO_SMALL):
        patch = "x".join(map(str, setup.train.patch_size)) if setup is not None else "the"
        text += (f" (the {patch} training patch is downsampled to a single pixel by this network:"
                 " use larger images or patches (--size/--patch-size) or a shallower model)")
    return text


def _run_one(setup, progress: ProgressFactory | None, test_data: str | Path | None = None) -> dict:
    from medseg.evaluation.evaluate_run import evaluate_run
    from medseg.models.summary import count_parameters
    from medseg.training.run import train

    name, run_dir = setup.model, Path(setup.out)
    log.info("training %s into %s", name, run_dir)
    with (progress(name) if progress else nullcontext()) as callbacks:
        result = train(setup, callbacks=callbacks)
    summary = evaluate_run(run_dir, test_data)
    ms, predictor, keys = inference_ms(run_dir, test_data)
    row: dict[str, Any] = {
        "model": name, "params": count_parameters(predictor.model), "train_seconds": float(result.elapsed),
        "epochs": int(result.epochs), "best_epoch": int(result.best_epoch), "stopped_by": result.stopped_by,
    }
    ious, hd95s = [], []
    for cls, stats in summary["classes"].items():
        row[f"dice_{cls}"] = stats["dice"]["mean"]
        ious.append(stats["iou"]["mean"])
        hd95s.append(_mean_or_nan(stats.get("hd95")))
    finite = [v for v in ious if not math.isnan(v)]
    finite_hd = [v for v in hd95s if not math.isnan(v)]
    row.update({
        "hd95_mean": sum(finite_hd) / len(finite_hd) if finite_hd else float("nan"),
        "mean_dice": summary["mean_dice"]["mean"], "iou_mean": sum(finite) / len(finite) if finite else float("nan"),
        "inference_ms": ms, "test_images": summary["images"], "error": "", "_test_keys": keys,
    })
    log.info("%s: mean Dice %.4f, %d epochs in %.0f s, %.1f ms per image", name, row["mean_dice"], row["epochs"],
             row["train_seconds"], ms)
    return row


def _mean_or_nan(stat: dict | None) -> float:
    """``stat["mean"]`` of a summary entry, NaN when absent or null (no case had a finite value)."""
    value = (stat or {}).get("mean")
    return float("nan") if value is None else float(value)


def inference_ms(run_dir: str | Path, test_data: str | Path | None = None):
    """Milliseconds per test image (of the split, or of the folder ``test_data``) of ``Predictor.predict``
    (after one warm-up); also the predictor and test keys."""
    from medseg.evaluation.cases import folder_cases
    from medseg.inference.inputs import InputCase, read_input
    from medseg.inference.predictor import Predictor

    run_dir = Path(run_dir)
    predictor = Predictor.from_run(run_dir)
    if test_data is not None:
        entries = folder_cases(test_data, predictor.dims, read_run_info(run_dir).get("data_options"))
    else:
        entries = read_split(run_dir)["test"]
    if not entries:
        raise RunFolderError("the run's split has no test images", path=run_dir)
    images = [read_input(InputCase(e.key, e.images), predictor.dims, predictor.num_channels) for e in entries]
    predictor.predict(images[0])  # warm-up: first-call allocations, kernel selection
    sync = _synchronizer(predictor.device)
    sync()
    t0 = time.perf_counter()
    for img in images:
        predictor.predict(img)
    sync()
    return (time.perf_counter() - t0) * 1000.0 / len(images), predictor, [e.key for e in entries]


def _synchronizer(device) -> Callable[[], None]:
    import torch

    if getattr(device, "type", str(device)).startswith("cuda"):
        return lambda: torch.cuda.synchronize(device)
    return lambda: None


def _columns(rows: list[dict]) -> list[str]:
    dice_cols: list[str] = []
    for r in rows:
        dice_cols += [k for k in r if k.startswith("dice_") and k not in dice_cols]
    extra: list[str] = []
    for r in rows:
        extra += [k for k in r if k not in _HEAD and k not in _TAIL and k not in dice_cols and k not in extra]
    return [*_HEAD, *dice_cols, *extra, *_TAIL]


def _jsonable(value):
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return value


def write_comparison(out: str | Path, rows: list[dict], settings: dict | None = None) -> list[Path]:
    """Write ``comparison.csv``, ``comparison.json`` and (when a model succeeded) ``comparison.png``."""
    out = Path(out)
    cols = _columns(rows)
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=cols, extrasaction="ignore")
    w.writeheader()
    for r in rows:
        w.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in r.items() if k in cols})
    written = [out / CSV_NAME, out / JSON_NAME]
    write_text(written[0], buf.getvalue())
    write_json(written[1], _jsonable({**(settings or {}), "columns": cols, "rows": rows}))
    if plot_comparison(rows, out / PLOT_NAME):
        written.append(out / PLOT_NAME)
    return written


def plot_comparison(rows: list[dict], path: str | Path) -> bool:
    """Test mean Dice against training seconds, one labelled point per model, marker area ~ parameters.

    Failed models (and those without a finite Dice) are left out; returns whether a figure was written.
    """
    from matplotlib.figure import Figure

    pts = [r for r in rows if not r.get("error") and _finite(r.get("mean_dice")) and _finite(r.get("train_seconds"))]
    if not pts:
        log.warning("no model has a test Dice to plot; %s not written", path)
        return False
    biggest = max(r["params"] for r in pts) or 1
    fig = Figure(figsize=(7.0, 5.0), layout="constrained")
    ax = fig.add_subplot()
    for i, r in enumerate(pts):
        size = 60 + 1200 * r["params"] / biggest
        ax.scatter(r["train_seconds"], r["mean_dice"], s=size, alpha=0.6, color=f"C{i % 10}", edgecolors="black", linewidths=0.6)
        ax.annotate(f"{r['model']}\n{_fmt_params(r['params'])}", (r["train_seconds"], r["mean_dice"]),
                    xytext=(math.sqrt(size) / 2 + 4, 0), textcoords="offset points", va="center", fontsize=9)
    ax.set_xlabel("training time (s)")
    ax.set_ylabel("test mean Dice")
    ax.set_title("Models on the same split and budget (marker area ~ parameters)")
    ax.set_ylim(max(0.0, min(r["mean_dice"] for r in pts) - 0.1), min(1.0, max(r["mean_dice"] for r in pts) + 0.1))
    xs = [r["train_seconds"] for r in pts]
    pad = max(1.0, 0.15 * (max(xs) - min(xs)))
    ax.set_xlim(max(0.0, min(xs) - pad), max(xs) + 2 * pad)
    ax.grid(True, alpha=0.3)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100, facecolor="white")
    return True


def _finite(v) -> bool:
    return isinstance(v, (int, float)) and math.isfinite(v)


def _fmt_params(n: int) -> str:
    return f"{n / 1e6:.2f} M params" if n >= 1e5 else f"{n / 1e3:.1f} k params"
