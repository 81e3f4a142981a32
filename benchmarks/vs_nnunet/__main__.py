"""``python -m benchmarks.vs_nnunet --dataset hippocampus --budget 30m``: medseg and nnU-Net side by side.

Steps (``--steps``, default all, in this order; each saves ``WORK/results.json`` so later ones can be rerun):

    env       create benchmarks/.nnunet-venv (torch as medseg's, pinned nnunetv2)           nnunet_env.py
    convert   dataset -> nnU-Net raw + fold 0 + medseg split file under WORK                convert.py
    nnunet    plan+preprocess, train fold 0, predict the evaluated cases with/without TTA   run_nnunet.py
    medseg    train under the budget on the same cases, predict with/without TTA            run_medseg.py
    evaluate  every prediction folder through `medseg evaluate`; nnU-Net's evaluator once   evaluate.py
    table     print the markdown table (--append: also to BENCHMARKS.md)                    table.py

``WORK`` defaults to ``benchmarks/out/vs_nnunet/<dataset>`` (ignored by git). ``--smoke`` checks the whole
pipeline in minutes: a few cases, nnU-Net's tiny ``nnUNetTrainer_medsegSmoke`` (2 iterations), a 20 s
medseg budget, in ``WORK-smoke``; its numbers mean nothing and are never appended.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
import shlex
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks.vs_nnunet import convert as conv_mod  # noqa: E402
from benchmarks.vs_nnunet.datasets import resolve  # noqa: E402
from benchmarks.vs_nnunet.nnunet_env import DEFAULT_VENV, NNUNET_VERSION, ensure_nnunet_env  # noqa: E402

STEPS = ("env", "convert", "nnunet", "medseg", "evaluate", "table")
log = logging.getLogger("benchmarks.vs_nnunet")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.vs_nnunet", description=__doc__.splitlines()[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter, epilog="\n".join(__doc__.splitlines()[2:]))
    ap.add_argument("--dataset", required=True, help="hippocampus | drive | PATH of a dataset folder medseg reads")
    ap.add_argument("--split-file", help="3D PATH datasets: JSON {train, val[, test]} (default: seeded 80/20 train/val)")
    ap.add_argument("--budget", help="medseg's training time budget (default 30m; 20s with --smoke)")
    ap.add_argument("--device", default="auto", help="auto | cpu | cuda (both tools)")
    ap.add_argument("--nnunet-trainer", help="default nnUNetTrainer_1epoch on CPU, nnUNetTrainer_20epochs on GPU")
    ap.add_argument("--steps", default=",".join(STEPS), help=f"comma-separated subset of {','.join(STEPS)}")
    ap.add_argument("--work", type=Path, help="working folder (default benchmarks/out/vs_nnunet/<dataset>)")
    ap.add_argument("--venv", type=Path, default=DEFAULT_VENV, help="nnU-Net's virtual environment")
    ap.add_argument("--medseg-arg", action="append", default=[],
                    help="extra `medseg train` argument, repeatable: --medseg-arg=--monitor --medseg-arg=val_dice")
    ap.add_argument("--smoke", action="store_true", help="a few cases and iterations: checks the pipeline only")
    ap.add_argument("--append", action="store_true", help="append the table to BENCHMARKS.md")
    a = ap.parse_args(argv)
    unknown = set(a.steps.split(",")) - set(STEPS)
    if unknown:
        ap.error(f"unknown steps {sorted(unknown)}; choose from {','.join(STEPS)}")
    if a.append and a.smoke:
        ap.error("--append is not allowed with --smoke")
    a.budget = a.budget or ("20s" if a.smoke else "30m")
    return a


def reproduce_command(a: argparse.Namespace) -> str:
    """The command that reruns every step of this benchmark (whatever ``--steps`` this call had)."""
    parts = ["python -m benchmarks.vs_nnunet", "--dataset", a.dataset, "--budget", a.budget]
    for flag, value in (("--split-file", a.split_file), ("--device", None if a.device == "auto" else a.device),
                        ("--nnunet-trainer", a.nnunet_trainer)):
        if value:
            parts += [flag, str(value)]
    parts += [f"--medseg-arg={extra}" for extra in a.medseg_arg] + (["--smoke"] if a.smoke else [])
    return " ".join(shlex.quote(p) if i else p for i, p in enumerate(parts))


def resolve_device(device: str) -> str:
    if device != "auto":
        return device
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def main(argv: list[str] | None = None) -> dict:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    a = parse_args(argv)
    steps = [s for s in STEPS if s in a.steps.split(",")]
    device = resolve_device(a.device)
    ds = resolve(a.dataset, a.split_file)
    if a.smoke:
        ds = ds.smoke()
    work = a.work or ROOT / "benchmarks" / "out" / "vs_nnunet" / (ds.name.lower() + ("-smoke" if a.smoke else ""))
    work.mkdir(parents=True, exist_ok=True)
    results_path = work / "results.json"
    results = json.loads(results_path.read_text()) if results_path.is_file() else {}
    from benchmarks.common import describe
    from benchmarks.vs_nnunet.run_nnunet import SMOKE_TRAINER, default_trainer

    trainer = a.nnunet_trainer or (SMOKE_TRAINER if a.smoke else default_trainer(device))
    results.update({
        "dataset": ds.nnunet_name, "dim": ds.dim, "device": device, "budget": a.budget, "smoke": a.smoke,
        "fov": ds.dim == 2 and any(c.fov for c in ds.test),
        "cases": {"train": len(ds.train), "val": len(ds.val), "test": len(ds.test)},
        "command": reproduce_command(a),
    })
    if {"nnunet", "medseg"} & set(steps) or "date" not in results:  # the date and machine of the runs, not of a later table
        results.update(date=dt.date.today().isoformat(), machine=describe())
    results.setdefault("nnunet", {}).update(version=NNUNET_VERSION, trainer=trainer,
                                            configuration="3d_fullres" if ds.dim == 3 else "2d")
    results.setdefault("medseg", {})

    def save() -> None:
        results_path.write_text(json.dumps(results, indent=1) + "\n")

    env = ensure_nnunet_env(a.venv) if {"env", "nnunet", "evaluate"} & set(steps) else None
    conv = conv_mod.convert(ds, work) if "convert" in steps else conv_mod.Converted(work, ds)
    if not conv.raw.is_dir():
        sys.exit(f"{conv.raw} not found: run the convert step first")
    nn = med = None
    if env is not None:
        from benchmarks.vs_nnunet.run_nnunet import NnunetRunner

        nn = NnunetRunner(env, conv, device, trainer)
    from benchmarks.vs_nnunet.run_medseg import MedsegRunner

    med = MedsegRunner(conv, device, a.budget, tuple(a.medseg_arg))
    preds = work / "predictions"

    def predict_both(tool, name: str, r: dict) -> None:
        """The evaluated cases predicted with and without test-time augmentation; timings into ``r``."""
        r["predict"] = {}
        for tta in (True, False):
            key = "tta" if tta else "notta"
            log.info("%s: predict %d cases, %s", name, len(ds.test), key)
            r["predict"][key] = tool.predict(preds / f"{name}_{key}", tta).to_json()
            save()

    if "nnunet" in steps:
        r = results["nnunet"]
        log.info("nnU-Net: plan and preprocess")
        r["plan_and_preprocess"] = nn.plan_and_preprocess().to_json()
        save()
        log.info("nnU-Net: train %s (logs in %s)", trainer, nn.logs)
        r["train"] = nn.train().to_json()
        r["epoch_seconds"] = nn.epoch_seconds()
        save()
        predict_both(nn, "nnunet", r)
    if "medseg" in steps:
        r = results["medseg"]
        log.info("medseg: train, budget %s (log in %s)", a.budget, med.logs)
        r["train"] = med.train().to_json()
        r["epochs"] = med.epochs()
        save()
        predict_both(med, "medseg", r)
    if "evaluate" in steps:
        from benchmarks.vs_nnunet.evaluate import medseg_evaluate

        for tool in ("nnunet", "medseg"):
            for key in ("tta", "notta"):
                pred = preds / f"{tool}_{key}"
                if pred.is_dir():
                    log.info("medseg evaluate %s", pred)
                    results[tool].setdefault("eval", {})[key] = medseg_evaluate(conv, pred, work / "evaluation" / pred.name)
        if (preds / "nnunet_tta").is_dir():
            log.info("nnU-Net's evaluator on %s", preds / "nnunet_tta")
            results["nnunet"]["nnunet_eval"] = nn.evaluate_folder(preds / "nnunet_tta", work / "evaluation" / "nnunet_tta_nnunet_summary.json")
            if conv.fov_test is not None:  # the same whole-image scoring through medseg, for a like-for-like cross-check
                results["nnunet"]["eval_whole_image_tta"] = medseg_evaluate(conv, preds / "nnunet_tta",
                                                                            work / "evaluation" / "nnunet_tta_whole_image", use_fov=False)
        save()
    if "table" in steps:
        from benchmarks.vs_nnunet.table import append_to_benchmarks, markdown

        text = markdown(results)
        print(text)
        if a.append:
            log.info("appended to %s", append_to_benchmarks(text, results))
    save()
    return results


if __name__ == "__main__":
    main()
