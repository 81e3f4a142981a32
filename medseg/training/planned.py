"""A plan plus the flags given on the command line → the training setup.

:func:`plan_setup` takes a :class:`~medseg.training.setup.TrainSetup` built from the command line, a plan (read from
``--plan FILE``, or made from the data's fingerprint) and the names of the options the user
actually gave. Each plan entry replaces the setup's value unless its flag was given; a given
flag that differs from the plan is recorded in ``plan.json``'s ``overrides`` and in the run's
``train.extra["plan"]``. The plan (and the fingerprint, when one was computed) are written to
the run folder, which the data folder never is (it may be read-only).

Flag → plan entry: ``--patch-size`` → ``patch.size``, ``--batch-size`` → ``batch.size``,
``--model/--features/--depth/--dropout`` → ``network``, ``--normalize`` →
``normalization.scheme``, ``--target-spacing`` → ``spacing.target``, ``--crop-nonzero`` →
``crop_to_nonzero.value``, ``--epochs/--iterations/--time-budget`` → ``training``, 2D: ``--scale``/``--long-side`` (and
``--size``, a fixed size) → ``spacing.scale``/``spacing.long_side``.
A new patch (``--patch-size``, or ``--size`` smaller than the planned patch) re-plans the
network's strides for it; ``--depth`` leaves strides to the hand-set rules, as without a plan.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

from medseg.errors import ConfigError
from medseg.io.atomic import write_json
from medseg.planning.plan import Plan, load_plan, validate_plan
from medseg.planning.topology import plan_topology

log = logging.getLogger(__name__)

PLAN_FILE = "plan.json"
FINGERPRINT_FILE = "fingerprint.json"

#: train option name -> plan entry it overrides
FLAG_ENTRIES = {
    "patch_size": "patch.size", "batch_size": "batch.size", "model": "network.model", "features": "network.features",
    "depth": "network.depth", "dropout": "network.dropout", "normalize": "normalization.scheme",
    "target_spacing": "spacing.target", "crop_nonzero": "crop_to_nonzero.value", "epochs": "training.max_epochs",
    "iterations": "training.iterations_per_epoch", "time_budget": "training.time_budget",
    "monitor": "training.monitor", "augment_warmup": "training.augment_warmup",
    "scale": "spacing.scale", "long_side": "spacing.long_side",
}

NETWORK_KEYS = ("features", "depth", "strides", "kernel_sizes", "max_features", "dropout")
#: network arguments the plan does not decide, kept as given
KEPT_KWARGS = ("deep_supervision",)


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, list) and isinstance(b, str):  # one normalisation for every channel
        return all(x == b for x in a)
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    if isinstance(a, (int, float)) and isinstance(b, (int, float)) and not isinstance(a, bool):
        return abs(float(a) - float(b)) <= 1e-9 * max(1.0, abs(float(a)))
    return a == b


def obtain_plan(setup, plan_file: str | Path | None, *, progress: Callable[[int, int], None] | None = None,
                time_budget: float | None = None) -> tuple[Plan, dict | None]:
    """``(plan, fingerprint or None)``: the plan in ``plan_file``, or a new one made from the data."""
    dims = setup.dims
    if plan_file is not None:
        plan = load_plan(plan_file)
        if plan.dims != dims:
            raise ConfigError(f"plan key 'data.dims' is {plan.dims}, but {setup.data} holds {dims}D data",
                              path=plan_file, hint=f"make a plan for this data: medseg plan {setup.data}")
        if Path(plan["data"]["path"]).resolve() != Path(setup.data).resolve():
            log.warning("the plan %s was made for %s, not %s", plan_file, plan["data"]["path"], setup.data)
        return plan, None
    from medseg.planning.fingerprint import compute_fingerprint
    from medseg.planning.planner import make_plan

    fp = compute_fingerprint(setup.data, data_options=setup.data_options, progress=progress)
    for p in fp["problems"][:10]:
        log.warning("%s%s: %s", f"{p['case']}: " if p["case"] else "", p["kind"], p["detail"])
    return make_plan(fp, device=setup.train.device, time_budget=time_budget, fingerprint_file=FINGERPRINT_FILE,
                     val_cases=expected_val_cases(setup, fp["num_cases"])), fp


def expected_val_cases(setup, num_cases: int) -> int:
    """How many cases the setup's split will validate on: the split file's ``val`` list, else the
    ``--split`` share of its ``train`` list (or of every case); the plan sizes validation by it."""
    fr = setup.split
    share = fr[1] / (fr[0] + fr[1]) if fr[0] + fr[1] > 0 else 0.0
    if setup.split_file:
        try:
            raw = json.loads(Path(setup.split_file).read_text(encoding="utf-8"))
            if isinstance(raw.get("val"), list):
                return len(raw["val"])
            return round(len(raw.get("train") or []) * share)
        except (OSError, ValueError, AttributeError):
            pass  # an unreadable split file is reported when training reads it
    return round(num_cases * fr[1])


def plan_setup(setup, plan: Plan, given: set[str], plan_source: str = "made from the data"):
    """Write the plan's entries into ``setup`` (in place) except those whose flag is in ``given``;
    return the overrides ``{entry: {"plan": value, "used": value, "flag": name}}``."""
    is_3d = setup.dims == 3
    if setup.dims != plan.dims:
        raise ConfigError(f"the plan is for {plan.dims}D data, the setup for {'3' if is_3d else '2'}D")
    cfg = setup.train
    overrides: dict[str, Any] = {}

    def entry(flag: str, current: Any) -> bool:
        """Whether the plan's value is used for ``flag``; records an override otherwise."""
        section, key = FLAG_ENTRIES[flag].split(".")
        planned = plan[section].get(key)
        if flag not in given:
            return True
        if not _same(planned, current):
            overrides[FLAG_ENTRIES[flag]] = {"plan": planned, "used": current, "flag": "--" + flag.replace("_", "-")}
        return False

    # training length and sampling
    if entry("time_budget", cfg.time_budget):
        cfg.time_budget = plan["training"]["time_budget"]
    if entry("epochs", cfg.max_epochs):
        cfg.max_epochs = plan["training"]["max_epochs"]
    if entry("iterations", cfg.iterations_per_epoch):
        cfg.iterations_per_epoch = plan["training"]["iterations_per_epoch"]
    cfg.foreground_fraction = plan["training"]["foreground_fraction"]
    if "monitor" in plan["training"] and entry("monitor", cfg.monitor):
        cfg.monitor = plan["training"]["monitor"]
    if "augment_warmup" in plan["training"] and entry("augment_warmup", cfg.augment_warmup):
        cfg.augment_warmup = plan["training"]["augment_warmup"]
    cfg.val_max_cases = plan["training"].get("val_max_cases")
    cfg.val_every = plan["training"].get("val_every", 1)
    if entry("batch_size", cfg.batch_size):
        cfg.batch_size = plan["batch"]["size"]

    # patch
    planned_patch = list(plan["patch"]["size"])
    patch = planned_patch
    if not entry("patch_size", list(cfg.patch_size)):
        patch = list(cfg.patch_size)
    elif not is_3d and getattr(setup.preprocess, "size", None) is not None:
        patch = [min(p, s) for p, s in zip(planned_patch, setup.preprocess.size)]  # --size: images resized smaller
    cfg.patch_size = tuple(int(p) for p in patch)

    # network
    net = plan["network"]
    model_given = "model" in given
    entry("model", setup.model)
    if not model_given:
        setup.model = net["model"]
    if setup.model == net["model"] == "unet":
        kwargs = {k: net[k] for k in NETWORK_KEYS if net.get(k) is not None}
        for flag in ("features", "depth", "dropout"):
            if flag in setup.model_kwargs and not entry(flag, setup.model_kwargs[flag]):
                kwargs[flag] = setup.model_kwargs[flag]
        if "depth" in given and kwargs.get("depth") != net.get("depth"):
            kwargs.pop("strides", None)      # the hand-set rules place them, as without a plan
            kwargs.pop("kernel_sizes", None)
        elif patch != planned_patch and "strides" in kwargs:
            spacing = plan["spacing"]["target"] or [1.0] * plan.dims
            kwargs.update(plan_topology(patch, spacing, int(kwargs["depth"])).to_json())
        setup.model_kwargs = {**kwargs, **{k: v for k, v in setup.model_kwargs.items() if k in KEPT_KWARGS}}
    else:
        setup.model_kwargs = {k: v for k, v in setup.model_kwargs.items() if k in ("features", "depth", "dropout", *KEPT_KWARGS)}

    # preprocessing
    schemes = plan["normalization"]["scheme"]
    if is_3d:
        scheme = schemes[0] if len(set(schemes)) == 1 else list(schemes)
        if entry("normalize", setup.normalization):
            setup.normalization = scheme
        if entry("target_spacing", list(setup.target_spacing) if setup.target_spacing else None):
            setup.target_spacing = tuple(plan["spacing"]["target"])
        if entry("crop_nonzero", setup.crop_to_nonzero):
            setup.crop_to_nonzero = plan["crop_to_nonzero"]["value"]
        stats = plan["normalization"].get("stats")
        if stats and "normalize" not in given:
            from medseg.data.preprocess3d import Preprocess3D

            spacing = setup.target_spacing or tuple(plan["spacing"]["target"])
            setup.preprocess = Preprocess3D(spacing, setup.normalization, stats, setup.crop_to_nonzero)
        setup.auto_patch = setup.auto_batch = False
    else:
        from medseg.data.preprocess2d import Preprocess2D

        pre = setup.preprocess or Preprocess2D()
        if entry("normalize", pre.normalize):
            pre.normalize = schemes[0]
        planned = {k: plan["spacing"].get(k) for k in ("scale", "long_side")}
        if given & {"size", "scale", "long_side"}:  # the working resolution is the user's
            used = {"scale": pre.scale, "long_side": pre.long_side}
            for key in ("scale", "long_side"):
                if not _same(planned[key], used[key]):
                    flag = key if key in given else "size"
                    overrides[f"spacing.{key}"] = {"plan": planned[key], "used": used[key], "flag": "--" + flag.replace("_", "-")}
        else:
            pre.scale, pre.long_side = planned["scale"], planned["long_side"]
        setup.preprocess = pre
        setup.auto_patch = False
    if plan["device"]["kind"] == "cuda" and cfg.device == "cpu" or plan["device"]["kind"] == "cpu" and cfg.device.startswith("cuda"):
        log.warning("the plan was made for %s, training runs on %s: batch and patch may not suit it",
                    plan["device"]["kind"], cfg.device)
    cfg.extra = {**cfg.extra, "plan": {"file": PLAN_FILE, "source": plan_source, "overrides": overrides}}
    return overrides


def plan_for_training(setup, plan_file: str | Path | None, given: set[str],
                      progress: Callable[[int, int], None] | None = None):
    """Plan ``setup`` (see :func:`plan_setup`) and write ``plan.json`` (+ ``fingerprint.json``) into its run folder.

    Under ``torchrun`` rank 0 alone reads the data, makes the plan and writes; the other ranks
    receive its plan, so that every rank trains with the same one. Returns ``(setup, plan, overrides)``.
    """
    from medseg.runfolder import check_new_run_folder
    from medseg.runtime import distributed

    if not distributed.is_main():
        raw = distributed.broadcast(None)
        plan = validate_plan(raw["plan"])
        return setup, plan, plan_setup(setup, plan, given, raw["source"])
    out = Path(setup.out)
    check_new_run_folder(out)  # before writing into it
    budget = setup.train.time_budget if "time_budget" in given else None
    plan, fp = obtain_plan(setup, plan_file, progress=progress, time_budget=budget)
    source = str(Path(plan_file).resolve()) if plan_file is not None else "made from the data"
    distributed.broadcast({"plan": plan.to_json(), "source": source})
    overrides = plan_setup(setup, plan, given, source)
    out.mkdir(parents=True, exist_ok=True)
    if fp is not None:
        write_json(out / FINGERPRINT_FILE, fp)
    plan.overrides = overrides
    plan.save(out / PLAN_FILE)
    if overrides:
        log.debug("flags override the plan: %s", ", ".join(f"{k} = {v['used']}" for k, v in overrides.items()))
    return setup, plan, overrides
