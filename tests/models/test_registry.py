import pytest

from medseg.errors import ConfigError
from medseg.models import create_model, list_models

EXPECTED = {"unet", "fcn", "segnet", "resunet", "deeplabv3plus", "transunet"}


def test_all_models_registered():
    assert EXPECTED <= set(list_models())


def test_unknown_model_lists_valid_names():
    with pytest.raises(ConfigError) as err:
        create_model("no_such_net")
    assert "no_such_net" in str(err.value)
    for name in list_models():
        assert name in str(err.value)


def test_unknown_argument_lists_valid_ones():
    with pytest.raises(ConfigError) as err:
        create_model("unet", featuers=8)
    assert "featuers" in str(err.value) and "features" in str(err.value) and "depth" in str(err.value)
