import torch

from .base import BaseModelTest


class TestUNet(BaseModelTest):
    name = "unet"
    kwargs = {"features": 4, "depth": 3}

    def test_deep_supervision(self):
        model = self.build(2, deep_supervision=True).train()
        x = self.input(2)
        outs = model(x)
        assert [o.shape[2:] for o in outs][0] == x.shape[2:] and len(outs) == 3
        assert isinstance(model.eval()(x), torch.Tensor)
