"""The model registry and the networks.

``create_model(name, spatial_dims, in_channels, num_classes, **kwargs)`` builds
any registered network; ``list_models()`` names them. Each network module is
imported here explicitly so that it registers itself.
"""

from medseg.models.registry import create_model, get_model_class, list_models, model_config, model_from_config, register_model
from medseg.models import unet  # noqa: F401  (registers "unet")
from medseg.models import fcn  # noqa: F401  (registers "fcn")
from medseg.models import segnet  # noqa: F401  (registers "segnet")
from medseg.models import resunet  # noqa: F401  (registers "resunet")
from medseg.models import deeplabv3plus  # noqa: F401  (registers "deeplabv3plus")
from medseg.models import transunet  # noqa: F401  (registers "transunet")

__all__ = ["create_model", "get_model_class", "list_models", "model_config", "model_from_config", "register_model"]
