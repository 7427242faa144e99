"""Single-pass multi-expert rendering (MoE-GS Eq. 9) against the multi-pass form, on CPU with
the torch reference. The CUDA kernel gets the same checks in tests/gpu/test_single_pass_cuda.py."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from moegs_bench.data.scene import intrinsics, look_at
from moegs_bench.moe.pool import ExpertPool
from moegs_bench.render.gaussians import Gaussians
from moegs_bench.render.multi_expert import render_experts, resolve_mode
from moegs_bench.render.single_pass import render_single_pass

W, H = 48, 36
FIELDS = ("rgb", "depth", "alpha", "extras")


def expert(n: int, shift, seed: int, sh: bool = True, feature_dim: int = 3) -> Gaussians:
    g = torch.Generator().manual_seed(seed)
    return Gaussians(
        means=torch.randn(n, 3, generator=g) * 0.5 + torch.tensor(shift),
        quats=torch.randn(n, 4, generator=g),
        scales=torch.rand(n, 3, generator=g) * 0.12 + 0.01,
        opacities=torch.rand(n, generator=g) * 0.98 + 0.01,
        sh=torch.randn(n, 4, 3, generator=g) * 0.4 if sh else None,
        sh_degree=1 if sh else 0,
        features=None if sh else torch.rand(n, feature_dim, generator=g),
    )


def cameras():
    # the second camera looks half past the scene: tiles with no Gaussian at all
    eyes, targets = [[0, 0, -3.0], [1.0, -0.4, -2.8]], [[0, 0, 0], [2.2, 0, 0]]
    viewmats = torch.tensor(np.stack([look_at(e, t) for e, t in zip(eyes, targets, strict=True)]), dtype=torch.float32)
    K = torch.tensor(intrinsics(W, H, 50.0), dtype=torch.float32)
    return viewmats, K[None].repeat(2, 1, 1)


def overlapping_experts():
    """Three experts over one region (interleaved depths), one RGB-feature expert."""
    return [expert(300, [0, 0, 0], 1), expert(200, [0.2, 0.0, 0.3], 2), expert(250, [-0.1, 0.1, 0.0], 3, sh=False)]


def assert_same(a, b, tol=1e-4):
    for x, y in zip(a, b, strict=True):
        for f in FIELDS:
            u, v = getattr(x, f), getattr(y, f)
            assert (u is None) == (v is None), f
            if u is not None:
                assert u.shape == v.shape, f
                assert (u - v).abs().max().item() <= tol, (f, (u - v).abs().max().item())


def test_single_pass_equals_multi_pass_with_router_channels_and_backgrounds():
    """Colour, depth, alpha and splatted channels of every expert equal its own render.
    Catches a transmittance shared between experts (concatenating the sets: the experts would
    occlude each other), a background applied with the wrong expert's transmittance, and depth
    not normalised by that expert's alpha."""
    gs = overlapping_experts()
    vm, Ks = cameras()
    extras = [torch.rand(len(g), 3, generator=torch.Generator().manual_seed(9 + i)) for i, g in enumerate(gs)]
    bgs = [torch.tensor([1.0, 1.0, 1.0]), torch.tensor([0.0, 0.0, 0.0]), torch.tensor([0.5, 0.2, 0.1])]
    kw = dict(extras=extras, backgrounds=bgs, extras_background=torch.ones(3))
    multi = render_experts(gs, vm, Ks, W, H, mode="multi-pass", **kw)
    single = render_experts(gs, vm, Ks, W, H, mode="single-pass", **kw)
    assert_same(multi, single)
    # the experts really overlap: concatenating them would change every expert's image
    from moegs_bench.render.backend import render
    from moegs_bench.render.gaussians import concat
    joint = render(concat([gs[0], gs[1]]), vm, Ks, W, H)
    assert (joint.alpha - multi[0].alpha).abs().max() > 0.1
    # the second view has empty tiles: nothing there but the background
    assert (single[0].alpha[1, :, -8:] == 0).all() and torch.allclose(single[0].rgb[1, :, -8:], bgs[0])


def test_single_pass_without_extras_and_mixed_colour_widths():
    """Experts of different colour widths (SH RGB and 5 learned features) in one pass: each
    keeps its own width. Catches padding that leaks into the narrower expert's channels."""
    gs = [expert(150, [0, 0, 0], 4), expert(120, [0.1, 0, 0.2], 5, sh=False, feature_dim=5)]
    vm, Ks = cameras()
    multi = render_experts(gs, vm, Ks, W, H, mode="multi-pass")
    single = render_single_pass(gs, vm, Ks, W, H)
    assert [o.rgb.shape[-1] for o in single] == [3, 5]
    assert all(o.extras is None for o in single)
    assert_same(multi, single)


def test_gradients_of_router_channels_equal_multi_pass():
    """d(loss)/d(router channels) through the single pass equals the multi-pass gradient
    (what router training needs). Catches blend weights taken from the wrong expert."""
    gs = overlapping_experts()
    vm, Ks = cameras()
    weight = torch.rand(2, H, W, 3, generator=torch.Generator().manual_seed(3))
    grads = []
    for mode in ("multi-pass", "single-pass"):
        extras = [torch.full((len(g), 3), 0.5, requires_grad=True) for g in gs]
        outs = render_experts(gs, vm, Ks, W, H, extras=extras, extras_background=torch.ones(3), mode=mode)
        loss = sum(((o.extras * weight) * (k + 1)).sum() for k, o in enumerate(outs))
        grads.append(torch.autograd.grad(loss, extras))
    for a, b in zip(*grads, strict=True):
        assert a.abs().max() > 0
        assert (a - b).abs().max().item() <= 1e-4


def test_auto_mode_falls_back_to_multi_pass_for_trainable_geometry():
    """Geometry that needs gradients is never sent through the values-only single pass.
    Catches an auto mode that would silently drop the means' gradient."""
    gs = overlapping_experts()[:2]
    gs[0].means.requires_grad_(True)
    assert resolve_mode("auto", gs) == "multi-pass"
    vm, Ks = cameras()
    out = render_experts(gs, vm, Ks, W, H)
    out[0].rgb.sum().backward()
    assert gs[0].means.grad is not None and gs[0].means.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="requires grad"):
        render_single_pass(gs, vm, Ks, W, H)
    with pytest.raises(ValueError, match="render mode"):
        resolve_mode("one-pass", gs)


def test_pool_renders_in_its_mode(tiny_scene_dir, monkeypatch):
    """A router's view goes through render_experts in the pool's render_mode, and both modes
    give the same gates and image. Catches a pool that ignores its mode; an unknown mode
    fails when the pool is made."""
    import moegs_bench.moe.pool as pool_module
    from moegs_bench.data.load import load_scene
    from moegs_bench.experts.registry import expert_config, get_expert
    from moegs_bench.moe.routers import build_router, router_config

    data = load_scene(tiny_scene_dir, torch.device("cpu"))
    experts = [get_expert("static").from_scene(data, expert_config("static", "tiny", {"max_init_points": n}),
                                               torch.Generator().manual_seed(s)) for s, n in ((0, 150), (1, 120))]
    seen = []
    real = pool_module.render_experts
    monkeypatch.setattr(pool_module, "render_experts", lambda *a, **kw: seen.append(kw["mode"]) or real(*a, **kw))
    outs = {}
    for mode in ("multi-pass", "single-pass"):
        pool = ExpertPool(experts, ["a", "b"], data, render_mode=mode)
        torch.manual_seed(0)
        router = build_router("vapr", pool, router_config("vapr", "tiny", {}))
        outs[mode] = router(pool, 0, 0, 1.0)
    assert seen == ["multi-pass", "single-pass"]
    assert (outs["multi-pass"].gates - outs["single-pass"].gates).abs().max() <= 1e-4
    assert (outs["multi-pass"].image - outs["single-pass"].image).abs().max() <= 1e-4
    with pytest.raises(ValueError, match="render mode"):
        ExpertPool(experts, ["a", "b"], data, render_mode="fast")
