"""Runtime: device and precision (:mod:`medseg.runtime.device`) and data-parallel training under
``torchrun`` (:mod:`medseg.runtime.distributed`), used by training and inference alike."""
