"""The nnU-Net side: plan + preprocess, train fold 0, predict the evaluated cases with and without TTA,
and nnU-Net's own evaluator for the cross-check. Every step is one of nnU-Net's own commands, run from
its venv (:mod:`benchmarks.vs_nnunet.nnunet_env`) and measured (:mod:`benchmarks.vs_nnunet.measure`).

nnU-Net's folders are given through ``nnUNet_raw``/``nnUNet_preprocessed``/``nnUNet_results`` in the
environment of these subprocesses only; ``nnUNet_extTrainer`` points at ``nnunet_trainers/`` (the smoke
trainer). Fold 0 is ``WORK/splits_final.json``, copied into the preprocessed folder after planning, so
nnU-Net trains on exactly medseg's training cases.

Commands (CPU; ``-device cuda`` on a GPU; 2D datasets use configuration ``2d``)::

    nnUNetv2_plan_and_preprocess -d ID -c 3d_fullres -np N -npfp N --verify_dataset_integrity   (N = min(8, cores))
    nnUNetv2_train ID 3d_fullres 0 -tr nnUNetTrainer_1epoch -device cpu
    nnUNetv2_predict -i imagesTs -o OUT -d ID -c 3d_fullres -f 0 -tr nnUNetTrainer_1epoch -device cpu [--disable_tta]
    nnUNetv2_evaluate_folder labelsTs OUT -djfile dataset.json -pfile nnUNetPlans.json -o summary.json

``nnUNetv2_train`` includes nnU-Net's final validation of the fold's validation cases (it always runs it);
the summed ``Epoch time`` lines of its log give the training alone.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path

from benchmarks.vs_nnunet.convert import Converted
from benchmarks.vs_nnunet.measure import Measured, run_measured
from benchmarks.vs_nnunet.nnunet_env import NnunetEnv

TRAINERS = Path(__file__).resolve().parent / "nnunet_trainers"
SMOKE_TRAINER = "nnUNetTrainer_medsegSmoke"


def default_trainer(device: str) -> str:
    """The epoch-limited trainer of the issue: 1 epoch on a CPU (32 min for Hippocampus on 2 cores here; DRIVE much longer), 20 on a GPU."""
    return "nnUNetTrainer_1epoch" if device == "cpu" else "nnUNetTrainer_20epochs"


class NnunetRunner:
    """nnU-Net's commands for one converted dataset; outputs and logs under ``conv.work``."""

    def __init__(self, env: NnunetEnv, conv: Converted, device: str, trainer: str):
        self.env, self.conv, self.device, self.trainer = env, conv, device, trainer
        self.configuration = "3d_fullres" if conv.dataset.dim == 3 else "2d"
        self.id = str(conv.dataset.dataset_id)
        self.preprocessed = conv.work / "nnUNet_preprocessed"
        self.results = conv.work / "nnUNet_results"
        self.logs = conv.work / "logs"

    def environ(self) -> dict[str, str]:
        env = dict(os.environ)
        for var in ("VIRTUAL_ENV", "PYTHONHOME"):
            env.pop(var, None)
        env.update(nnUNet_raw=str(self.conv.raw_root), nnUNet_preprocessed=str(self.preprocessed),
                   nnUNet_results=str(self.results), nnUNet_extTrainer=str(TRAINERS),
                   PATH=f"{self.env.bin}{os.pathsep}{env.get('PATH', '')}", PYTHONUNBUFFERED="1")
        env.setdefault("nnUNet_def_n_proc", str(min(8, os.cpu_count() or 1)))  # its dataset check; 8 by default
        return env

    def _run(self, step: str, name: str, *args: str) -> Measured:
        return run_measured([self.env.command(name), *args], self.logs / f"nnunet_{step}.log", env=self.environ())

    @property
    def plans_dir(self) -> Path:
        return self.preprocessed / self.conv.dataset.nnunet_name

    @property
    def fold_dir(self) -> Path:
        return (self.results / self.conv.dataset.nnunet_name / f"{self.trainer}__nnUNetPlans__{self.configuration}"
                / "fold_0")

    def plan_and_preprocess(self, processes: int | None = None) -> Measured:
        """Fingerprint, plan and preprocess; then install fold 0 (``splits_final.json``)."""
        if self.plans_dir.exists():
            shutil.rmtree(self.plans_dir)
        n = processes or min(8, os.cpu_count() or 1)
        m = self._run("plan_and_preprocess", "nnUNetv2_plan_and_preprocess", "-d", self.id, "-c", self.configuration,
                      "-np", str(n), "-npfp", str(n), "--verify_dataset_integrity")
        shutil.copyfile(self.conv.splits_final, self.plans_dir / "splits_final.json")
        return m

    def train(self) -> Measured:
        if self.fold_dir.exists():
            shutil.rmtree(self.fold_dir)
        return self._run("train", "nnUNetv2_train", self.id, self.configuration, "0", "-tr", self.trainer, "-device", self.device)

    def epoch_seconds(self) -> float | None:
        """Sum of the ``Epoch time: X s`` lines of the fold's training log (training without start-up and final validation)."""
        times = [float(x) for log in sorted(self.fold_dir.glob("training_log_*.txt"))
                 for x in re.findall(r"Epoch time: ([0-9.]+) s", log.read_text(errors="replace"))]
        return sum(times) if times else None

    def predict(self, out: Path, tta: bool) -> Measured:
        if out.exists():
            shutil.rmtree(out)
        return self._run(f"predict_{'tta' if tta else 'notta'}", "nnUNetv2_predict", "-i", str(self.conv.images_test), "-o", str(out), "-d", self.id,
                         "-c", self.configuration, "-f", "0", "-tr", self.trainer, "-device", self.device,
                         *([] if tta else ["--disable_tta"]))

    def evaluate_folder(self, pred: Path, out_json: Path) -> dict:
        """nnU-Net's own evaluator on ``pred`` against ``labelsTs``: ``{"per_class": {name: dice}, "mean_dice": x}``
        (whole images: nnU-Net knows no field of view)."""
        self._run(f"evaluate_{pred.name}", "nnUNetv2_evaluate_folder", str(self.conv.labels_test), str(pred),
                  "-djfile", str(self.plans_dir / "dataset.json"), "-pfile", str(self.plans_dir / "nnUNetPlans.json"),
                  "-o", str(out_json))
        return parse_nnunet_summary(json.loads(out_json.read_text()), self.conv.dataset.labels)


def parse_nnunet_summary(summary: dict, labels: dict[str, int]) -> dict:
    """nnU-Net's ``summary.json`` (``mean`` keyed by label value as text, ``foreground_mean``) -> Dice per class."""
    names = {str(v): n for n, v in labels.items()}
    per_class = {}
    for key, metrics in summary["mean"].items():
        value = key.strip("()").rstrip(",")  # region-based keys look like "(1, 2)"
        per_class[names.get(value, key)] = metrics["Dice"]
    return {"per_class": per_class, "mean_dice": summary["foreground_mean"]["Dice"]}
