"""medseg: deep-learning segmentation of medical images, 2D and 3D.

The package is organised by pipeline stage:

- :mod:`medseg.io`         readers and writers per file format
- :mod:`medseg.data`       finding cases, decoding masks, splitting, sampling, augmentation
- :mod:`medseg.models`     the model registry and the networks
- :mod:`medseg.training`   the training engine
- :mod:`medseg.inference`  prediction on new images
- :mod:`medseg.evaluation` metrics, plots and reports
- :mod:`medseg.cli`        the ``medseg`` command
"""

from __future__ import annotations

import logging

__version__ = "0.1.0"

logging.getLogger(__name__).addHandler(logging.NullHandler())

__all__ = ["__version__"]
