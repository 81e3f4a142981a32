import torch

from .base import BaseModelTest


class TestResUNet(BaseModelTest):
    name = "resunet"
    kwargs = {"features": 4, "blocks_per_stage": [1, 2, 1, 1]}

    def test_deep_supervision(self):
        model = self.build(3, deep_supervision=True).train()
        x = self.input(3)
        outs = model(x)
        assert len(outs) == 3 and outs[0].shape[2:] == x.shape[2:]
        assert outs[1].shape[2:] == (12, 12, 12) and outs[2].shape[2:] == (6, 6, 6)  # padded to 24^3; strides 2, 4
        assert isinstance(model.eval()(x), torch.Tensor)

    def test_anisotropic_strides(self):
        model = self.build(3, strides=[[1, 2, 2], 2, 2]).eval()
        assert model.size_divisor == (4, 8, 8)
        assert model(self.input(3)).shape[2:] == self.input(3).shape[2:]
