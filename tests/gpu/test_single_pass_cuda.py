"""The single-pass CUDA kernel against gsplat's multi-pass renders (run on a GPU machine)."""

from __future__ import annotations

import pytest
import torch

from moegs_bench.render.multi_expert import render_experts

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA"),
]

FIELDS = ("rgb", "alpha", "extras")


def scene():
    from tests.test_single_pass import cameras, overlapping_experts

    gs = [g.to("cuda") for g in overlapping_experts()]
    vm, Ks = cameras()
    return gs, vm.cuda(), Ks.cuda()


@pytest.mark.parametrize("k", [1, 2, 3, 4, 5])
def test_kernel_equals_multi_pass(k):
    """Colour, depth, alpha and router channels of every expert within 1e-4 of its own gsplat
    render, for 1..5 experts (5 uses the 8-slot kernel), overlapping, with empty tiles."""
    from tests.test_single_pass import expert

    gs, vm, Ks = scene()
    gs = (gs + [expert(400, [0.05 * i, 0, 0.1], 20 + i).to("cuda") for i in range(2)])[:k]
    from tests.test_single_pass import H, W
    extras = [torch.rand(len(g), 3, device="cuda") for g in gs]
    bgs = [torch.rand(3, device="cuda") for _ in gs]
    kw = dict(extras=extras, backgrounds=bgs, extras_background=torch.ones(3, device="cuda"))
    multi = render_experts(gs, vm, Ks, W, H, mode="multi-pass", **kw)
    single = render_experts(gs, vm, Ks, W, H, mode="single-pass", **kw)
    for a, b in zip(multi, single, strict=True):
        for f in FIELDS:
            assert (getattr(a, f) - getattr(b, f)).abs().max().item() <= 1e-4, f
        assert ((a.depth - b.depth) * a.alpha).abs().max().item() <= 1e-4


def test_kernel_gradients_equal_multi_pass():
    """d(loss)/d(router channels) from the kernel's backward equals gsplat's."""
    from tests.test_single_pass import H, W

    gs, vm, Ks = scene()
    weight = torch.rand(2, H, W, 3, device="cuda")
    grads = []
    for mode in ("multi-pass", "single-pass"):
        extras = [torch.full((len(g), 3), 0.5, device="cuda", requires_grad=True) for g in gs]
        outs = render_experts(gs, vm, Ks, W, H, extras=extras, extras_background=torch.ones(3, device="cuda"),
                              mode=mode)
        loss = sum(((o.extras * weight) * (i + 1)).mean() for i, o in enumerate(outs))
        grads.append(torch.autograd.grad(loss, extras))
    for a, b in zip(*grads, strict=True):
        assert a.abs().max() > 0
        assert (a - b).abs().max().item() <= 1e-4


def test_kernel_matches_cpu_reference():
    """The CUDA single pass and the CPU reference single pass agree (same maths)."""
    from tests.test_single_pass import H, W

    gs, vm, Ks = scene()
    cuda = render_experts(gs, vm, Ks, W, H, mode="single-pass")
    cpu = render_experts([g.to("cpu") for g in gs], vm.cpu(), Ks.cpu(), W, H, mode="single-pass")
    for a, b in zip(cuda, cpu, strict=True):
        assert (a.rgb.cpu() - b.rgb).abs().max().item() <= 2e-3  # fast-math exp vs torch exp near 1/255


def test_kernel_colour_gradients_equal_multi_pass():
    """Gradients reach per-Gaussian colours too when they need them (a feature expert), and
    only the channels asked for: catches a channel range that skips the colours."""
    from tests.test_single_pass import H, W

    gs, vm, Ks = scene()
    grads = []
    for mode in ("multi-pass", "single-pass"):
        gs[2].features.requires_grad_(True)
        outs = render_experts(gs, vm, Ks, W, H, mode=mode)
        grads.append(torch.autograd.grad(outs[2].rgb.square().mean(), gs[2].features)[0])
        gs[2].features.requires_grad_(False)
    assert grads[0].abs().max() > 0
    assert (grads[0] - grads[1]).abs().max().item() <= 1e-4
