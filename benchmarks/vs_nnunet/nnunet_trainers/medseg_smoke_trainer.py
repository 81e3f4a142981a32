"""A tiny nnU-Net trainer for the harness's smoke check (``--smoke``): 1 epoch of 2 training and
1 validation iterations, then nnU-Net's usual final validation. Not a benchmark setting.

nnU-Net finds it through ``nnUNet_extTrainer`` (this folder), which the harness sets for its nnU-Net
subprocesses only; nothing is written into nnU-Net's installation. Imported by nnU-Net's interpreter
(``benchmarks/.nnunet-venv``), never by medseg's.
"""

import torch
from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer


class nnUNetTrainer_medsegSmoke(nnUNetTrainer):
    def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict,
                 device: torch.device = torch.device("cuda")):
        super().__init__(plans, configuration, fold, dataset_json, device)
        self.num_epochs = 1
        self.num_iterations_per_epoch = 2
        self.num_val_iterations_per_epoch = 1
