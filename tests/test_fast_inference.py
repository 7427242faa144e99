"""The inference path of frozen experts and of VAPR against the training path: the same
Gaussians and the same mixture up to float rounding, a cache that follows parameter changes,
and a training path that still carries gradients."""

from __future__ import annotations

import pytest
import torch

from moegs_bench.data.load import load_scene
from moegs_bench.experts.registry import expert_config, get_expert
from moegs_bench.moe.pool import ExpertPool
from moegs_bench.moe.routers import build_router, router_config

CPU = torch.device("cpu")
TIMES = (0.0, 0.13, 0.5, 0.77, 0.99)
FIELDS = ("means", "quats", "scales", "opacities", "sh", "features")

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def data(tiny_scene_dir):
    return load_scene(tiny_scene_dir, CPU)


def randomise(name: str, expert, seed: int = 1) -> None:
    """Motion, keyframes, embeddings as after training (the initial state moves nothing)."""
    g = torch.Generator().manual_seed(seed)
    p = expert.params
    with torch.no_grad():
        if name == "stg":
            p["motion"].copy_(0.3 * torch.randn(p["motion"].shape, generator=g))
            p["omega"].copy_(0.3 * torch.randn(p["omega"].shape, generator=g))
            p["time_scale"].uniform_(-1.5, 0.0, generator=g)
        elif name == "ex4dgs":
            rows = torch.arange(0, expert.num_gaussians, 3)
            p["is_dynamic"][rows] = 1.0
            p["kf_pos"][rows] += 0.3 * torch.randn(len(rows), expert.num_keyframes, 3, generator=g)
            p["kf_rot"][rows] = torch.randn(len(rows), expert.num_keyframes, 4, generator=g)
            p["kf_rot"][rows[:10], 1] = p["kf_rot"][rows[:10], 0]  # coinciding keyframes: the lerp branch
            p["t_center"][rows] = torch.tensor([2.0, 5.0])
            p["drift"].normal_(0, 0.1, generator=g)
        elif name == "ed3dgs":
            p["embedding"].copy_(torch.randn(p["embedding"].shape, generator=g))
            expert.temporal.copy_(torch.randn(expert.temporal.shape, generator=g))
            expert.time_offsets.copy_(0.05 * torch.randn(expert.time_offsets.shape, generator=g))
            expert.on_step(10_000)  # annealing done, all rows
        elif name == "4dgs":
            for plane in expert.field.planes.values():
                plane.add_(0.2 * torch.randn(plane.shape, generator=g))
            expert.on_step(10_000)  # fine stage


def make(name: str, data, **over):
    cfg = expert_config(name, "tiny", {"max_init_points": 400, **over})
    expert = get_expert(name).from_scene(data, cfg, torch.Generator().manual_seed(0))
    randomise(name, expert)
    expert.active_sh_degree = cfg.sh_degree
    return expert


def training_path(expert, t, camera=None):
    """gaussians_at as training calls it (parameters trainable, autograd on), detached."""
    expert.requires_grad_(True)
    try:
        return expert.gaussians_at(torch.tensor(t), camera=camera).detach()
    finally:
        expert.requires_grad_(False)


def inference_path(expert, t, camera=None):
    with torch.no_grad():
        return expert.gaussians_at(torch.tensor(t), camera=camera)


def assert_same(fast, ref, what: str) -> None:
    """Equal up to float32 rounding: 1e-6 for values of magnitude <= 1, 1e-6 x magnitude
    above (positions of a few units are rounded at 2.4e-7 x 2^k)."""
    assert fast.sh_degree == ref.sh_degree
    for f in FIELDS:
        a, b = getattr(fast, f), getattr(ref, f)
        assert (a is None) == (b is None), f"{what}: {f}"
        if a is None:
            continue
        assert a.shape == b.shape, f"{what}: {f} {tuple(a.shape)} vs {tuple(b.shape)}"
        scale = max(1.0, b.abs().max().item())
        diff = (a - b).abs().max().item()
        assert diff <= 1e-6 * scale, f"{what}: {f} differs by {diff:.3g} (scale {scale:.3g})"


CASES = [("stg", {}), ("stg", {"color": "rgb"}), ("stg", {"color": "features"}), ("ex4dgs", {}),
         ("ex4dgs", {"compat_far_centre": True}), ("ed3dgs", {}), ("ed3dgs", {"trunk_layers": 2}),
         ("4dgs", {})]


@pytest.mark.parametrize(("name", "over"), CASES, ids=[f"{n}-{'-'.join(map(str, o.values())) or 'default'}"
                                                        for n, o in CASES])
def test_inference_gaussians_equal_the_training_path(data, name, over):
    # catches: a wrong regrouping of a formula (Horner, Catmull-Rom weights, slerp's
    # trigonometric form, folded trunk), a cached time-dependent term, a lost camera offset
    expert = make(name, data, **over).eval().requires_grad_(False)
    with torch.no_grad():
        assert expert.uses_inference_path()
    for t in TIMES:
        cam = 1 if name == "ed3dgs" else None
        assert_same(inference_path(expert, t, cam), training_path(expert, t, cam), f"{name} t={t}")


@pytest.mark.parametrize("name", ["stg", "ex4dgs", "ed3dgs", "4dgs"])
def test_cache_follows_parameter_changes(data, name):
    # catches: a stale cache (tensors of the old parameters after an in-place update or after
    # parameters were replaced, as loading a checkpoint does)
    expert = make(name, data).freeze_for_inference()
    before = inference_path(expert, 0.4)
    randomise(name, expert, seed=7)  # in place, under no_grad (version counters move)
    with torch.no_grad():
        expert.params["opacities"].add_(0.5)
        expert.params["means"].add_(0.25)
    changed = inference_path(expert, 0.4)
    assert not torch.equal(changed.means, before.means)
    assert_same(changed, training_path(expert, 0.4), f"{name} after an in-place change")
    state = {k: v + 0.1 for k, v in expert.checkpoint()["params"].items()}
    expert.load_checkpoint({"params": state})  # new Parameter objects
    expert.requires_grad_(False)
    assert_same(inference_path(expert, 0.4), training_path(expert, 0.4), f"{name} after a load")


@pytest.mark.parametrize("name", ["stg", "ex4dgs", "ed3dgs", "4dgs"])
def test_training_path_keeps_gradients(data, name):
    # catches: the inference path taken while training (no gradients), or under no_grad while
    # parameters are still trainable (a cache that training would leave stale)
    expert = make(name, data)
    g = expert.gaussians_at(torch.tensor(0.3))
    (g.means.sum() + g.opacities.sum()).backward()
    assert expert.params["means"].grad is not None and expert.params["means"].grad.abs().sum() > 0
    with torch.no_grad():
        assert not expert.uses_inference_path()  # trainable parameters: the training path
    expert.requires_grad_(False)
    assert not expert.uses_inference_path()  # autograd on: the training path


def test_vapr_inference_equals_its_training_forward(data):
    # catches: Φ's split first layer with the wrong columns (w instead of w_dir, origin and
    # direction swapped), a missing w2D residual, the time channel without t, wrong blending
    experts = [make("stg", data), make("ex4dgs", data), make("ed3dgs", data)]
    pool = ExpertPool(experts, ["stg", "ex4dgs", "ed3dgs"], data, cache_mb=0)
    router = build_router("vapr", pool, router_config("vapr", "tiny", {"init_w_time": 0.7}))
    g = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for p in router.parameters():
            p.add_(0.5 * torch.randn(p.shape, generator=g))
        for layer in (router.phi[2], router.phi[4]):  # Φ's units alive: its output varies per pixel
            layer.weight.abs_()
        x = torch.randn(1000, 8, generator=g)
        assert router.phi(x).std() > 0.05
    for cam, frame in ((0, 1), (2, 5)):
        with torch.no_grad():
            ref = router.train()(pool, cam, frame, temperature=0.5)
            fast = router.eval()(pool, cam, frame, temperature=0.5)
        for what in ("image", "gates", "depth"):
            a, b = getattr(fast, what), getattr(ref, what)
            assert a.shape == b.shape
            diff = (a - b).abs().max().item()
            assert diff <= 1e-5, f"{what} differs by {diff:.3g}"
    with torch.no_grad():
        router.w[0].add_(1.0)  # the cached channels must follow
        ref = router.train()(pool, 0, 1, temperature=0.5)
        fast = router.eval()(pool, 0, 1, temperature=0.5)
    assert (fast.gates - ref.gates).abs().max().item() <= 1e-5
