"""gsplat (CUDA) and the torch reference agree on random scenes (run on a GPU machine)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from moegs_bench.data.scene import intrinsics, look_at
from moegs_bench.render.backend import render, render_batch
from moegs_bench.render.gaussians import Gaussians
from moegs_bench.render.reference import ALPHA_THRESHOLD, project

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA"),
]


def random_scene(n: int, seed: int, device="cuda"):
    g = torch.Generator(device="cpu").manual_seed(seed)
    means = torch.randn(n, 3, generator=g) * torch.tensor([1.0, 0.7, 0.8])
    return Gaussians(
        means=means.to(device),
        quats=torch.randn(n, 4, generator=g).to(device),
        scales=(torch.rand(n, 3, generator=g) * 0.08 + 0.005).to(device),
        opacities=torch.rand(n, generator=g).to(device),
        sh=(torch.randn(n, 16, 3, generator=g) * 0.4).to(device),
        sh_degree=3,
    )


def cameras(width, height, device="cuda"):
    eyes = [[0, 0, -4.0], [1.5, -0.5, -3.5], [-2.0, 0.3, -3.0]]
    viewmats = torch.tensor(np.stack([look_at(e, [0, 0, 0]) for e in eyes]), dtype=torch.float32)
    K = torch.tensor(intrinsics(width, height, 55.0), dtype=torch.float32)
    K[0, 2] += 3.3  # off-centre principal point, like Technicolor
    return viewmats.to(device), K[None].repeat(len(eyes), 1, 1).to(device)


def threshold_pixels(g, viewmats, Ks, width, height, band=1e-3):
    """[C,H,W] pixels where some Gaussian's alpha is within a relative `band` of 1/255.

    There the blend is discontinuous: gsplat's fast-math exp and torch's exp can land on
    either side of the threshold and legitimately differ by up to ~1/255 x transmittance.
    """
    out = torch.zeros(len(viewmats), height, width, dtype=torch.bool, device=viewmats.device)
    ys, xs = torch.meshgrid(torch.arange(height, device=viewmats.device),
                            torch.arange(width, device=viewmats.device), indexing="ij")
    px, py = xs.reshape(-1) + 0.5, ys.reshape(-1) + 0.5
    for c in range(len(viewmats)):
        m2d, con, _, radii = project(g.means, g.quats, g.scales, g.opacities, viewmats[c], Ks[c], width, height)
        ids = torch.nonzero((radii > 0).all(-1)).squeeze(1)
        for chunk in ids.split(64):
            dx = m2d[chunk, 0, None] - px
            dy = m2d[chunk, 1, None] - py
            sigma = 0.5 * (con[chunk, 0, None] * dx * dx + con[chunk, 2, None] * dy * dy) + con[chunk, 1, None] * dx * dy
            alpha = g.opacities[chunk, None] * torch.exp(-sigma)
            near = (alpha - ALPHA_THRESHOLD).abs() < band * ALPHA_THRESHOLD
            out[c].view(-1).logical_or_(near.any(0))
    return out[..., None]


@pytest.mark.parametrize("seed,n,width,height", [(0, 2000, 320, 240), (1, 20000, 257, 183), (2, 500, 64, 48), (6, 2000, 320, 240)])
def test_gsplat_and_reference_agree(seed, n, width, height):
    g = random_scene(n, seed)
    viewmats, Ks = cameras(width, height)
    bg = torch.tensor([0.2, 0.4, 0.6], device="cuda")
    extras = torch.rand(n, 3, generator=torch.Generator().manual_seed(seed)).cuda()
    a = render(g, viewmats, Ks, width, height, background=bg, extras=extras, backend="gsplat")
    b = render(g, viewmats, Ks, width, height, background=bg, extras=extras, backend="reference")
    with torch.no_grad():
        ambiguous = threshold_pixels(g, viewmats, Ks, width, height)
    assert ambiguous.float().mean().item() < 0.1
    ok = ~ambiguous
    # away from the alpha threshold: the tolerances, at every pixel
    assert (a.rgb - b.rgb).abs()[ok.expand_as(a.rgb)].max().item() <= 2e-3
    assert (a.alpha - b.alpha).abs()[ok].max().item() <= 2e-3
    assert (a.extras - b.extras).abs()[ok.expand_as(a.extras)].max().item() <= 2e-3
    # everywhere: a threshold crossing changes a pixel by at most ~1/255, and rarely happens
    d_alpha = (a.alpha - b.alpha).abs()
    assert d_alpha.max().item() <= 2 * ALPHA_THRESHOLD
    assert (d_alpha > 2e-3).float().mean().item() < 1e-4
    covered = (a.alpha > 0.1) & (b.alpha > 0.1) & ok
    rel = ((a.depth - b.depth).abs() / b.depth.abs().clamp_min(1e-6))[covered]
    assert rel.max().item() <= 1e-3
    assert torch.equal(a.info["radii"] > 0, b.info["radii"] > 0)


def test_gradients_agree():
    n, width, height = 3000, 160, 120
    grads = {}
    for backend in ("gsplat", "reference"):
        g = random_scene(n, 3)
        for name in ("means", "scales", "opacities", "sh"):
            getattr(g, name).requires_grad_(True)
        viewmats, Ks = cameras(width, height)
        out = render(g, viewmats, Ks, width, height, backend=backend)
        target = torch.rand(out.rgb.shape, generator=torch.Generator().manual_seed(9)).cuda()
        (out.rgb - target).abs().mean().backward()
        grads[backend] = {k: getattr(g, k).grad for k in ("means", "scales", "opacities", "sh")}
    for k in grads["gsplat"]:
        a, b = grads["gsplat"][k], grads["reference"][k]
        cos = torch.nn.functional.cosine_similarity(a.flatten(), b.flatten(), dim=0)
        assert cos.item() > 0.99, (k, cos.item())


def test_gsplat_batch_equals_one_render_per_set():
    width, height = 160, 120
    sets = [random_scene(3000, 10 + b) for b in range(3)]
    for g in sets:
        g.means.requires_grad_(True)
    viewmats, Ks = cameras(width, height)
    vm, ks = viewmats[:2].expand(3, 2, 4, 4), Ks[:2].expand(3, 2, 3, 3)  # [B=3, C=2]
    batch = render_batch(sets, vm, ks, width, height, backend="gsplat")
    assert batch.rgb.shape == (3, 2, height, width, 3) and batch.info["means2d"].shape[:2] == (3, 2)
    batch.rgb.mean().backward()
    got = [g.means.grad.clone() for g in sets]
    for b, g in enumerate(sets):
        g.means.grad = None
        one = render(g, vm[b], ks[b], width, height, backend="gsplat")
        assert (batch.rgb[b] - one.rgb).abs().max().item() < 1e-5
        assert torch.equal(batch.info["radii"][b], one.info["radii"])
        (one.rgb.mean() / 3).backward()
        torch.testing.assert_close(got[b], g.means.grad, rtol=1e-3, atol=1e-8)
