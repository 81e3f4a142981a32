import pytest

from medseg.models import create_model, list_models
from medseg.models.summary import count_gflops, count_parameters, model_table


@pytest.mark.parametrize("spatial_dims", [2, 3], ids=["2d", "3d"])
def test_model_table_covers_all_models(spatial_dims):
    rows = model_table(spatial_dims, reference_size=64)  # on the meta device: costs nothing
    assert [r["name"] for r in rows] == list_models()
    for row in rows:
        assert set(row) == {"name", "params", "gflops", "input_shape"}
        assert row["input_shape"] == [1, 1] + [64] * spatial_dims
        assert isinstance(row["params"], int) and row["params"] > 0
        assert row["gflops"] > 0


def test_counts_match_a_real_model():
    model = create_model("unet", 2, features=4, depth=2)
    n = sum(p.numel() for p in model.parameters())
    assert count_parameters(model) == n
    model.train()
    gflops = count_gflops(model, (1, 1, 16, 16))
    assert model.training  # mode restored
    # the first 3x3 conv alone: 16*16 outputs * 4 channels * 9 taps * 2 FLOPs
    assert gflops > 16 * 16 * 4 * 9 * 2 / 1e9
    assert count_gflops(model, (1, 1, 32, 32)) == pytest.approx(4 * gflops)


def test_gflops_see_the_transformer():
    # the fused transformer fast path (eval + no_grad) would hide the attention from the counter
    kw = dict(features=4, depth=2, embed_dim=16, num_heads=2)
    with_tf = count_gflops(create_model("transunet", 2, num_layers=2, **kw), (1, 1, 32, 32))
    without = count_gflops(create_model("transunet", 2, num_layers=0, **kw), (1, 1, 32, 32))
    # two layers on 64 tokens: qkv + out proj (4*16*16) + mlp (2*16*64) MACs per token, plus attention
    # (q @ k^T and attn @ v: 2 * 64*64*16 MACs); the depthwise positional conv is in both
    macs = 2 * (64 * (4 * 16 * 16 + 2 * 16 * 64) + 2 * 64 * 64 * 16)
    assert with_tf - without == pytest.approx(2 * macs / 1e9, rel=1e-6)
