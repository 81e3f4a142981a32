"""The GPU path in one script (issue 24): run it once on a GPU machine, paste its table into BENCHMARKS.md.

    python -m benchmarks.gpu_check [--steps 30] [--full]      # on the GPU: a few minutes (--full adds the two below)
    python -m benchmarks.gpu_check --smoke                    # anywhere, tiny: what `make test` runs

Prints one table, each row a measurement or a reason it was skipped:

1. **Model-only optimiser step** (forward, backward, step on tensors already on the device), batch 7, patch
   40x56x40, 3 classes, for medseg's 3D U-Net at nnU-Net's Hippocampus configuration (32 features, 4
   downsamplings) and at medseg's own CPU default (16 features, 3 downsamplings), each in fp32 (TF32 allowed),
   fp16 with a GradScaler, bf16, bf16 + channels-last, and bf16 + ``torch.compile``: median milliseconds per step
   after warm-up, and peak GPU memory.
2. **Inference**: seconds per Hippocampus-sized case (36x50x35 voxels) with the sliding window medseg predicts
   with, with and without mirroring TTA.
3. **DDP**: a 1-process ``torchrun`` of this script's ``--ddp-probe`` that initialises the process group on the
   default backend (NCCL on a GPU) and all-reduces one tensor.
4. With ``--full``, the existing benchmarks with ``--device cuda``: ``benchmarks/throughput.py`` (data-pipeline
   overhead against the model-only step; loader threads via ``-- --workers N``) and ``benchmarks/time_to_dice.py``
   (time to a mean validation Dice of 0.88 on the shared 160/40 split).

``--smoke`` shrinks everything (batch 2, patch 16x16x16, 4 features, 3 steps) so it runs on a CPU in seconds;
rows that need CUDA say so.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

ROOT = Path(__file__).resolve().parents[1]


def _sync(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def model_step(config: dict, precision: str, *, batch: int, patch: tuple[int, ...], steps: int, device,
               channels_last: bool = False, compile_model: bool = False) -> tuple[float, float | None]:
    """(median ms per optimiser step, peak GPU memory in GiB or None) of one setting."""
    import torch

    from medseg.models.registry import create_model

    if precision == "fp16" and device.type != "cuda":
        raise RuntimeError("fp16 with a GradScaler needs CUDA")
    torch.manual_seed(0)
    model = create_model("unet", spatial_dims=3, in_channels=1, num_classes=3, **config).to(device)
    fmt = torch.channels_last_3d if channels_last else torch.contiguous_format
    model = model.to(memory_format=fmt)
    step_model = torch.compile(model) if compile_model else model
    opt = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.99, nesterov=True)
    scaler = torch.amp.GradScaler("cuda", enabled=precision == "fp16")
    dtype = {"fp32": None, "fp16": torch.float16, "bf16": torch.bfloat16}[precision]
    x = torch.randn(batch, 1, *patch, device=device).to(memory_format=fmt)
    y = torch.randint(0, 3, (batch, *patch), device=device)
    loss_fn = torch.nn.CrossEntropyLoss()
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
        torch.cuda.reset_peak_memory_stats(device)
    times = []
    for i in range(steps + 3):  # 3 warm-up steps (compilation, cuDNN autotuning)
        _sync(device)
        t0 = time.perf_counter()
        with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
            out = step_model(x)
            loss = loss_fn(out.float(), y)
        opt.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()
        _sync(device)
        if i >= 3:
            times.append(1000 * (time.perf_counter() - t0))
    peak = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None
    return statistics.median(times), peak


def inference_seconds(config: dict, *, patch: tuple[int, ...], shape: tuple[int, ...], mirror: bool, repeats: int, device) -> float:
    import torch

    from medseg.inference.sliding_window import predict_probabilities
    from medseg.models.registry import create_model
    from medseg.runtime.device import amp_dtype_for, autocast_for

    model = create_model("unet", spatial_dims=3, in_channels=1, num_classes=3, **config).to(device).eval()
    image = torch.randn(1, *shape)
    axes = tuple(range(3)) if mirror else ()
    times = []
    for i in range(repeats + 1):
        _sync(device)
        t0 = time.perf_counter()
        with autocast_for(device, amp_dtype_for(device, True)):
            predict_probabilities(model, image, patch, overlap=0.5, batch_size=2, mirror_axes=axes, device=device)
        _sync(device)
        if i:
            times.append(time.perf_counter() - t0)
    return statistics.median(times)


def ddp_probe() -> None:
    """Run by torchrun: initialise the default process group, all-reduce a tensor, print the backend."""
    import torch
    import torch.distributed as dist

    backend = "nccl" if torch.cuda.is_available() else "gloo"
    dist.init_process_group(backend)
    device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0))) if backend == "nccl" else torch.device("cpu")
    t = torch.ones(1, device=device)
    dist.all_reduce(t)
    print(f"ddp-probe backend={backend} world={dist.get_world_size()} sum={t.item():.0f}", flush=True)
    dist.destroy_process_group()


def ddp_check(timeout: float = 120) -> str:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=1",
           str(Path(__file__).resolve()), "--ddp-probe"]
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=ROOT)
    except subprocess.TimeoutExpired:
        return f"timed out after {timeout:.0f} s"
    line = next((x for x in done.stdout.splitlines() if x.startswith("ddp-probe")), None)
    return line.removeprefix("ddp-probe ") if done.returncode == 0 and line else f"failed ({done.returncode}): {done.stderr[-300:]}"


def rows(smoke: bool, steps: int, compile_model: bool) -> list[tuple[str, str]]:
    import torch

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    batch, patch = (2, (16, 16, 16)) if smoke else (7, (40, 56, 40))
    steps = min(steps, 3) if smoke else steps
    configs = ({"nnU-Net's network (4 features, 2 downsamplings in smoke)": {"features": 4, "depth": 2}} if smoke else
               {"nnU-Net's network (32 features, 4 downsamplings)": {"features": 32, "depth": 4},
                "medseg CPU default (16 features, 3 downsamplings)": {"features": 16, "depth": 3}})
    settings = [("fp32", {}), ("fp16 + GradScaler", {}), ("bf16", {}), ("bf16 + channels-last", {"channels_last": True}),
                ("bf16 + torch.compile", {"compile_model": True})]
    out = []
    for name, config in configs.items():
        for label, extra in settings:
            precision = label.split()[0]
            key = f"step, batch {batch}, patch {'x'.join(map(str, patch))}: {name}, {label}"
            if extra.get("compile_model") and not compile_model:
                out.append((key, "skipped (--no-compile)"))
                continue
            try:
                ms, peak = model_step(config, precision, batch=batch, patch=patch, steps=steps, device=device, **extra)
                out.append((key, f"{ms:.1f} ms" + (f", peak {peak:.2f} GiB" if peak is not None else "")))
            except (RuntimeError, ValueError, AssertionError) as e:
                out.append((key, f"skipped: {str(e).splitlines()[0][:120]}"))
    config = next(iter(configs.values()))
    shape = (20, 24, 20) if smoke else (36, 50, 35)
    for mirror in (False, True):
        s = inference_seconds(config, patch=patch, shape=shape, mirror=mirror, repeats=1 if smoke else 5, device=device)
        out.append((f"inference, one {'x'.join(map(str, shape))} case{', mirroring TTA' if mirror else ''}", f"{s:.3f} s"))
    out.append(("torchrun, 1 process: process group + all-reduce", ddp_check()))
    out.append(("device", f"{torch.cuda.get_device_name(0)}, CUDA {torch.version.cuda}, driver via nvidia-smi"
                if device.type == "cuda" else "CPU (no CUDA): the GPU rows are the smoke configuration"))
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--smoke", action="store_true", help="tiny configuration, runs on a CPU in seconds")
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--no-compile", action="store_true", help="skip the torch.compile row")
    ap.add_argument("--full", action="store_true", help="also run benchmarks/throughput.py and time_to_dice.py on cuda")
    ap.add_argument("--ddp-probe", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.ddp_probe:
        ddp_probe()
        return 0
    from benchmarks.common import describe

    print(describe())
    table = rows(args.smoke, args.steps, not args.no_compile and not args.smoke)
    print("\n| measurement | result |\n|---|---|")
    for key, value in table:
        print(f"| {key} | {value} |")
    if args.full and not args.smoke:
        for script, extra in (("throughput.py", ["--datasets", "hippocampus", "--", "--device", "cuda"]),
                              ("time_to_dice.py", ["--budget", "10m", "--levels", "0.85,0.88", "--", "--device", "cuda"])):
            subprocess.run([sys.executable, str(ROOT / "benchmarks" / script), *extra], cwd=ROOT, check=False)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
