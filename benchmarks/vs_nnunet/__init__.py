"""medseg vs nnU-Net on the same cases, split, machine and budget, scored by the same evaluation code.

``python -m benchmarks.vs_nnunet --dataset hippocampus --budget 30m`` (see ``__main__``). nnU-Net runs
from its own venv (``benchmarks/.nnunet-venv``); medseg from this interpreter. Nothing here is imported
by medseg itself.
"""
