"""Responsibilities of a router's gates lifted to the Gaussians, and the fused model
(MoE-GS App. D, Eqs. 12–15)."""

from __future__ import annotations

import pytest
import torch

from moegs_bench.data.load import load_scene
from moegs_bench.experts.registry import expert_config, get_expert
from moegs_bench.moe.pool import ExpertPool
from moegs_bench.moe.responsibility import (
    accumulate_responsibilities,
    fused_gaussians,
    gate_shares,
    responsibility_by_regime,
    responsibility_stats,
)
from moegs_bench.moe.routers import build_router, router_config
from moegs_bench.render.backend import render
from moegs_bench.render.gaussians import concat, harmonise_sh

pytestmark = pytest.mark.usefixtures("one_thread")
CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def pool(tiny_scene_dir):
    data = load_scene(tiny_scene_dir, CPU, with_gt=True)
    experts = []
    for seed, degree, points in ((0, 1, 60), (1, 0, 40)):
        cfg = expert_config("static", "tiny", {"sh_degree": degree, "max_init_points": points})
        e = get_expert("static").from_scene(data, cfg, torch.Generator().manual_seed(seed))
        e.active_sh_degree = degree
        experts.append(e)
    return ExpertPool(experts, ["a", "b"], data)


@pytest.fixture(scope="module")
def router(pool):
    r = build_router("vapr", pool, router_config("vapr", "tiny"))
    with torch.no_grad():  # gates that differ from expert to expert and from pixel to pixel
        r.w[0].uniform_(-2, 2, generator=torch.Generator().manual_seed(0))
        r.w[1].uniform_(-2, 2, generator=torch.Generator().manual_seed(1))
    return r


def test_responsibilities_equal_the_per_pixel_sum(pool, router):
    # catches: a missing normalisation, the gates of the wrong expert, contributions without the
    # transmittance (alpha alone), or the wrong split
    resp = accumulate_responsibilities(router, pool, split="test")
    data = pool.data
    views = data.splits["test"]
    for k, n in enumerate(pool.sizes):
        num, den = torch.zeros(n, dtype=torch.float64), torch.zeros(n, dtype=torch.float64)
        for i in range(len(views)):
            cam, frame = int(views.cams[i]), int(views.frames[i])
            with torch.no_grad():
                gates = router(pool, cam, frame, router.cfg.eval_temp).gates[k, 0]  # [H,W]
                g = pool.gaussians(k, frame, cam)
                vm, K = data.camera_batch(torch.tensor([cam]))
                # brute force: one channel per Gaussian holds its T·α at every pixel
                c = render(g, vm, K, data.width, data.height, extras=torch.eye(n),
                           extras_background=torch.zeros(n)).extras[0].double()  # [H,W,N]
            num += (gates.double()[..., None] * c).sum((0, 1))
            den += c.sum((0, 1))
        want = torch.where(den > 0, num / den.clamp_min(1e-12), torch.zeros_like(num))
        assert torch.allclose(resp.values[k].double(), want, atol=1e-5), k
        assert torch.allclose(resp.coverage[k].double(), den, rtol=1e-4, atol=1e-6)
        assert (den > 0).any() and (want > 0.05).any() and (want < 0.95).any()  # the sums are not trivial


def test_fused_model_with_unit_responsibilities_is_the_concatenation(pool):
    # catches: fused opacities that are not R̄·α, or experts' colours changed by the fusion
    gs = pool.view_gaussians(0, 2)
    ones = [torch.ones(n) for n in pool.sizes]
    fused = fused_gaussians(gs, ones)
    vm, K = pool.data.camera_batch(torch.tensor([0]))
    a = render(fused, vm, K, pool.data.width, pool.data.height).rgb
    b = render(concat(harmonise_sh(gs)), vm, K, pool.data.width, pool.data.height).rgb
    assert torch.equal(a, b)
    half = fused_gaussians(gs, [torch.full((n,), 0.5) for n in pool.sizes])
    assert torch.allclose(half.opacities, 0.5 * torch.cat([g.opacities for g in gs]))


def test_statistics_and_gate_shares(pool, router):
    # catches: stats of the wrong expert, shares that are not means over a regime's pixels
    resp = accumulate_responsibilities(router, pool, split="test")
    stats = responsibility_stats(resp, pool.names)
    for name, r, c in zip(pool.names, resp.values, resp.coverage, strict=True):
        assert stats[f"resp_weighted_{name}"] == pytest.approx(float((r * c).sum() / c.sum()), rel=1e-5)
        assert 0 <= stats[f"resp_p10_{name}"] <= stats[f"resp_p50_{name}"] <= stats[f"resp_p90_{name}"] <= 1
    shares = gate_shares(router, pool)
    regimes = pool.data.scene.gt["regimes"]
    present = {r for r in regimes if f"gate_a_{r}" in shares}
    assert present
    for r in present:  # gates sum to one at every pixel: so do their means over a regime
        assert shares[f"gate_a_{r}"] + shares[f"gate_b_{r}"] == pytest.approx(1.0, abs=1e-5)


def test_responsibility_per_motion_regime(pool, router):
    # catches: regimes from the wrong objects, unweighted means, unseen Gaussians counted
    resp = accumulate_responsibilities(router, pool, split="test")
    by_regime = responsibility_by_regime(resp, pool)
    assert "resp_a_static" in by_regime and any(k.startswith("resp_b_") for k in by_regime)
    for name, r, c in zip(pool.names, resp.values, resp.coverage, strict=True):
        values = [v for k, v in by_regime.items() if k.startswith(f"resp_{name}_")]
        assert all(0 <= v <= 1 for v in values)
        # the regimes partition the seen Gaussians: the total lies between their weighted means
        total = float((r.double() * c.double()).sum() / c.double().sum())
        assert min(values) - 1e-9 <= total <= max(values) + 1e-9
