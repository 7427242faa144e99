"""Fused deformation heads: the same function as one ReLU-Linear-ReLU-Linear MLP per head."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from moegs_bench.errors import ConfigError
from moegs_bench.experts.heads import DeformHeads, check_precision

OUTPUTS = {"dx": 3, "ds": 3, "dr": 4, "do": 1, "dsh": 12}


def separate_heads(heads: DeformHeads, hidden: torch.Tensor) -> dict[str, torch.Tensor]:
    """The original formulation: each head its own two nn.Linear layers, blocks of the fused ones."""
    out, w, pos = {}, heads.width, 0
    for i, k in enumerate(heads.names):
        a = torch.relu(F.linear(torch.relu(hidden), heads.w1[i * w:(i + 1) * w], heads.b1[i * w:(i + 1) * w]))
        out[k] = F.linear(a, heads.head_weight(k), heads.b2[pos:pos + heads.sizes[k]])
        pos += heads.sizes[k]
    return out


def make(width=16, init="xavier", seed=0) -> DeformHeads:
    return DeformHeads(width, OUTPUTS, init, torch.Generator().manual_seed(seed))


def test_fused_heads_equal_separate_heads_values_and_gradients():
    heads = make()
    hidden = torch.randn(50, 16, generator=torch.Generator().manual_seed(1), requires_grad=True)
    fused = heads(hidden)
    ref = separate_heads(heads, hidden)
    assert list(fused) == list(OUTPUTS)
    for k in OUTPUTS:
        assert fused[k].shape == (50, OUTPUTS[k])
        torch.testing.assert_close(fused[k], ref[k], rtol=1e-5, atol=1e-6)
    weights = {k: torch.randn(50, n, generator=torch.Generator().manual_seed(2)) for k, n in OUTPUTS.items()}

    def grads(out):
        params = [hidden, heads.w1, heads.b1, heads.b2, heads.w2]
        return torch.autograd.grad(sum((out[k] * weights[k]).sum() for k in out), params)

    for g_fused, g_ref in zip(grads(heads(hidden)), grads(separate_heads(heads, hidden)), strict=True):
        torch.testing.assert_close(g_fused, g_ref, rtol=1e-5, atol=1e-6)
    # off the blocks w2 is zero and gets no gradient, so an optimiser keeps it zero
    off = heads.w2_mask == 0
    assert off.any() and heads.w2[off].abs().max() == 0
    assert grads(heads(hidden))[-1][off].abs().max() == 0


def test_subset_of_heads_matches_the_full_call_and_leaves_other_heads_without_gradient():
    heads = make()
    hidden = torch.randn(20, 16, generator=torch.Generator().manual_seed(3))
    full = heads(hidden)
    sub = heads(hidden, ("dsh", "dx"))
    assert list(sub) == ["dx", "dsh"]  # construction order
    torch.testing.assert_close(sub["dx"], full["dx"])
    torch.testing.assert_close(sub["dsh"], full["dsh"])
    sub["dx"].sum().backward()
    assert heads.w2.grad[3:].abs().max() == 0  # only dx's rows of the last layer
    assert heads.w2.grad[:3, :16].abs().max() > 0
    assert heads.w1.grad[16:].abs().max() == 0  # only dx's block of the first layer
    assert heads.w1.grad[:16].abs().max() > 0
    assert heads(hidden, ()) == {}


def test_initialisation_follows_separate_linear_layers():
    width = 64
    heads = make(width, "xavier")
    xavier_hidden = math.sqrt(6.0 / (width + width))
    for i in range(len(OUTPUTS)):  # each block is a Linear(W,W), not one Linear(W, H*W)
        block = heads.w1[i * width:(i + 1) * width]
        assert block.abs().max() <= xavier_hidden
        assert block.abs().max() > 0.9 * xavier_hidden
    assert heads.head_weight("dsh").abs().max() <= math.sqrt(6.0 / (width + 12))
    assert heads.b1.abs().max() <= 1 / math.sqrt(width)
    torch_default = make(width, "torch")
    assert torch_default.w1.abs().max() <= 1 / math.sqrt(width)
    assert torch_default.w1.abs().max() > 0.9 / math.sqrt(width)
    assert not torch.equal(make(width, seed=1).w1, heads.w1)
    torch.testing.assert_close(make(width, seed=0).w1, heads.w1)  # seeded
    with pytest.raises(ValueError, match="init"):
        DeformHeads(width, OUTPUTS, "he")


def test_bfloat16_products_return_float32_close_to_float32():
    heads = make(32)
    hidden = torch.randn(200, 32, generator=torch.Generator().manual_seed(4))
    exact = heads(hidden)
    low = heads(hidden, precision=torch.bfloat16)
    for k in OUTPUTS:
        assert low[k].dtype == torch.float32
        scale = exact[k].abs().max()
        err = (low[k] - exact[k]).abs().max()
        assert err < 0.03 * scale and err > 0  # rounded, but only at bfloat16's 8 bits
    low["dx"].sum().backward()
    assert heads.w1.grad.dtype == torch.float32  # parameters stay float32


def test_precision_setting_is_checked():
    assert check_precision("bfloat16", "x.mlp_precision") is torch.bfloat16
    with pytest.raises(ConfigError, match="x.mlp_precision"):
        check_precision("fp16", "x.mlp_precision")
