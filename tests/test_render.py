"""Reference rasteriser: analytic cases with gsplat's conventions."""

from __future__ import annotations

import math

import pytest
import torch

from moegs_bench.render.backend import choose_backend, render, render_batch, same_layout
from moegs_bench.render.gaussians import Gaussians, concat
from moegs_bench.render.sh import C0, C1, eval_sh, rgb_to_sh0

W, H = 48, 32
F = 40.0


def camera(cx=W / 2 + 0.5, cy=H / 2 + 0.5):
    """Camera at the origin looking down +z; the principal point sits on a pixel centre."""
    K = torch.tensor([[F, 0, cx], [0, F, cy], [0, 0, 1.0]])[None]
    return torch.eye(4)[None], K


def gaussians(means, scales, opacities, colors):
    n = len(means)
    return Gaussians(
        means=torch.tensor(means, dtype=torch.float32),
        quats=torch.tensor([[1.0, 0, 0, 0]] * n),
        scales=torch.tensor(scales, dtype=torch.float32).reshape(n, 1).repeat(1, 3),
        opacities=torch.tensor(opacities, dtype=torch.float32),
        features=torch.tensor(colors, dtype=torch.float32),
    )


def test_cpu_default_backend_is_reference():
    assert choose_backend(torch.device("cpu")) == "reference"
    with pytest.raises(ValueError, match="CUDA"):
        choose_backend(torch.device("cpu"), "gsplat")


def test_single_gaussian_centre_value_and_falloff():
    z, s, o = 4.0, 0.05, 0.8
    g = gaussians([[0, 0, z]], [s], [o], [[1.0, 0.5, 0.25]])
    out = render(g, *camera(), W, H)
    cy, cx = H // 2, W // 2  # pixel whose centre is the projected mean
    assert torch.allclose(out.rgb[0, cy, cx], torch.tensor([o, o * 0.5, o * 0.25]), atol=1e-6)
    assert out.alpha[0, cy, cx, 0] == pytest.approx(o, abs=1e-6)
    assert out.depth[0, cy, cx, 0] == pytest.approx(z, rel=1e-6)
    # 2D variance = (f s / z)^2 + eps2d (0.3); value one and two pixels to the right
    var = (F * s / z) ** 2 + 0.3
    for d in (1, 2):
        expected = o * math.exp(-0.5 * d * d / var)
        assert out.alpha[0, cy, cx + d, 0] == pytest.approx(expected, rel=1e-5)


def test_occlusion_order_is_by_depth_not_input_order():
    front = ([0, 0, 2.0], 0.2, 0.6, [1.0, 0, 0])
    back = ([0, 0, 5.0], 0.5, 0.9, [0, 0, 1.0])
    cam = camera()
    for order in ((front, back), (back, front)):
        g = gaussians(*[list(x) for x in zip(*order, strict=False)])
        out = render(g, *cam, W, H)
        px = out.rgb[0, H // 2, W // 2]
        # front: alpha 0.6 red; back seen through (1 - 0.6): blue with alpha 0.9
        assert px[0] == pytest.approx(0.6, abs=1e-5)
        assert px[2] == pytest.approx(0.4 * 0.9, abs=1e-5)
        assert out.alpha[0, H // 2, W // 2, 0] == pytest.approx(1 - 0.4 * 0.1, abs=1e-5)
        expected_depth = (0.6 * 2.0 + 0.36 * 5.0) / 0.96
        assert out.depth[0, H // 2, W // 2, 0] == pytest.approx(expected_depth, rel=1e-5)


def test_background_where_nothing_is_drawn():
    g = gaussians([[0, 0, 3.0]], [0.02], [0.9], [[1.0, 1.0, 1.0]])
    bg = torch.tensor([0.1, 0.2, 0.3])
    out = render(g, *camera(), W, H, background=bg)
    assert torch.allclose(out.rgb[0, 0, 0], bg)
    assert out.alpha[0, 0, 0, 0] == 0
    # where drawn: colour + T * background
    c = out.rgb[0, H // 2, W // 2]
    assert torch.allclose(c, 0.9 * torch.ones(3) + 0.1 * bg, atol=1e-5)


def test_extra_channels_share_the_blend_weights():
    g = gaussians([[0, 0, 2.0], [0.1, 0, 3.0]], [0.2, 0.3], [0.5, 0.7], [[1, 0, 0], [0, 1, 0]])
    extras = torch.tensor([[1.0, 2.0], [1.0, -1.0]])
    out = render(g, *camera(), W, H, extras=extras, extras_background=torch.tensor([0.0, 5.0]))
    assert out.extras.shape == (1, H, W, 2)
    # a constant-1 channel composites to alpha
    assert torch.allclose(out.extras[..., 0:1], out.alpha, atol=1e-6)
    # background applies to extras with the remaining transmittance
    assert out.extras[0, 0, 0, 1] == pytest.approx(5.0)


def test_transmittance_stops_before_dropping_below_1e_4():
    # first Gaussian leaves T = 0.001; the second would give 1e-6 <= 1e-4 so it is excluded
    g = gaussians([[0, 0, 2.0], [0, 0, 3.0]], [1.0, 1.0], [0.999, 0.999], [[1, 0, 0], [0, 1, 0]])
    out = render(g, *camera(), W, H)
    px = out.rgb[0, H // 2, W // 2]
    assert px[1] == 0
    assert out.alpha[0, H // 2, W // 2, 0] == pytest.approx(0.999, abs=1e-6)


def test_culling_behind_near_plane_and_transparent():
    g = gaussians([[0, 0, -1.0], [0, 0, 0.005], [0, 0, 3.0]], [0.3, 0.3, 0.3], [0.9, 0.9, 0.003],
                  [[1, 1, 1]] * 3)
    out = render(g, *camera(), W, H)
    assert out.alpha.abs().max() == 0
    radii = out.info["radii"]
    assert radii.shape == (1, 3, 2) and (radii == 0).all()


def test_gradients_reach_every_input_and_means2d():
    torch.manual_seed(0)
    n = 50
    g = Gaussians(means=(torch.randn(n, 3) * 0.3 + torch.tensor([0, 0, 3.0])).requires_grad_(),
                  quats=torch.randn(n, 4).requires_grad_(),
                  scales=(torch.rand(n, 3) * 0.05 + 0.02).requires_grad_(),
                  opacities=torch.rand(n).requires_grad_(),
                  sh=torch.randn(n, 4, 3).requires_grad_(), sh_degree=1)
    out = render(g, *camera(), W, H, background=torch.ones(3))
    out.info["means2d"].retain_grad()
    (out.rgb.mean() + out.depth.mean() * 0.01).backward()
    for name in ("means", "quats", "scales", "opacities", "sh"):
        grad = getattr(g, name).grad
        assert grad is not None and torch.isfinite(grad).all() and grad.abs().sum() > 0, name
    assert out.info["means2d"].grad.abs().sum() > 0


def test_several_cameras_and_shapes():
    g = gaussians([[0, 0, 3.0]], [0.1], [0.5], [[1, 1, 1]])
    viewmats = torch.eye(4).repeat(3, 1, 1)
    viewmats[1, 0, 3] = 0.2  # shifted camera sees the Gaussian elsewhere
    K = camera()[1].repeat(3, 1, 1)
    out = render(g, viewmats, K, W, H)
    assert out.rgb.shape == (3, H, W, 3) and out.depth.shape == (3, H, W, 1)
    assert torch.allclose(out.rgb[0], out.rgb[2])
    assert not torch.allclose(out.rgb[0], out.rgb[1])


def test_sh_evaluation_convention():
    rgb = torch.tensor([[0.2, 0.5, 0.9]])
    sh = torch.zeros(1, 4, 3)
    sh[:, 0] = rgb_to_sh0(rgb)
    assert torch.allclose(eval_sh(1, sh, torch.tensor([[0.0, 0.0, 1.0]])), rgb, atol=1e-6)
    sh[:, 2] = 1.0  # the z band: + C1 * z
    out = eval_sh(1, sh, torch.tensor([[0.0, 0.0, 2.0]]))  # direction normalised inside
    assert torch.allclose(out, rgb + C1, atol=1e-6)
    assert C0 == pytest.approx(0.5 / math.sqrt(math.pi))


def test_concat_pads_sh_and_keeps_rows():
    a = gaussians([[0, 0, 1.0]], [0.1], [0.5], [[1, 0, 0]])
    b = gaussians([[0, 0, 2.0], [0, 0, 3.0]], [0.1, 0.1], [0.5, 0.5], [[0, 1, 0], [0, 0, 1]])
    c = concat([a, b])
    assert len(c) == 3 and torch.equal(c.features[1], torch.tensor([0.0, 1, 0]))
    with pytest.raises(ValueError):
        Gaussians(means=torch.zeros(2, 3), quats=torch.zeros(2, 4), scales=torch.ones(2, 3),
                  opacities=torch.ones(3), features=torch.zeros(2, 3))


def random_sets(count: int, n: int = 30, seed: int = 0) -> list[Gaussians]:
    """`count` sets of one size (e.g. one expert at several times), with SH degree 1."""
    g = torch.Generator().manual_seed(seed)
    return [Gaussians(means=torch.randn(n, 3, generator=g) * 0.3 + torch.tensor([0, 0, 3.0]),
                      quats=torch.randn(n, 4, generator=g), scales=torch.rand(n, 3, generator=g) * 0.05 + 0.02,
                      opacities=torch.rand(n, generator=g), sh=torch.randn(n, 4, 3, generator=g) * 0.5,
                      sh_degree=1) for _ in range(count)]


def test_render_batch_equals_one_render_per_set_with_gradients():
    sets = random_sets(3)
    for g in sets:
        for name in ("means", "scales", "sh"):
            getattr(g, name).requires_grad_(True)
    viewmats = torch.eye(4).repeat(3, 2, 1, 1)  # [B=3, C=2]
    viewmats[:, 1, 0, 3] = torch.tensor([0.1, -0.2, 0.3])
    Ks = camera()[1].repeat(3, 2, 1, 1)
    bg = torch.tensor([0.1, 0.2, 0.3])
    batch = render_batch(sets, viewmats, Ks, W, H, background=bg)
    assert batch.rgb.shape == (3, 2, H, W, 3) and batch.depth.shape == (3, 2, H, W, 1)
    assert batch.info["means2d"].shape == (3, 2, 30, 2) and batch.info["n_cameras"] == 6
    batch.info["means2d"].retain_grad()
    (batch.rgb.square().mean() + 0.01 * batch.depth.mean()).backward()
    got = {name: [getattr(g, name).grad.clone() for g in sets] for name in ("means", "scales", "sh")}
    got2d = batch.info["means2d"].grad.clone()
    for g in sets:
        for name in ("means", "scales", "sh"):
            getattr(g, name).grad = None
    singles = [render(g, viewmats[b], Ks[b], W, H, background=bg) for b, g in enumerate(sets)]
    for b, one in enumerate(singles):
        torch.testing.assert_close(batch.rgb[b], one.rgb)
        torch.testing.assert_close(batch.depth[b], one.depth)
        torch.testing.assert_close(batch.alpha[b], one.alpha)
        torch.testing.assert_close(batch.info["radii"][b], one.info["radii"])
        one.info["means2d"].retain_grad()
    # the batched loss is the mean over all 3 x 2 images: each set's share is a third
    sum(o.rgb.square().mean() + 0.01 * o.depth.mean() for o in singles).div(3).backward()
    for name, grads in got.items():
        for b, g in enumerate(sets):
            torch.testing.assert_close(grads[b], getattr(g, name).grad, rtol=1e-4, atol=1e-7)
    for b, one in enumerate(singles):
        torch.testing.assert_close(got2d[b], one.info["means2d"].grad, rtol=1e-4, atol=1e-7)


def test_render_batch_refuses_sets_of_different_layouts():
    a, b = random_sets(2)
    viewmats, Ks = torch.eye(4).repeat(2, 1, 1, 1), camera()[1].repeat(2, 1, 1, 1)
    short = Gaussians(means=b.means[:10], quats=b.quats[:10], scales=b.scales[:10], opacities=b.opacities[:10],
                      sh=b.sh[:10], sh_degree=1)
    assert same_layout([a, b]) and not same_layout([a, short])
    with pytest.raises(ValueError, match="count"):
        render_batch([a, short], viewmats, Ks, W, H)
    with pytest.raises(ValueError, match="camera groups"):
        render_batch([a, b, a], viewmats, Ks, W, H)
