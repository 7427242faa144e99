"""The Volume-aware Pixel Router against its definition (REFERENCE.md §1), each test named
for the wrong router it catches, and a scene where routing has one right answer."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest
import torch
from torch import nn

from moegs_bench.data.load import load_scene
from moegs_bench.eval.evaluate import evaluate_methods
from moegs_bench.experts.base import Expert, TrainConfig
from moegs_bench.experts.common import init_gaussian_tensors
from moegs_bench.moe.baselines import baseline_renderers
from moegs_bench.moe.blend import pixel_rays
from moegs_bench.moe.pool import ExpertPool
from moegs_bench.moe.routers import build_router, router_config
from moegs_bench.moe.train_router import router_renderer, train_router
from moegs_bench.render.backend import render
from moegs_bench.render.gaussians import Gaussians
from moegs_bench.render.sh import rgb_to_sh0

CPU = torch.device("cpu")


@dataclass
class FixedConfig:
    train: TrainConfig = field(default_factory=TrainConfig)


class FixedExpert(Expert):
    """A trained expert stand-in: the same Gaussians at every time."""

    name = "fixed"
    Config = FixedConfig

    def __init__(self, config: FixedConfig, gaussians: Gaussians):
        super().__init__(config)
        self.fixed = gaussians
        self.params["means"] = nn.Parameter(gaussians.means.clone())

    @classmethod
    def from_init(cls, init, config, generator=None):
        pts = init.points("merged")
        return cls(config, _gaussians(torch.as_tensor(pts["xyz"]), torch.as_tensor(pts["rgb"]) / 255.0))

    def gaussians_at(self, t, camera=None) -> Gaussians:
        return self.fixed

    def learning_rates(self, step, extent):
        return {}


def _gaussians(xyz: torch.Tensor, rgb: torch.Tensor) -> Gaussians:
    """Opaque degree-0 Gaussians at the points, half the 3-NN size (fewer pixels each, a faster
    test), with colours `rgb` [N,3]."""
    t = init_gaussian_tensors(xyz.numpy(), (rgb * 255).round().byte().numpy(), 0, 0.9, CPU)
    return Gaussians(t["means"], t["quats"], 0.5 * torch.exp(t["scales"]), torch.sigmoid(t["opacities"]),
                     sh=rgb_to_sh0(rgb.float())[:, None, :], sh_degree=0)


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def halves(tiny_scene_dir):
    """A scene whose images are renders of one Gaussian set G, and two experts: A is G with the
    colours of the Gaussians left of the median x replaced, B those right of it. Per pixel one
    expert is right, and which one is a property of the Gaussians a pixel sees."""
    data = load_scene(tiny_scene_dir, CPU)
    pts = data.scene.load_points("merged")
    gen = torch.Generator().manual_seed(0)
    keep = torch.randperm(len(pts["xyz"]), generator=gen)[:1000]
    xyz = torch.as_tensor(pts["xyz"])[keep].float()
    rgb = torch.as_tensor(pts["rgb"])[keep].float() / 255.0
    truth = _gaussians(xyz, rgb)
    left = xyz[:, 0] < xyz[:, 0].median()
    wrong = 1.0 - rgb  # far from the truth everywhere
    a = _gaussians(xyz, torch.where(left[:, None], wrong, rgb))
    b = _gaussians(xyz, torch.where(left[:, None], rgb, wrong))
    for split in ("train", "test"):
        views = data.splits[split]
        for i in range(len(views)):
            vm, K = data.camera_batch(views.cams[i:i + 1])
            img = render(truth, vm, K, data.width, data.height).rgb[0]
            views.images[i] = (img.clamp(0, 1) * 255 + 0.5).byte()
    experts = [FixedExpert(FixedConfig(), g) for g in (a, b)]
    return ExpertPool(experts, ["a", "b"], data)


def cfg(**kw):
    return router_config("vapr", "tiny", kw)


def test_channels_are_w_w_dir_and_t_times_w_time(halves):
    # catches: dropping the t· factor on w_time (or swapping the channels)
    router = build_router("vapr", halves, cfg(init_w=0.3, init_w_dir=0.6, init_w_time=0.8))
    t = torch.tensor(0.375)
    for channels, n in zip(router.router_channels(t), halves.sizes, strict=True):
        assert torch.allclose(channels, torch.tensor([0.3, 0.6, 0.375 * 0.8]).expand(n, 3))


def test_phi_sees_w2d_dir_time_and_rays_and_the_logit_keeps_w2d(halves):
    # catches: feeding Φ [w, w_dir] instead of [w_dir, t·w_time]; removing the w2D residual
    router = build_router("vapr", halves, cfg(init_w=0.3, init_w_dir=0.6, init_w_time=0.8))
    with torch.no_grad():
        router.w[1].fill_(2.0)  # expert b's w differs: the residual decides the gates
    phi, seen = router.phi, []

    class Spy(nn.Module):
        def forward(self, x):
            seen.append(x.detach())
            return phi(x)

    router.phi = Spy()
    cam, frame = 1, 3
    with torch.no_grad():
        out = router(halves, cam, frame, temperature=1.0)
        t = halves.data.times[frame]
        views = halves.render_view(cam, frame, extras=router.router_channels(t), extras_background=torch.ones(3))
        splat = torch.stack([o.extras for o in views.outputs])  # [K,1,H,W,3]
        origins, dirs = pixel_rays(views.viewmats, views.Ks, halves.data.width, halves.data.height)
        x = seen[0]
        assert x.shape[-1] == 8
        assert torch.allclose(x[..., 0], splat[..., 1]) and torch.allclose(x[..., 1], splat[..., 2])
        assert torch.allclose(x[..., 2:5], origins.expand_as(x[..., 2:5]))
        assert torch.allclose(x[..., 5:8], dirs.expand_as(x[..., 5:8]))
        logits = splat[..., 0] + phi(x)[..., 0]
        assert torch.allclose(out.gates, torch.softmax(logits, 0), atol=1e-6)


def test_temperature_divides_the_logits(halves, monkeypatch):
    # catches: a router that ignores the temperature, in the gates or in training/evaluation
    router = build_router("vapr", halves, cfg())
    with torch.no_grad():
        router.w[0].fill_(1.5)
        g1 = router(halves, 2, 4, temperature=1.0).gates
        g4 = router(halves, 2, 4, temperature=0.25).gates
    r1, r4 = (g1[0] / g1[1]).log(), (g4[0] / g4[1]).log()
    assert r1.abs().max() > 0.05 and torch.allclose(r4, 4 * r1, atol=1e-4)
    temps = []
    forward = type(router).forward
    monkeypatch.setattr(type(router), "forward",
                        lambda self, pool, cam, frame, temperature: temps.append(temperature)
                        or forward(self, pool, cam, frame, temperature))
    c = cfg(iterations=2, temperature=0.01, eval_temperature=1.0)
    train_router(build_router("vapr", halves, c), halves, c)
    assert temps == [0.01, 0.01]
    temps.clear()
    router_renderer(build_router("vapr", halves, c), halves)(0)
    assert temps == [1.0]


def test_w_and_w_dir_are_one_group_whose_rate_decays(halves, monkeypatch):
    # catches: removing the w learning-rate decay, or leaving w_dir out of the decaying group
    c = cfg(iterations=4, lr_w=0.5, lr_w_final_ratio=0.01, lr_w_decay_steps=2)
    router = build_router("vapr", halves, c)
    groups = {g["name"]: g["params"] for g in router.param_groups()}
    assert {id(p) for p in groups["w"]} == {id(p) for p in [*router.w, *router.w_dir]}
    assert router.learning_rates(0)["w"] == pytest.approx(0.5)
    assert router.learning_rates(1)["w"] == pytest.approx(0.05)
    assert router.learning_rates(2)["w"] == pytest.approx(0.005)
    seen = []
    step = torch.optim.RAdam.step

    def recording(self, *a, **k):
        seen.append({g["name"]: g["lr"] for g in self.param_groups})
        return step(self, *a, **k)

    monkeypatch.setattr(torch.optim.RAdam, "step", recording)
    train_router(router, halves, c)
    assert [s["w"] for s in seen] == pytest.approx([0.5, 0.05, 0.005, 0.005])
    assert all(s["phi"] == c.lr_phi and s["w_time"] == c.lr_w_time for s in seen)


def test_training_finds_the_right_expert_per_gaussian(halves):
    """Each expert is right on its half: the trained mixture must lower its loss, beat the
    uniform average by far and come near the per-pixel oracle (catches a router that does not
    learn, or learns the wrong sign)."""
    c = cfg(iterations=80, temperature=1.0)
    router = build_router("vapr", halves, c)
    result = train_router(router, halves, c, seed=0)
    first, last = sum(result.losses[:20]) / 20, sum(result.losses[-20:]) / 20
    assert last < 0.4 * first
    evals = evaluate_methods({"vapr": router_renderer(router, halves), **baseline_renderers(halves)}, halves.data)
    psnr = {m: e.summary["psnr"] for m, e in evals.items()}
    # measured: vapr 30.6, oracle 30.8, uniform 14.0 dB
    assert psnr["vapr"] > psnr["uniform-average"] + 10.0, psnr
    assert psnr["vapr"] > psnr["oracle-pixel"] - 1.0, psnr


@pytest.mark.parametrize("name", ["vapr", "pixel"])
def test_expert_background_is_behind_every_expert_in_the_mixture(halves, name):
    # catches: a router that ignores `expert_background` (the paper preset's white)
    cfgs = {bg: router_config(name, "tiny", {"expert_background": bg, **({"init_w": 1.0} if name == "vapr" else {})})
            for bg in ("own", "white")}
    routers = {bg: build_router(name, halves, c) for bg, c in cfgs.items()}
    for router in routers.values():
        if name == "vapr":
            with torch.no_grad():
                for p in router.phi.parameters():
                    p.zero_()
    with torch.no_grad():
        out = {bg: r(halves, 1, 2, 1.0).image for bg, r in routers.items()}
        own = halves.render_view(1, 2).images.mean(0)
        white = halves.render_view(1, 2, background=torch.ones(3)).images.mean(0)
    assert torch.allclose(out["own"], own, atol=1e-5) and torch.allclose(out["white"], white, atol=1e-5)
    assert not torch.allclose(own, white, atol=1e-3)  # some pixels are not opaque: the test can tell
