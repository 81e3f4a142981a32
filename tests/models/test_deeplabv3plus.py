import pytest

from medseg.errors import ConfigError

from .base import BaseModelTest


class TestDeepLabV3Plus(BaseModelTest):
    name = "deeplabv3plus"
    kwargs = {"features": 4, "blocks": [1, 2, 1, 1], "atrous_rates": [1, 2, 3]}


class TestDeepLabV3PlusOS8(BaseModelTest):
    name = "deeplabv3plus"
    variant = "os8"
    kwargs = {"features": 4, "blocks": [1, 1, 1, 2], "output_stride": 8, "atrous_rates": [2, 4, 6], "norm": "instance"}

    def test_size_divisor(self):
        assert self.build(3).size_divisor == (8, 8, 8)

    def test_bad_output_stride(self):
        with pytest.raises(ConfigError, match="output_stride"):
            self.build(2, output_stride=32)
