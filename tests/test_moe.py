"""Stage 2 on frozen experts: routers, baselines, oracles (two static experts, tiny scene)."""

from __future__ import annotations

import pytest
import torch

from moegs_bench.errors import ConfigError
from moegs_bench.eval.evaluate import evaluate_methods, evaluate_views
from moegs_bench.experts.views import expert_view_renderer
from moegs_bench.moe.baselines import baseline_renderers, oracle_gain_share
from moegs_bench.moe.blend import oracle_image, oracle_pixel, pixel_rays, uniform_average
from moegs_bench.moe.pool import ExpertPool
from moegs_bench.moe.routers import build_router, router_config, router_names
from moegs_bench.moe.routers import volume as volume_mod
from moegs_bench.moe.train_router import load_router, router_renderer, save_router, train_router
from moegs_bench.render import multi_expert

pytestmark = pytest.mark.usefixtures("one_thread")


def make_experts(data, specs):
    from moegs_bench.experts.registry import expert_config, get_expert

    cls = get_expert("static")
    out = []
    for seed, degree, points in specs:
        cfg = expert_config("static", "tiny", {"sh_degree": degree, "max_init_points": points})
        expert = cls.from_scene(data, cfg, torch.Generator().manual_seed(seed))
        expert.active_sh_degree = degree
        out.append(expert)
    return out


@pytest.fixture(scope="module")
def data(tiny_scene_dir):
    from moegs_bench.data.load import load_scene

    return load_scene(tiny_scene_dir, torch.device("cpu"))


@pytest.fixture(scope="module")
def pool(data):
    experts = make_experts(data, [(0, 1, 250), (1, 0, 200)])
    return ExpertPool(experts, ["static-a", "static-b"], data)


def cfg(name="vapr", **kw):
    return router_config(name, "tiny", kw)


@pytest.mark.parametrize("name", ["vapr", "pixel", "volume"])
def test_gates_sum_to_one_and_only_router_params_get_gradients(pool, name):
    router = build_router(name, pool, cfg(name))
    out = router(pool, cam=1, frame=2, temperature=1.0)
    h, w = pool.data.height, pool.data.width
    assert out.image.shape == (1, h, w, 3) and out.gates.shape == (2, 1, h, w)
    assert torch.allclose(out.gates.sum(0), torch.ones(1, h, w), atol=1e-5)
    assert (out.gates >= 0).all()
    gt = pool.data.image_float("train", torch.tensor([0]))
    (out.image - gt).abs().mean().backward()
    for expert in pool.experts:
        for p in expert.parameters():
            assert not p.requires_grad and p.grad is None
    grads = [p.grad for p in router.parameters()]
    assert grads and all(g is not None for g in grads)
    assert any(g.abs().sum() > 0 for g in grads)


def test_vapr_with_equal_weights_is_the_uniform_average(pool):
    # w equal to the router background (1) everywhere and Φ = 0: every expert's logit is 1
    router = build_router("vapr", pool, cfg(init_w=1.0, init_w_time=0.3))
    with torch.no_grad():
        for p in router.phi.parameters():
            p.zero_()
    for temperature in (1.0, 0.01):
        with torch.no_grad():
            out = router(pool, cam=2, frame=5, temperature=temperature)
        images = pool.render_view(2, 5).images
        assert torch.allclose(out.gates, torch.full_like(out.gates, 0.5), atol=1e-5)
        assert torch.allclose(out.image, uniform_average(images), atol=1e-5)


def test_router_channels_come_from_each_experts_single_render(pool, monkeypatch):
    calls = []
    real = multi_expert.render

    def counting(*args, **kw):
        calls.append(kw.get("extras"))
        return real(*args, **kw)

    monkeypatch.setattr(multi_expert, "render", counting)
    router = build_router("vapr", pool, cfg())
    monkeypatch.setattr(pool, "render_mode", "multi-pass")
    router(pool, cam=0, frame=1, temperature=1.0)
    assert len(calls) == len(pool)  # one rasterisation per expert: RGB, depth and router channels
    assert all(ex is not None and ex.shape == (n, 3) for ex, n in zip(calls, pool.sizes, strict=True))
    assert all(ex.requires_grad for ex in calls)

    # single pass (the default for frozen experts): one call with every expert's channels
    calls.clear()
    single_calls = []
    real_single = multi_expert.render_single_pass
    monkeypatch.setattr(multi_expert, "render_single_pass",
                        lambda gs, *a, **k: single_calls.append(k["extras"]) or real_single(gs, *a, **k))
    monkeypatch.setattr(pool, "render_mode", "auto")
    router(pool, cam=0, frame=1, temperature=1.0)
    assert calls == [] and len(single_calls) == 1
    assert [ex.shape for ex in single_calls[0]] == [(n, 3) for n in pool.sizes]

    calls.clear()
    volume_calls = []
    real_volume = volume_mod.render
    monkeypatch.setattr(volume_mod, "render", lambda *a, **k: volume_calls.append(1) or real_volume(*a, **k))
    build_router("volume", pool, cfg("volume"))(pool, cam=0, frame=1, temperature=1.0)
    assert volume_calls == [1] and calls == []  # all experts' Gaussians in one pass, no per-expert pass


def test_pixel_oracle_bounds_experts_and_the_trained_mixture(pool):
    # every expert alone and every baseline, through the one evaluation path in one pass
    experts = {name: expert_view_renderer(e, pool.data, background=e.config.train.background)
               for name, e in zip(pool.names, pool.experts, strict=True)}
    evals = evaluate_methods({**experts, **baseline_renderers(pool)}, pool.data)
    oracle = evals["oracle-pixel"].rows
    for label in experts:
        for o, e in zip(oracle, evals[label].rows, strict=True):
            assert o["psnr"] >= e["psnr"] - 1e-6, label
    best_image = [max(evals[n].rows[i]["psnr"] for n in experts) for i in range(len(oracle))]
    assert [r["psnr"] for r in evals["oracle-image"].rows] == pytest.approx(best_image)
    assert evals["oracle-pixel"].summary["psnr"] > max(evals[n].summary["psnr"] for n in experts)
    # the uniform average is the mean image: its per-view rows are those of the blended image
    mean_image = (evals["uniform-average"].rows[0]["psnr"])
    a, b = (expert_view_renderer(e, pool.data, background=e.config.train.background)(0).clamp(0, 1)
            for e in pool.experts)
    gt = pool.data.image_float("test", torch.tensor([0]))[0]
    assert mean_image == pytest.approx(-10 * torch.log10(((a + b) / 2 - gt).square().mean()).item(), abs=1e-4)


def test_router_training_steps_and_losses(pool):
    c = cfg(iterations=8)
    router = build_router("vapr", pool, c)
    result = train_router(router, pool, c, seed=0)
    assert result.steps == 8 and len(result.losses) == 8
    moe = evaluate_views(router_renderer(router, pool), pool.data)
    assert len(moe.rows) == len(pool.data.splits["test"]) and {"psnr", "ssim"} <= set(moe.summary)


def test_oracles_on_known_images():
    gt = torch.zeros(1, 2, 2, 3)
    a = torch.tensor([0.1, 0.9]).view(1, 1, 2, 1).expand(1, 2, 2, 3)
    b = torch.tensor([0.5, 0.0]).view(1, 1, 2, 1).expand(1, 2, 2, 3)
    images = torch.stack([a, b])
    pix, gates = oracle_pixel(images, gt)
    assert torch.allclose(pix[0, :, 0], torch.full((2, 3), 0.1)) and torch.allclose(pix[0, :, 1], torch.zeros(2, 3))
    assert gates[:, 0, 0, 0].tolist() == [1.0, 0.0] and gates[:, 0, 0, 1].tolist() == [0.0, 1.0]
    img, best = oracle_image(images, gt)
    assert best.tolist() == [1] and torch.equal(img, b)
    assert oracle_gain_share(31.0, 30.0, 32.0) == pytest.approx(0.5)
    assert oracle_gain_share(29.0, 30.0, 30.0) is None


def test_router_save_load_round_trip(pool, tmp_path):
    c = cfg("pixel", iterations=3)
    router = build_router("pixel", pool, c)
    train_router(router, pool, c)
    path = save_router(router, tmp_path / "router.pt")
    again = load_router(path, torch.device("cpu"))
    with torch.no_grad():
        a = router(pool, 0, 0, 1.0).image
        b = again(pool, 0, 0, 1.0).image
    assert torch.equal(a, b)


def test_volume_router_rejects_feature_experts(data):
    from moegs_bench.experts.static import StaticExpert

    class Decoded(StaticExpert):
        decodes_pixels = True

        def decode(self, rendered, viewmats, Ks, t):
            return rendered.sigmoid()

    experts = make_experts(data, [(0, 0, 50)])
    decoded = Decoded(experts[0].config)
    decoded.params = experts[0].params
    mixed = ExpertPool([experts[0], decoded], ["plain", "decoded"], data)
    with pytest.raises(ConfigError, match="'decoded'.*RGB/SH"):
        build_router("volume", mixed, cfg("volume"))
    build_router("vapr", mixed, cfg())  # 2D blending works with any decoded expert


def test_stg_decodes_pixels_only_in_features_mode():
    from moegs_bench.experts.registry import expert_config
    from moegs_bench.experts.stg import STGExpert

    for color, decodes in (("sh", False), ("rgb", False), ("features", True)):
        cfg = expert_config("stg", "tiny", {"color": color})
        assert STGExpert.empty(cfg, torch.device("cpu")).decodes_pixels is decodes


def test_render_experts_matches_single_renders(pool):
    from moegs_bench.render.backend import render

    vm, K = pool.data.camera_batch(torch.tensor([0]))
    gs = [pool.gaussians(k, 0, 0) for k in range(len(pool))]
    outs = multi_expert.render_experts(gs, vm, K, pool.data.width, pool.data.height)
    for g, out in zip(gs, outs, strict=True):
        assert torch.equal(out.rgb, render(g, vm, K, pool.data.width, pool.data.height).rgb)
    with pytest.raises(ValueError, match="2 Gaussian sets"):
        multi_expert.render_experts(gs, vm, K, 8, 8, extras=[None])


def test_pixel_rays_point_through_the_principal_point(data):
    vm, K = data.camera_batch(torch.tensor([0, 3]))
    origins, dirs = pixel_rays(vm, K, data.width, data.height)
    assert origins.shape == dirs.shape == (2, data.height, data.width, 3)
    assert torch.allclose(dirs.norm(dim=-1), torch.ones(2, data.height, data.width), atol=1e-5)
    forward = vm[:, 2, :3]  # camera z axis in world coordinates
    centre = dirs[:, data.height // 2, data.width // 2]
    assert (torch.nn.functional.cosine_similarity(centre, forward) > 0.99).all()


def test_router_config_presets_and_errors():
    paper = router_config("vapr", "paper")
    assert paper.iterations == 5000 and paper.temperature == 0.01 and paper.eval_temp == 1.0
    assert paper.expert_background == "white"  # the authors render every expert on white
    assert router_config("pixel").eval_temp == router_config("pixel").temperature
    assert router_config("vapr", "technicolor").lr_phi == 0.01 and router_config("volume", "technicolor").lr_w == 0.1
    assert router_names() == ["pixel", "volume", "vapr"]  # the paper's Table 4 order
    with pytest.raises(ConfigError, match="--router-preset"):
        router_config("vapr", "nope")
    with pytest.raises(ConfigError, match="router.nope"):
        router_config("vapr", None, {"nope": 1})
    with pytest.raises(ConfigError, match="router.lr_phi"):  # a VAPR setting the Pixel Router lacks
        router_config("pixel", None, {"lr_phi": 0.1})
    with pytest.raises(ConfigError, match="temperature"):
        router_config("vapr", None, {"temperature": 0.0})
    with pytest.raises(ConfigError, match="unknown router 'best'"):
        router_config("best")
