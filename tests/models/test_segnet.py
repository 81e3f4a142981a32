from .base import BaseModelTest


class TestSegNet(BaseModelTest):
    name = "segnet"
    kwargs = {"features": 4, "depth": 3}
