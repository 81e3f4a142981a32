import torch

from .base import BaseModelTest


class TestTransUNet(BaseModelTest):
    name = "transunet"
    kwargs = {"features": 4, "depth": 3, "embed_dim": 16, "num_heads": 2, "num_layers": 2}

    def test_any_token_count(self):
        model = self.build(2).eval()
        with torch.no_grad():
            for size in ((16, 16), (40, 24), (13, 71)):
                assert model(torch.randn(1, 1, *size)).shape[2:] == size
