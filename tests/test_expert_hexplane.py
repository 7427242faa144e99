"""The 4DGaussians expert (`4dgs`): HexPlane sampling, regularisers, stages, densification,
persistence and gradients, on tiny sizes."""

from __future__ import annotations

import pytest
import torch
from gsplat.strategy.ops import duplicate, remove, split

from moegs_bench.data.load import load_scene
from moegs_bench.errors import ConfigError
from moegs_bench.experts.hexplane import (
    PLANES,
    FourDGSExpert,
    HexPlaneField,
    plane_smoothness,
    plane_tv,
    sample_plane,
    stack_by_shape,
    time_planes_l1,
)
from moegs_bench.experts.registry import expert_config, get_expert
from moegs_bench.experts.views import render_expert_views
from moegs_bench.render.backend import render
from moegs_bench.train.loop import make_optimizers, merged_info, train_expert

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def data(tiny_scene_dir):
    return load_scene(tiny_scene_dir, CPU)


def make(data, points=400, **over) -> FourDGSExpert:
    cfg = expert_config("4dgs", "tiny", {"max_init_points": points, **over})
    return FourDGSExpert.from_scene(data, cfg, torch.Generator().manual_seed(0))


def random_field(res=(4, 5, 6, 7), multires=(1, 2), features=3, seed=0) -> HexPlaneField:
    field = HexPlaneField(res, multires, features, generator=torch.Generator().manual_seed(seed))
    g = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for p in field.planes.values():  # time planes too, so every plane matters
            p.copy_(torch.rand(p.shape, generator=g) + 0.5)
    return field


def node_coord(i: int, n: int) -> float:
    return -1.0 + 2.0 * i / (n - 1)  # align_corners=True: node i of n sits here


# -- HexPlane sampling ------------------------------------------------------------------------
def test_plane_layout_and_initialisation():
    field = HexPlaneField((4, 5, 6, 7), (1, 2), 3, generator=torch.Generator().manual_seed(0))
    assert field.out_dim == 6
    assert field.planes["l0_xy"].shape == (1, 3, 5, 4)  # [1, F, R_y, R_x]
    assert field.planes["l1_xz"].shape == (1, 3, 12, 8)  # spatial axes doubled
    assert field.planes["l1_zt"].shape == (1, 3, 7, 12)  # time axis not scaled
    for k, p in field.planes.items():
        if k.endswith("t"):
            assert torch.all(p == 1.0), k
        else:
            assert p.min() >= 0.1 and p.max() <= 0.5, k


def test_sample_plane_at_nodes_equals_node_values():
    plane = torch.rand(1, 2, 5, 4, generator=torch.Generator().manual_seed(0))
    for i in range(4):
        for j in range(5):
            uv = torch.tensor([[node_coord(i, 4), node_coord(j, 5)]])
            assert torch.allclose(sample_plane(plane, uv)[0], plane[0, :, j, i], atol=1e-6)
    # halfway between two nodes along u: their mean (bilinear)
    uv = torch.tensor([[0.5 * (node_coord(1, 4) + node_coord(2, 4)), node_coord(3, 5)]])
    assert torch.allclose(sample_plane(plane, uv)[0], 0.5 * (plane[0, :, 3, 1] + plane[0, :, 3, 2]), atol=1e-6)
    # border padding: outside the grid clamps to the edge
    assert torch.allclose(sample_plane(plane, torch.tensor([[-3.0, 7.0]]))[0], plane[0, :, 4, 0], atol=1e-6)


def test_field_at_grid_node_is_product_of_node_values():
    res = (4, 5, 6, 7)
    field = random_field(res)
    idx = (2, 1, 3, 5)  # node indices on the level-0 grid (x, y, z, t)
    coords = torch.tensor([[node_coord(i, n) for i, n in zip(idx, res, strict=True)]])
    out = field(coords)[0]
    for level, m in enumerate((1, 2)):
        sizes = [r * m for r in res[:3]] + [res[3]]
        # the level-0 node is a node of the finer level too (index scaled by (n*m-1)/(n-1))
        nodes = [round(i * (s - 1) / (n - 1)) if a < 3 else i
                 for a, (i, s, n) in enumerate(zip(idx, sizes, res, strict=True))]
        exact = [abs((i * (s - 1) / (n - 1)) - round(i * (s - 1) / (n - 1))) < 1e-9 if a < 3 else True
                 for a, (i, s, n) in enumerate(zip(idx, sizes, res, strict=True))]
        if not all(exact):
            continue
        expected = torch.ones(3)
        for name, a, b in PLANES:
            expected = expected * field.planes[f"l{level}_{name}"][0, :, nodes[b], nodes[a]]
        assert torch.allclose(out[3 * level:3 * level + 3], expected, rtol=1e-5), level


def test_field_level0_node_product_direct():
    # a single level: any node of the grid gives exactly the product of the six node values
    res = (3, 4, 5, 6)
    field = random_field(res, multires=(1,), features=2)
    for idx in [(0, 0, 0, 0), (2, 3, 4, 5), (1, 2, 3, 1)]:
        coords = torch.tensor([[node_coord(i, n) for i, n in zip(idx, res, strict=True)]])
        expected = torch.ones(2)
        for name, a, b in PLANES:
            expected = expected * field.planes[f"l0_{name}"][0, :, idx[b], idx[a]]
        assert torch.allclose(field(coords)[0], expected, rtol=1e-5), idx


def test_field_is_continuous():
    field = random_field((6, 6, 6, 8))
    g = torch.Generator().manual_seed(3)
    x = torch.rand(200, 4, generator=g) * 1.8 - 0.9
    base = field(x)
    for eps in (1e-2, 1e-3, 1e-4):
        moved = field(x + eps * torch.randn(200, 4, generator=g))
        # Lipschitz: the change shrinks with the step
        assert (moved - base).abs().max() < 200 * eps, eps


@pytest.mark.parametrize("res", [(6, 5, 7, 8), (6, 6, 6, 8)])  # per-plane path; stacked planes
def test_features_at_times_equal_forward_values_and_gradients(res):
    field = random_field(res)
    g = torch.Generator().manual_seed(4)
    xyz = torch.rand(300, 3, generator=g) * 2.2 - 1.1  # some outside [-1,1]: border clamp
    times = torch.tensor([-1.0, -0.37, 0.5, 1.0])
    xyz_a = xyz.clone().requires_grad_(True)
    batched = field.features_at_times(xyz_a, times)
    assert batched.shape == (4, 300, field.out_dim)
    xyz_b = xyz.clone().requires_grad_(True)
    direct = [field(torch.cat([xyz_b, t.expand(300, 1)], 1)) for t in times]
    for a, b in zip(batched, direct, strict=True):
        assert torch.allclose(a, b, atol=1e-6)
    w = torch.randn(300, field.out_dim, generator=g)
    grads_a = torch.autograd.grad(sum((f * w).sum() for f in batched), [xyz_a, *field.parameters()])
    grads_b = torch.autograd.grad(sum((f * w).sum() for f in direct), [xyz_b, *field.parameters()])
    for a, b in zip(grads_a, grads_b, strict=True):
        assert torch.allclose(a, b, atol=1e-4, rtol=1e-4)


def deforming(data, seed: int) -> FourDGSExpert:
    """An expert in its fine stage whose time planes vary, so that the Gaussians move."""
    expert = make(data, coarse_iterations=0)
    expert.on_step(5)
    with torch.no_grad():
        for tp in expert.field.time_planes():
            tp.add_(0.3 * torch.randn(tp.shape, generator=torch.Generator().manual_seed(seed)))
    return expert


def test_gaussians_at_times_equal_one_time_queries(data):
    expert = deforming(data, seed=0)
    many = expert.gaussians_at_times([0.1, 0.6])
    for t, g in zip([0.1, 0.6], many, strict=True):
        one = expert.gaussians_at(t)
        d = expert.deltas(expert.params["means"], t)  # the reference path (forward per time)
        assert torch.allclose(g.means, one.means) and torch.allclose(g.sh, one.sh)
        assert torch.allclose(g.means, expert.params["means"] + d["dx"], atol=1e-5)


# -- regularisers -----------------------------------------------------------------------------
def test_regularisers_zero_on_constant_planes_positive_otherwise():
    const = torch.full((1, 2, 5, 6), 0.3)
    ones = torch.ones(1, 2, 7, 6)
    assert plane_tv(const) == 0 and plane_smoothness(const) == 0 and time_planes_l1(ones) == 0
    bumpy = const.clone()
    bumpy[0, 0, 2, 3] += 0.1
    assert plane_tv(bumpy) > 0 and plane_smoothness(bumpy) > 0 and time_planes_l1(bumpy) > 0
    # a linear ramp along time has zero second difference but non-zero TV
    ramp = torch.linspace(0, 1, 7).view(1, 1, 7, 1).expand(1, 2, 7, 6)
    assert plane_smoothness(ramp) < 1e-12 and plane_tv(ramp) > 0


def test_regularisers_of_a_stack_are_sums_over_its_planes():
    g = torch.Generator().manual_seed(5)
    planes = [torch.rand(1, 2, 5, 6, generator=g), torch.rand(1, 2, 7, 6, generator=g),
              torch.rand(1, 2, 5, 6, generator=g)]
    stacks = stack_by_shape(planes)
    assert [tuple(s.shape) for s in stacks] == [(2, 2, 5, 6), (1, 2, 7, 6)]
    for fn in (plane_tv, plane_smoothness, time_planes_l1):
        torch.testing.assert_close(sum(fn(s) for s in stacks), sum(fn(p) for p in planes))


@pytest.mark.parametrize("mode", ["tv", "second_difference"])
def test_expert_regularisation_zero_at_constant_and_only_in_fine_stage(data, mode):
    expert = make(data, plane_tv_mode=mode, coarse_iterations=5)
    with torch.no_grad():
        for p in expert.field.spatial_planes():
            p.fill_(0.3)
    assert expert.regularisation(0) is None  # coarse: no grid terms
    assert float(expert.regularisation(5).detach()) == 0.0  # spatial constant, time planes = 1
    with torch.no_grad():
        expert.field.planes["l0_xt"][0, 0, 3, 2] += 0.5
        expert.field.planes["l1_xy"][0, 0, 4, 4] += 0.5
    assert float(expert.regularisation(5).detach()) > 0


# -- stages, time mapping ---------------------------------------------------------------------
def test_coarse_stage_undeformed_fine_stage_deforms(data):
    expert = make(data, coarse_iterations=10)
    p = expert.params
    expert.on_step(9)
    g = expert.gaussians_at(0.5)
    assert torch.equal(g.means, p["means"]) and torch.equal(g.quats, p["quats"])
    assert torch.equal(g.scales, torch.exp(p["scales"]))
    expert.on_step(10)
    g = expert.gaussians_at(0.5)
    assert not torch.allclose(g.means, p["means"])
    assert not torch.allclose(g.opacities, torch.sigmoid(p["opacities"]))
    assert not torch.allclose(g.sh, torch.cat([p["sh0"], p["shN"]], 1))
    # time planes at 1: no dependence on t yet; perturbed time planes make the motion time-varying
    assert torch.allclose(expert.gaussians_at(0.1).means, expert.gaussians_at(0.8).means)
    with torch.no_grad():
        for tp in expert.field.time_planes():
            tp.add_(0.3 * torch.randn(tp.shape, generator=torch.Generator().manual_seed(0)))
    assert not torch.allclose(expert.gaussians_at(0.1).means, expert.gaussians_at(0.8).means)


def test_time_mapping_whole_axis_and_half_axis_compat(data):
    whole = make(data)
    half = make(data, compat_half_time_axis=True)
    for t in (0.0, 0.25, 0.875):
        assert float(whole.time_coordinate(t)) == pytest.approx(2 * t - 1)
        assert float(half.time_coordinate(t)) == pytest.approx(t)
    # the same field: the half-axis expert at t reads what the whole-axis one reads at (t+1)/2
    with torch.no_grad():
        for tp in whole.field.time_planes():
            tp.add_(0.3 * torch.randn(tp.shape, generator=torch.Generator().manual_seed(1)))
    half.load_state_dict(whole.state_dict())
    whole.on_step(10**6)
    half.on_step(10**6)
    for t in (0.0, 0.3, 0.9):
        assert torch.allclose(half.gaussians_at(t).means, whole.gaussians_at((t + 1) / 2).means, atol=1e-5)


def test_init_points_aabb_and_config_checks(data):
    expert = make(data, points=300)
    xyz = expert.params["means"]
    assert xyz.shape == (300, 3)
    assert torch.equal(expert.aabb[0], xyz.min(0).values) and torch.equal(expert.aabb[1], xyz.max(0).values)
    assert expert.params["shN"].shape[1] == 3  # sh_degree 1 in `tiny`
    assert expert.mlp.heads.sizes["dsh"] == 4 * 3  # dSH matches the SH degree
    with pytest.raises(ConfigError, match="grid_resolution"):
        make(data, grid_resolution=[8, 8, 8])
    with pytest.raises(ConfigError, match="plane_tv_mode"):
        make(data, plane_tv_mode="l2")
    with pytest.raises(ConfigError, match="4dgs.mlp_precision"):
        make(data, mlp_precision="half")


def test_learning_rates_cover_every_parameter_and_scale_with_extent(data):
    expert = make(data, coarse_iterations=100, stage_local_schedules=True)
    names = set(expert.params) | set(expert.shared_params())
    lr1, lr2 = expert.learning_rates(0, 1.0), expert.learning_rates(0, 2.0)
    assert set(lr1) == names
    assert lr1["grid_l0_xy"] == pytest.approx(expert.config.deform_lr.grid_init)
    assert lr1["mlp_trunk_weight"] == pytest.approx(expert.config.deform_lr.mlp_init)
    assert lr2["means"] == pytest.approx(2 * lr1["means"]) and lr2["grid_l1_zt"] == pytest.approx(2 * lr1["grid_l1_zt"])
    assert lr2["sh0"] == lr1["sh0"]
    # stage-local: the fine stage restarts the decay
    assert expert.learning_rates(100, 1.0)["means"] == pytest.approx(lr1["means"])
    assert expert.learning_rates(99, 1.0)["means"] < lr1["means"]


# -- densification, persistence, gradients ---------------------------------------------------
def test_strategy_ops_keep_per_gaussian_tensors_aligned(data):
    expert = make(data, points=50)
    per, _ = make_optimizers(expert)
    params = expert.params
    before = {k: v.detach().clone() for k, v in params.items()}
    state = {"grad2d": torch.zeros(50), "count": torch.zeros(50)}
    mask = torch.zeros(50, dtype=torch.bool)
    mask[[3, 7]] = True
    duplicate(params, per, state, mask)
    assert all(v.shape[0] == 52 for v in params.values())
    for k, v in params.items():
        assert torch.equal(v[50:], before[k][[3, 7]]), k  # copied rows, every tensor
    split(params, per, state, torch.cat([mask, torch.zeros(2, dtype=torch.bool)]))
    assert all(v.shape[0] == 54 for v in params.values())  # 2 rows replaced by 2 children each
    for k in ("sh0", "shN", "quats"):
        assert torch.equal(params[k][50:], before[k][[3, 7, 3, 7]]), k  # children copy the parent
    remove(params, per, state, torch.arange(54) < 10)
    n = params["means"].shape[0]
    assert all(v.shape[0] == n for v in params.values()) and n == 44
    expert.on_step(10**6)
    assert len(expert.gaussians_at(0.3)) == n


def test_strategy_caps_growth(data):
    expert = make(data, points=60, max_gaussians=60)
    strategy = expert.make_strategy()
    per, _ = make_optimizers(expert)
    state = {"grad2d": torch.full((60,), 1.0), "count": torch.ones(60), "scene_scale": 1.0}
    assert strategy._grow_gs(expert.params, per, state, 1000) == (0, 0)
    strategy.max_gaussians = 1000
    n_dupli, n_split = strategy._grow_gs(expert.params, per, state, 1000)
    assert n_dupli + n_split > 0 and expert.num_gaussians > 60


def test_training_densifies_aligned_and_reaches_fine_stage(data):
    # one densification round in each stage (windows restart at the fine stage)
    expert = make(data, points=300, coarse_iterations=10,
                  train={"iterations": 22, "densify": {"start": 5, "stop": 12, "every": 8, "grad_threshold": 2e-5}})
    n0 = expert.num_gaussians
    planes0 = {k: v.detach().clone() for k, v in expert.field.planes.items()}
    result = train_expert(expert, data, seed=0)
    assert result.steps == 22 and all(torch.isfinite(torch.tensor(result.losses)))
    assert expert.fine and expert.num_gaussians != n0
    n = expert.num_gaussians
    assert all(p.shape[0] == n for p in expert.params.values())
    assert any(not torch.equal(v, planes0[k]) for k, v in expert.field.planes.items())  # field trained


def test_save_load_round_trip(data, tmp_path):
    expert = make(data, points=200)
    expert.on_step(10**6)
    with torch.no_grad():
        for tp in expert.field.time_planes():
            tp.mul_(1.1)
        expert.params["means"].add_(0.01)
    path = expert.save(tmp_path / "model.pt")
    loaded = get_expert("4dgs").load(path, CPU)
    assert loaded.fine and torch.equal(loaded.aabb, expert.aabb)
    for t in (0.0, 0.6):
        a, b = expert.gaussians_at(t), loaded.gaussians_at(t)
        for f in ("means", "quats", "scales", "opacities", "sh"):
            assert torch.equal(getattr(a, f), getattr(b, f)), f
        assert a.sh_degree == b.sh_degree


def test_gradients_reach_every_parameter(data):
    expert = make(data, points=100)
    expert.on_step(10**6)
    with torch.no_grad():
        for tp in expert.field.time_planes():
            tp.add_(0.1 * torch.randn(tp.shape, generator=torch.Generator().manual_seed(2)))
    g = expert.gaussians_at(0.4)
    loss = (g.means.square().sum() + g.quats.sum() + g.scales.sum() + g.opacities.sum() + g.sh.sum()
            + expert.regularisation(10**6))
    loss.backward()
    everything = {**dict(expert.params), **expert.shared_params()}
    for name, p in everything.items():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_trajectories_match_gaussians_at(data):
    expert = make(data, points=100)
    expert.on_step(10**6)
    times = torch.tensor([0.0, 0.5])
    ids = torch.tensor([1, 5, 7])
    tr = expert.trajectories(times, ids)
    assert tr.shape == (2, 3, 3) and not tr.requires_grad
    for i, t in enumerate(times):
        assert torch.allclose(tr[i], expert.gaussians_at(t).means[ids].detach(), atol=1e-6)
    assert expert.trajectories(times).shape == (2, 100, 3)


def test_views_at_several_times_render_in_one_batch_like_one_by_one(data):
    expert = deforming(data, seed=1)
    views = data.splits["train"]
    idx = torch.tensor([0, 5, 11])  # three views at three different frames
    assert len(set(views.frames[idx].tolist())) == 3
    pred, outputs = render_expert_views(expert, data, views.cams[idx], views.frames[idx], torch.zeros(3))
    assert len(outputs) == 1 and outputs[0].rgb.shape[:2] == (3, 1)  # one rasterisation, [B=3, C=1]
    for out in outputs:
        out.info["means2d"].retain_grad()
    pred.mean().backward()
    info = merged_info(outputs)
    assert info["means2d"].grad.shape == (3, expert.num_gaussians, 2) and info["n_cameras"] == 3
    assert info["radii"].shape == (3, expert.num_gaussians, 2)
    for j, i in enumerate(idx.tolist()):
        viewmats, Ks = data.camera_batch(views.cams[i:i + 1])
        one = render(expert.gaussians_at(data.times[int(views.frames[i])]), viewmats, Ks, data.width, data.height,
                     background=torch.zeros(3))
        torch.testing.assert_close(pred[j], one.rgb[0], rtol=1e-4, atol=1e-5)
