"""One registry and one factory for every network (after torchvision's ``_api.py``
and smp's ``create_model``).

``create_model`` checks the name and the keyword arguments and raises an error
that lists the valid ones. The arguments a model was built with are its config:
they are kept on the model (``model_config``) and saved beside the weights, so a
run folder alone rebuilds the network.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

from torch import nn

from medseg.errors import ConfigError

_MODELS: dict[str, type[nn.Module]] = {}
_CONFIG_ATTR = "_medseg_config"


def register_model(name: str) -> Callable[[type[nn.Module]], type[nn.Module]]:
    """Class decorator: register a network under ``name``. Names must be unique."""

    def deco(cls: type[nn.Module]) -> type[nn.Module]:
        if name in _MODELS:
            raise ValueError(f"A model is already registered under the name '{name}'.")
        _MODELS[name] = cls
        cls.registry_name = name
        return cls

    return deco


def list_models() -> list[str]:
    return sorted(_MODELS)


def get_model_class(name: str) -> type[nn.Module]:
    try:
        return _MODELS[name]
    except KeyError:
        raise ConfigError(
            f"unknown model '{name}'", hint=f"valid models: {', '.join(list_models())}"
        ) from None


def model_arguments(name: str) -> dict[str, inspect.Parameter]:
    """The constructor parameters of model ``name`` (without ``self``)."""
    params = inspect.signature(get_model_class(name).__init__).parameters
    return {k: p for k, p in params.items() if k != "self" and p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL)}


def create_model(name: str, spatial_dims: int = 2, in_channels: int = 1, num_classes: int = 2, **kwargs: Any) -> nn.Module:
    """Build model ``name``. ``None`` values are dropped so CLI defaults don't override model defaults."""
    cls = get_model_class(name)
    kwargs = {k: v for k, v in kwargs.items() if v is not None}
    valid = model_arguments(name)
    unknown = sorted(set(kwargs) - set(valid))
    if unknown:
        raise ConfigError(
            f"model '{name}' has no argument(s) {', '.join(unknown)}",
            hint=f"valid arguments: {', '.join(valid)}",
        )
    config = {"spatial_dims": spatial_dims, "in_channels": in_channels, "num_classes": num_classes, **kwargs}
    model = cls(**config)
    setattr(model, _CONFIG_ATTR, {"name": name, **config})
    return model


def model_config(model: nn.Module) -> dict[str, Any]:
    """The ``{"name": ..., **constructor arguments}`` a model was created with."""
    try:
        return dict(getattr(model, _CONFIG_ATTR))
    except AttributeError:
        raise ConfigError("this model was not built by medseg.models.create_model; its config is unknown") from None


def model_from_config(config: dict[str, Any]) -> nn.Module:
    config = dict(config)
    name = config.pop("name")
    return create_model(name, **config)
