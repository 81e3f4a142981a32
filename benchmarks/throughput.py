"""Training throughput (samples/s) of the full pipeline versus the model alone, and the
data pipeline's overhead, for Hippocampus 3D and DRIVE 2D at the patch and batch medseg picks.

    python benchmarks/throughput.py [--datasets hippocampus,drive] [--steps 30] [--device auto]
                                    [--patch-size 40x56x40] [--batch-size 2] [-- extra `medseg train` flags]

For each dataset, a one-step `medseg train` run (the CLI, so the plan and defaults are
medseg's own) fixes patch, batch, network and training settings; the engine is then
rebuilt in process from that run folder, and two kinds of optimiser steps are timed
in interleaved blocks (robust to other load on the machine):

- **full**: patch sampling from the preprocessed (memory-mapped, for 3D) arrays,
  transfer, batched augmentation on the device, forward/backward/step, training metric;
- **model**: forward/backward/step on random tensors already on the device.

overhead = (full step time - model step time) / model step time. The data path is also
timed on its own (sampling, augmentation), and so is one validation pass over the run's
validation cases as the engine runs it, which gives an epoch's time: iterations x full step +
validation. Preprocessed Hippocampus cases are cached in ``--cache`` so that later runs skip
preprocessing.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import time
from pathlib import Path
from unittest import mock

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.common import describe, run_medseg  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "datasets"
HIPPO = SHARED / "hippocampus"
DRIVE = SHARED / "drive" / "training"


def one_step_run(dataset: str, run: Path, cache: Path, extra: list[str]) -> None:
    """A `medseg train` run of a single step: the run folder records what medseg picked."""
    common = ["--out", str(run), "--epochs", "1", "--iterations", "1", *extra]
    if dataset == "hippocampus":
        run_medseg("train", str(HIPPO), "--split-file", str(HIPPO / "split_160_40.json"), "--cache-dir", str(cache), *common)
    else:
        run_medseg("train", str(DRIVE), "--split", "85/15/0", *common)


def trainer_from_run(run: Path):
    """The engine exactly as `medseg train --resume RUN` would build it (its fit is not run)."""
    from medseg.training.engine import Trainer, TrainResult
    from medseg.training.run import train
    from medseg.training.setup import setup_from_run

    captured = {}

    def capture(self, resume=False):
        captured["trainer"] = self
        return TrainResult(0, -1, float("nan"), "benchmark", 0.0)

    setup = setup_from_run(run)
    setup.train.augment = True
    with mock.patch.object(Trainer, "fit", capture):
        train(setup, resume=True)
    return captured["trainer"]


def sync(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn, n: int, device) -> list[float]:
    times = []
    for _ in range(n):
        sync(device)
        t = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - t)
    return times


def validation_times(trainer, reps: int = 2) -> list[float]:
    """Seconds of one ``trainer.validate()`` over the run's validation cases, as the engine runs it each epoch."""
    timed(trainer.validate, 1, trainer.device)  # warm-up
    return timed(trainer.validate, reps, trainer.device)


def measure(trainer, steps: int, block: int = 5) -> dict:
    import torch

    from medseg.evaluation.overlap import OverlapMetric
    from medseg.runtime.device import single_threaded

    cfg, dev = trainer.cfg, trainer.device
    metric = OverlapMetric(trainer.num_classes)
    x0, _ = trainer.next_batch()
    x = torch.randn_like(x0)
    y = torch.randint(0, trainer.num_classes, (x.shape[0], *x.shape[2:]), device=dev)
    lr = cfg.lr * 0.5

    def full():
        trainer.train_step(lr, metric)

    def model_only():
        trainer.train_step(lr, None, batch=(x, y), augment=False)

    timed(full, 3, dev)  # warm-up (allocations, autotuning, compilation)
    timed(model_only, 3, dev)
    t_full, t_model = [], []
    for _ in range(max(1, steps // block)):  # interleaved blocks: both see the same machine load
        t_full += timed(full, block, dev)
        t_model += timed(model_only, block, dev)

    def sample():
        with single_threaded(dev):  # as in the engine's step
            return trainer.next_batch()

    def augment():
        with single_threaded(dev):
            trainer.augment(*batch, trainer.aug_gen)

    batch = trainer.next_batch()
    t_sample = timed(sample, 2 * block, dev)
    t_val = validation_times(trainer)
    t_aug = timed(augment, 2 * block, dev) if trainer.augment else [0.0]
    med = statistics.median
    return {"patch": "x".join(map(str, cfg.patch_size)), "batch": cfg.batch_size, "full": med(t_full), "model": med(t_model),
            "sample": med(t_sample), "augment": med(t_aug), "validate": med(t_val), "amp": str(trainer.amp_dtype).replace("torch.", "") if trainer.amp_dtype else "float32"}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--datasets", default="hippocampus,drive")
    ap.add_argument("--steps", type=int, default=30, help="timed steps of each kind (in blocks of 5)")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "out" / "throughput"))
    ap.add_argument("--cache", default=str(ROOT / "benchmarks" / "out" / "cache" / "hippocampus"))
    ap.add_argument("--fp32", action="store_true", help="switch mixed precision off (for comparison)")
    ap.add_argument("--reuse", action="store_true", help="keep the one-step runs of an earlier call (same flags)")
    ap.add_argument("extra", nargs="*", help="extra `medseg train` flags (after --), e.g. --patch-size 40x56x40 --device cuda")
    a = ap.parse_args()
    rows = []
    for name in a.datasets.split(","):
        data = HIPPO if name == "hippocampus" else DRIVE
        if not data.is_dir():
            print(f"{name}: not found at {data}, skipped")
            continue
        run = Path(a.out) / name
        if not (a.reuse and (run / "medseg_run.json").is_file()):
            if run.exists():
                shutil.rmtree(run)
            one_step_run(name, run, Path(a.cache), a.extra)
        trainer = trainer_from_run(run)
        if a.fp32:
            trainer.amp_dtype = None
        r = measure(trainer, a.steps)
        r["dataset"], r["device"] = name, str(trainer.device)
        # the planned epoch length (the one-step run itself was told --iterations 1)
        plan = json.loads((run / "plan.json").read_text()) if (run / "plan.json").is_file() else {}
        r["iterations"] = plan.get("training", {}).get("iterations_per_epoch", 50)
        rows.append(r)
    print()
    print(f"machine: {describe()}")
    print(f"train flags: {' '.join(a.extra) or '(medseg defaults)'}; median step times over {a.steps} steps of each kind")
    print("| dataset | device | amp | patch | batch | full samples/s | model-only samples/s | full ms/step | model ms/step "
          "| overhead | sampling ms | augmentation ms | validation s | epoch s |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        over = (r["full"] - r["model"]) / r["model"]
        print(f"| {r['dataset']} | {r['device']} | {r['amp']} | {r['patch']} | {r['batch']} | {r['batch'] / r['full']:.1f} | "
              f"{r['batch'] / r['model']:.1f} | {1000 * r['full']:.0f} | {1000 * r['model']:.0f} | {100 * over:+.1f}% | "
              f"{1000 * r['sample']:.1f} | {1000 * r['augment']:.1f} | {r['validate']:.2f} | "
              f"{r['iterations'] * r['full'] + r['validate']:.1f} |")
    print("epoch s = planned iterations per epoch x full step + one validation pass (the engine's, every epoch)")


if __name__ == "__main__":
    main()
