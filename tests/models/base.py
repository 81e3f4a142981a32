"""Shared tests for every network (after segmentation_models.pytorch's ``tests/models/base.py``).

A model's test module subclasses :class:`BaseModelTest` and sets ``name`` (the
registry name) and ``kwargs`` (tiny widths, so the suite runs in seconds on a
CPU). Every test runs in 2D and 3D at odd input sizes, which the base class's
padding must handle.

The golden-output test compares a seeded model's output on a seeded input with
``golden.json``; after an intended change of a network, regenerate it with
``python tests/models/make_golden.py`` and commit the diff.
"""

from __future__ import annotations

import inspect
import json
from pathlib import Path
from typing import Any, ClassVar

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from medseg.errors import ConfigError
from medseg.models import create_model, get_model_class
from medseg.models.registry import model_arguments

GOLDEN_PATH = Path(__file__).with_name("golden.json")
SIZES = {2: (37, 45), 3: (19, 23, 17)}  # odd sizes: the base class pads and crops
BATCH = {2: 2, 3: 1}
GOLDEN_ATOL = 1e-5
N_GOLDEN_VALUES = 8

dims_param = pytest.mark.parametrize("spatial_dims", [2, 3], ids=["2d", "3d"])


def golden_summary(name: str, spatial_dims: int, kwargs: dict[str, Any]) -> dict[str, Any]:
    """Mean, std and a few values of a seeded model's eval output on a seeded input."""
    torch.manual_seed(0)
    model = create_model(name, spatial_dims, 1, 2, **kwargs).eval()
    x = torch.randn((1, 1, *SIZES[spatial_dims]), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        out = model(x).flatten().double()
    idx = torch.linspace(0, out.numel() - 1, N_GOLDEN_VALUES).long()
    return {"mean": out.mean().item(), "std": out.std().item(), "values": out[idx].tolist()}


def golden_key(name: str, spatial_dims: int, variant: str = "") -> str:
    return f"{name}[{variant}]/{spatial_dims}d" if variant else f"{name}/{spatial_dims}d"


def first_conv(model: nn.Module) -> nn.Module:
    return next(m for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Conv3d)))


class BaseModelTest:
    name: ClassVar[str] = ""
    kwargs: ClassVar[dict[str, Any]] = {}
    variant: ClassVar[str] = ""  # set when a second test class covers the same model (own golden entry)

    def build(self, spatial_dims: int, in_channels: int = 1, num_classes: int = 2, **extra: Any) -> nn.Module:
        return create_model(self.name, spatial_dims, in_channels, num_classes, **{**self.kwargs, **extra})

    def input(self, spatial_dims: int, in_channels: int = 1, batch: int | None = None) -> torch.Tensor:
        batch = BATCH[spatial_dims] if batch is None else batch
        return torch.randn((batch, in_channels, *SIZES[spatial_dims]), generator=torch.Generator().manual_seed(1))

    @dims_param
    @pytest.mark.parametrize(("in_channels", "num_classes"), [(1, 2), (3, 5)])
    def test_forward_backward(self, spatial_dims, in_channels, num_classes):
        torch.manual_seed(0)
        model = self.build(spatial_dims, in_channels, num_classes).train()
        x = self.input(spatial_dims, in_channels)
        out = model(x)
        assert isinstance(out, torch.Tensor)
        assert out.shape == (x.shape[0], num_classes, *x.shape[2:])
        target = torch.randint(0, num_classes, (x.shape[0], *x.shape[2:]))
        F.cross_entropy(out, target).backward()
        unused = [n for n, p in model.named_parameters() if p.grad is None]
        assert not unused, f"parameters without gradient: {unused[:5]}"
        assert all(torch.isfinite(p.grad).all() for p in model.parameters())
        assert first_conv(model).weight.grad.abs().sum() > 0

    @dims_param
    def test_eval_batch1(self, spatial_dims):
        model = self.build(spatial_dims).eval()
        x = self.input(spatial_dims, batch=1)
        with torch.no_grad():
            out = model(x)
        assert isinstance(out, torch.Tensor)
        assert out.shape == (1, 2, *x.shape[2:])
        assert torch.isfinite(out).all()

    @dims_param
    def test_channels_last(self, spatial_dims):
        model = self.build(spatial_dims).eval()
        x = self.input(spatial_dims, batch=1)
        fmt = torch.channels_last if spatial_dims == 2 else torch.channels_last_3d
        with torch.no_grad():
            ref = model(x)
            out = model.to(memory_format=fmt)(x.to(memory_format=fmt))
        torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-4)

    @dims_param
    def test_save_load_round_trip(self, spatial_dims, tmp_path):
        from medseg.models.weights import load_model, save_model  # imported here so an io problem fails only this test

        torch.manual_seed(0)
        model = self.build(spatial_dims, in_channels=2, num_classes=3)
        model.train()(self.input(spatial_dims, 2))  # move any norm running statistics off their defaults
        save_model(tmp_path, model)
        loaded = load_model(tmp_path)
        assert type(loaded) is type(model)
        model.eval(), loaded.eval()
        x = self.input(spatial_dims, 2, batch=1)
        with torch.no_grad():
            assert torch.equal(model(x), loaded(x))

    @dims_param
    def test_golden_output(self, spatial_dims):
        golden = json.loads(GOLDEN_PATH.read_text()) if GOLDEN_PATH.is_file() else {}
        key = golden_key(self.name, spatial_dims, self.variant)
        assert key in golden, f"no golden values for {key}; run python tests/models/make_golden.py"
        want, got = golden[key], golden_summary(self.name, spatial_dims, self.kwargs)
        for field in ("mean", "std", "values"):
            assert got[field] == pytest.approx(want[field], abs=GOLDEN_ATOL, rel=GOLDEN_ATOL), (
                f"{key} {field} drifted; if intended, rerun python tests/models/make_golden.py"
            )

    @dims_param
    def test_onnx_export_matches_torch(self, spatial_dims, tmp_path):
        """The exported network (odd sizes, dynamic batch) gives PyTorch float32's probabilities to within 1e-4."""
        from medseg.inference.bundle import export_network, onnx_session

        torch.manual_seed(0)
        model = self.build(spatial_dims, num_classes=3).eval()
        x = self.input(spatial_dims, batch=2)
        export_network(model, x, tmp_path / "net.onnx", self.name)
        session = onnx_session(tmp_path / "net.onnx", threads=1)
        for batch in (x, x[:1]):
            got = torch.from_numpy(session.run(["logits"], {"image": batch.numpy()})[0]).softmax(1)
            with torch.no_grad():
                want = model(batch).softmax(1)
            torch.testing.assert_close(got, want, atol=1e-4, rtol=0)

    def test_unknown_argument_lists_valid_ones(self):
        with pytest.raises(ConfigError) as err:
            create_model(self.name, 2, not_an_argument=1)
        assert "not_an_argument" in str(err.value)
        for arg in model_arguments(self.name):
            assert arg in str(err.value)

    def test_signature_and_json_defaults(self):
        """Constructor starts (spatial_dims, in_channels, num_classes); every default and test kwarg is JSON."""
        params = inspect.signature(get_model_class(self.name).__init__).parameters
        assert list(params)[1:4] == ["spatial_dims", "in_channels", "num_classes"]
        json.dumps({k: p.default for k, p in params.items() if p.default is not inspect.Parameter.empty})
        json.dumps(self.kwargs)
