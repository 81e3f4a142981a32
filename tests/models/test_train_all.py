"""Every registered model trains end to end: 2D through ``medseg train --model NAME``, 3D for one step.

2D: a 64-px disc dataset, so that even the networks that downsample 32x (fcn,
segnet at depth 5) keep a bottleneck of 2x2 pixels for their norm layers.
3D: one optimiser step on a random 32^3 volume with small widths; fcn and
resunet get arguments that keep their bottleneck above one voxel (at their
defaults it would be 1x1x1, which batch/instance norm cannot train on).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from medseg.cli.main import main
from medseg.inference.predictor import Predictor
from medseg.io import read_image
from medseg.models import create_model, list_models
from medseg.runfolder import read_run_info
from medseg.training.losses import DiceCELoss
from tests.helpers2d import write_disc_dataset

SIZE = 64

#: small 3D variants (the 2D test uses each model's defaults apart from --features)
KWARGS_3D = {
    "deeplabv3plus": {"blocks": [1, 1, 1, 1], "atrous_rates": [1, 2, 3]},
    "fcn": {"convs_per_stage": [1, 1, 1, 1, 1], "norm": "group"},  # stride 32: 1 voxel at 32^3
    "resunet": {"blocks_per_stage": [1, 1, 1, 1]},                 # 6 stages would leave 1 voxel
    "segnet": {"depth": 3},
    "transunet": {"depth": 3, "embed_dim": 16, "num_heads": 2, "num_layers": 1},
    "unet": {"depth": 3},
}


@pytest.fixture(scope="module")
def disc_data(tmp_path_factory):
    return write_disc_dataset(tmp_path_factory.mktemp("train_all") / "data", n=5, size=SIZE)


def test_every_model_has_3d_test_arguments():
    assert set(list_models()) <= set(KWARGS_3D), "add the new model to KWARGS_3D"


@pytest.mark.parametrize("name", list_models())
def test_train_2d_cli(name, disc_data, tmp_path):
    run = tmp_path / name
    with pytest.raises(SystemExit) as e:
        main(["train", str(disc_data), "--out", str(run), "--model", name, "--features", "4",
              "--epochs", "1", "--iterations", "2", "--batch-size", "2"])
    assert e.value.code in (0, None)
    assert (run / "model.safetensors").is_file()
    info = read_run_info(run)
    assert info["model"]["name"] == name and info["model"]["features"] == 4

    pred = Predictor.from_run(run).predict(read_image(disc_data / "images" / "case0.png"), probabilities=True)
    assert pred.labels.shape == (SIZE, SIZE) and pred.labels.dtype == np.uint8
    assert set(np.unique(pred.labels)) <= {0, 1}
    assert pred.probabilities.shape == (2, SIZE, SIZE)
    assert np.isfinite(pred.probabilities).all()
    np.testing.assert_allclose(pred.probabilities.sum(0), 1.0, atol=1e-4)


@pytest.mark.parametrize("name", list_models())
def test_train_3d_one_step(name):
    torch.manual_seed(0)
    model = create_model(name, spatial_dims=3, in_channels=1, num_classes=3, features=4, **KWARGS_3D.get(name, {}))
    model.train()
    x = torch.randn(1, 1, 32, 32, 32)
    y = torch.randint(0, 3, (1, 32, 32, 32))
    before = [p.detach().clone() for p in model.parameters()]
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    out = model(x)
    assert (out[0] if isinstance(out, list) else out).shape == (1, 3, 32, 32, 32)
    loss = DiceCELoss()(out, y)
    assert math.isfinite(loss.item())
    opt.zero_grad()
    loss.backward()
    no_grad = [n for n, p in model.named_parameters() if p.grad is None]
    assert not no_grad, f"parameters outside the graph: {no_grad}"
    opt.step()
    changed = [not torch.equal(b, p.detach()) for b, p in zip(before, model.parameters())]
    assert any(changed)
    assert all(torch.isfinite(p).all() for p in model.parameters())
