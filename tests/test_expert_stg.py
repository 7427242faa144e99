"""STG: temporal opacity, polynomial motion, rotation, feature decoder, error-guided sampling,
densification alignment, persistence and gradients."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from gsplat.strategy import ops

from moegs_bench.data.init import InitData
from moegs_bench.data.load import load_scene
from moegs_bench.experts.registry import expert_config, get_expert
from moegs_bench.experts.stg import (
    STGExpert,
    decode_features,
    most_isolated,
    nearest_other_distance,
    pixel_rays,
    polynomial_position,
    polynomial_velocity,
    resolve_dataset_defaults,
    rotation_at,
    select_init_points,
    temporal_opacity,
)
from moegs_bench.experts.views import render_expert_views
from moegs_bench.render.backend import render
from moegs_bench.train.loop import StepContext, make_optimizers, train_expert

CPU = torch.device("cpu")
MODES = ("sh", "rgb", "features")


@pytest.fixture(scope="module")
def data(tiny_scene_dir):
    return load_scene(tiny_scene_dir, CPU)


def make(data, color="sh", points=300, **over):
    cfg = expert_config("stg", "tiny", {"color": color, "max_init_points": points, **over})
    expert = STGExpert.from_scene(data, cfg, torch.Generator().manual_seed(0))
    expert.active_sh_degree = cfg.sh_degree
    return expert


def randomise(expert, seed=0):
    """Non-trivial motion, rotation speed and time scales (as after some training)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name in ("motion", "omega"):
            p = expert.params[name]
            p.copy_(0.3 * torch.randn(p.shape, generator=g))
        expert.params["time_scale"].uniform_(-1.5, 0.0, generator=g)


def test_registered_with_presets():
    cls = get_expert("stg")
    assert cls is STGExpert and {"paper", "fast", "small", "tiny"} <= set(cls.presets)
    cfg = expert_config("stg", "paper")
    assert cfg.train.batch_size == 2 and cfg.train.same_time
    d = cfg.train.densify
    assert (d.start, d.stop, d.every, d.grad_threshold, d.reset_every) == (500, 9000, 100, 2e-4, 3000)
    assert cfg.error_sampling.start == 1600


def test_temporal_opacity_peak_and_width():
    o = torch.tensor([0.3, -1.0, 2.0])
    mu = torch.tensor([0.2, 0.5, 0.7])
    s = torch.tensor([0.0, -1.0, 2.0])
    peak = temporal_opacity(o, mu, s, mu)
    assert torch.allclose(peak, torch.sigmoid(o))
    for sign in (-1.0, 1.0):
        edge = temporal_opacity(o, mu, s, mu + sign * torch.exp(s))
        assert torch.allclose(edge, peak * math.exp(-1.0), rtol=1e-5)
    # strictly below the peak away from the centre
    assert (temporal_opacity(o, mu, s, mu + 0.05) < peak).all()


def test_polynomial_motion_and_velocity():
    g = torch.Generator().manual_seed(1)
    x, m = torch.randn(5, 3, generator=g, dtype=torch.float64), torch.randn(5, 9, generator=g, dtype=torch.float64)
    delta = torch.rand(5, generator=g, dtype=torch.float64) - 0.5
    v, a, j = m[:, :3], m[:, 3:6], m[:, 6:]
    d = delta[:, None]
    assert torch.allclose(polynomial_position(x, m, delta), x + v * d + a * d**2 + j * d**3)
    h = 1e-5
    fd = (polynomial_position(x, m, delta + h) - polynomial_position(x, m, delta - h)) / (2 * h)
    assert torch.allclose(fd, polynomial_velocity(m, delta), atol=1e-8)
    assert torch.allclose(polynomial_position(x, m, torch.zeros(5, dtype=torch.float64)), x)


def test_expert_positions_follow_the_polynomial(data):
    expert = make(data)
    randomise(expert)
    p = expert.params
    t, h = 0.4, 1e-3
    fd = (expert.gaussians_at(t + h).means - expert.gaussians_at(t - h).means) / (2 * h)
    assert torch.allclose(fd, polynomial_velocity(p["motion"], t - p["time_center"]).detach(), atol=2e-3)
    traj = expert.trajectories(torch.tensor([0.0, t]), ids=torch.tensor([3, 7]))
    assert traj.shape == (2, 2, 3)
    assert torch.allclose(traj[1], expert.gaussians_at(t).means[[3, 7]].detach())


def test_rotation_is_normalised(data):
    q = torch.randn(6, 4)
    r = rotation_at(q, torch.randn(6, 4), torch.rand(6))
    assert torch.allclose(r.norm(dim=-1), torch.ones(6), atol=1e-6)
    expert = make(data)
    randomise(expert)
    quats = expert.gaussians_at(0.9).quats
    assert torch.allclose(quats.norm(dim=-1), torch.ones(len(quats)), atol=1e-5)


def test_init_from_time_tagged_points(data):
    expert = make(data, points=0)
    pts = data.scene.load_points("merged")
    assert expert.num_gaussians == len(pts["xyz"])
    assert torch.equal(torch.sort(expert.params["time_center"].detach()).values,
                       torch.sort(torch.as_tensor(pts["time"])).values)
    assert torch.all(expert.params["time_scale"] == -1.0)  # the tiny preset's s_t
    assert torch.all(expert.params["motion"] == 0) and torch.all(expert.params["omega"] == 0)


def hand_made_points() -> dict[str, np.ndarray]:
    """Three frames (2, 3, 5) where the original's rule, the distance to the first frame and a
    pooled fraction all keep different points.
    frame 2: a 3x2 grid of spacing 1 (the first frame: all kept).
    frame 3: four points on the x axis at 0, 1, 10, 30 (nearest-neighbour distances 1, 1, 9, 20;
      close to frame 2) and five points 0.01 apart at x = 100 (far from frame 2, not isolated
      within frame 3). int(9 * 0.25) = 2 keep: x = 30 and x = 10.
    frame 5: four points on the y axis at 0, 1000, 3000, 6000 (distances 1000, 1000, 2000, 3000):
      int(4 * 0.25) = 1 keeps y = 6000."""
    grid = np.array([[i, j, 0.0] for i in range(3) for j in range(2)])
    line = np.array([[x, 0.0, 0.0] for x in (0.0, 1.0, 10.0, 30.0)])
    cluster = np.array([[100.0 + 0.01 * i, 0.0, 0.0] for i in range(5)])
    spread = np.array([[0.0, y, 0.0] for y in (0.0, 1000.0, 3000.0, 6000.0)])
    xyz = np.concatenate([grid, line, cluster, spread]).astype(np.float32)
    frame = np.array([2] * 6 + [3] * 9 + [5] * 4, dtype=np.int32)
    return {"xyz": xyz, "rgb": np.zeros((len(xyz), 3), np.uint8), "time": frame / 10.0, "frame": frame}


def test_frame0_isolated_rule_is_per_frame_nearest_neighbour():
    # catches: isolation measured as the distance to the first frame (would keep the x = 100
    # cluster), one fraction pooled over all later frames (would keep frame 5's three farthest),
    # ceil instead of int (3 from frame 3), frame 0 taken literally instead of the first frame
    pts = hand_made_points()
    out = select_init_points(pts, "frame0_isolated", 0.25)
    assert (out["frame"] == 2).sum() == 6
    assert sorted(out["xyz"][out["frame"] == 3][:, 0].tolist()) == [10.0, 30.0]
    assert out["xyz"][out["frame"] == 5].tolist() == [[0.0, 6000.0, 0.0]]
    kept = [0, 1, 2, 3, 4, 5, 8, 9, 18]  # rows of every array, in input order
    assert all(np.array_equal(out[k], pts[k][kept]) for k in pts)
    assert len(select_init_points(pts, "all", 0.25)["xyz"]) == len(pts["xyz"])


def test_isolated_compat_reproduces_the_original_threshold():
    # the original keeps d > sorted(d)[-k]: k - 1 points, and for k = 0 all but the closest.
    # catches: compat equal to the clean rule, or the clean rule keeping k - 1 / all for k = 0
    dist = torch.tensor([1.0, 1.0, 9.0, 20.0])
    assert most_isolated(dist, 0.5).tolist() == [False, False, True, True]  # k = 2
    assert most_isolated(dist, 0.5, compat=True).tolist() == [False, False, False, True]
    few = torch.tensor([2.0, 1.0, 3.0])  # k = int(0.75) = 0
    assert not most_isolated(few, 0.25).any()
    assert most_isolated(few, 0.25, compat=True).tolist() == [True, False, True]
    out = select_init_points(hand_made_points(), "frame0_isolated", 0.25, compat=True)
    assert out["xyz"][out["frame"] == 3][:, 0].tolist() == [30.0] and (out["frame"] == 5).sum() == 0
    assert torch.equal(nearest_other_distance(torch.tensor([[0.0, 0, 0], [3.0, 4, 0], [3.0, 4, 1]])),
                       torch.tensor([5.0, 1.0, 1.0]))


def init_data(dataset: str, pts: dict[str, np.ndarray]) -> InitData:
    return InitData(dataset=dataset, num_frames=6, num_cameras=2, train_cameras=torch.tensor([0, 1]),
                    extent=1.0, device=CPU, point_sets=frozenset({"merged"}), _load_points=lambda which: pts)


def test_dataset_defaults_follow_the_original_configs():
    # catches: the old defaults (scale lr 5e-3 on N3V, Technicolor s_t = +2 without train.py's
    # sign flip, the N3V rule for STG full, no rule for Technicolor full)
    cfg = expert_config("stg", "paper")
    assert cfg.lr.scales is None and cfg.time_scale_init is None and cfg.init_rule == "auto"
    expected = {("n3v", "sh"): (1.5e-3, 0.0, "frame0_isolated"), ("n3v", "rgb"): (1.5e-3, 0.0, "frame0_isolated"),
                ("n3v", "features"): (1.5e-3, 0.0, "all"), ("technicolor", "sh"): (5e-3, -2.0, "all"),
                ("technicolor", "rgb"): (5e-3, -2.0, "all"), ("technicolor", "features"): (5e-3, -2.0, "frame0_isolated"),
                ("synthetic", "sh"): (5e-3, 0.0, "all")}
    for (dataset, color), (scales, s_t, rule) in expected.items():
        r = resolve_dataset_defaults(expert_config("stg", "paper", {"color": color}), dataset)
        assert (r.lr.scales, r.time_scale_init, r.init_rule) == (scales, s_t, rule), (dataset, color)
    kept = resolve_dataset_defaults(expert_config("stg", "paper", {"lr": {"scales": 3e-3}, "init_rule": "all"}), "n3v")
    assert kept.lr.scales == 3e-3 and kept.init_rule == "all"  # a per-scene override wins
    for preset in ("fast", "small", "tiny"):  # measured presets: synthetic scenes keep 5e-3
        assert resolve_dataset_defaults(expert_config("stg", preset), "synthetic").lr.scales == 5e-3


def test_paper_expert_on_n3v_and_technicolor_inits():
    # catches: from_init ignoring the resolved rule, scale lr or s_t, or not saving them
    pts = hand_made_points()
    n3v = STGExpert.from_init(init_data("n3v", pts), expert_config("stg", "paper"))
    assert n3v.num_gaussians == 6 + 2 + 1
    assert n3v.learning_rates(0, 1.0)["scales"] == 1.5e-3 and n3v.config.lr.scales == 1.5e-3
    assert n3v.config.init_rule == "frame0_isolated" and torch.all(n3v.params["time_scale"] == 0.0)
    techni = STGExpert.from_init(init_data("technicolor", pts), expert_config("stg", "paper"))
    assert techni.num_gaussians == len(pts["xyz"])
    assert techni.learning_rates(0, 1.0)["scales"] == 5e-3
    assert torch.all(techni.params["time_scale"] == -2.0)  # temporal width e^-2 of the segment


def test_features_decode_range_and_gradients(data):
    expert = make(data, color="features")
    viewmats, Ks = data.camera_batch(torch.tensor([1, 2]))
    g = expert.gaussians_at(0.25)
    assert g.features.shape == (expert.num_gaussians, 9)
    out = render(g, viewmats, Ks, data.width, data.height, background=torch.zeros(3))
    rgb = expert.decode(out.rgb, viewmats, Ks, data.times[2])
    assert rgb.shape == (2, data.height, data.width, 3)
    rgb.mean().backward()
    for name in ("decoder_w1", "decoder_w2"):
        grad = expert.shared_params()[name].grad
        assert grad is not None and grad.abs().sum() > 0, name
    # decode_features is sigmoid(base + MLP): zero weights give sigmoid(base)
    feats = torch.randn(1, 2, 3, 9)
    rays = pixel_rays(viewmats[:1], Ks[:1], 3, 2)
    assert rays.shape == (1, 2, 3, 6)
    assert torch.allclose(rays[..., 3:].norm(dim=-1), torch.ones(1, 2, 3), atol=1e-5)
    zero = decode_features(feats, rays, torch.zeros(6, 12), torch.zeros(3, 6))
    assert torch.allclose(zero, torch.sigmoid(feats[..., :3]))
    # the MLP input is [specular, time feature, rays] in that order (catches a swapped concat
    # or the base features fed to the MLP)
    w1, w2 = torch.randn(6, 12), torch.randn(3, 6)
    x = torch.cat([feats[..., 3:6], feats[..., 6:9], rays], -1)
    hidden = torch.einsum("chwi,oi->chwo", x, w1).clamp_min(0)
    want = torch.sigmoid(feats[..., :3] + torch.einsum("chwi,oi->chwo", hidden, w2))
    assert torch.allclose(decode_features(feats, rays, w1, w2), want, atol=1e-6)


@pytest.mark.parametrize("color", MODES)
def test_gradients_reach_every_parameter(data, color):
    expert = make(data, color=color, points=200)
    randomise(expert)
    cams, frames = torch.tensor([1, 2]), torch.tensor([3, 3])
    pred, _ = render_expert_views(expert, data, cams, frames, torch.zeros(3))
    gt = data.image_float("train", torch.tensor([0, 1]))
    (pred - gt).abs().mean().backward()
    tensors = dict(expert.params.items()) | expert.shared_params()
    for name, p in tensors.items():
        assert p.grad is not None and p.grad.abs().sum() > 0, name
    assert set(expert.learning_rates(0, data.extent)) == set(tensors)


def test_densification_keeps_rows_aligned(data):
    expert = make(data, color="features", points=100)
    randomise(expert)
    per_opt, _ = make_optimizers(expert)
    n = expert.num_gaussians
    before = {k: v.detach().clone() for k, v in expert.params.items()}
    mask = torch.zeros(n, dtype=torch.bool)
    mask[[2, 5]] = True
    ops.duplicate(expert.params, per_opt, {}, mask)
    for k, v in expert.params.items():
        assert v.shape[0] == n + 2, k
        assert torch.equal(v[n:].detach(), before[k][[2, 5]]), k
    ops.split(expert.params, per_opt, {}, torch.cat([mask, torch.zeros(2, dtype=torch.bool)]))
    m = expert.num_gaussians
    assert m == n + 4
    for k in ("motion", "omega", "time_center", "time_scale", "colors", "features_t"):
        assert expert.params[k].shape[0] == m
        assert torch.equal(expert.params[k][-2:].detach(), before[k][[2, 5]]), k  # split copies
    keep = torch.ones(m, dtype=torch.bool)
    keep[0] = False
    ops.remove(expert.params, per_opt, {}, keep.logical_not())
    assert all(v.shape[0] == m - 1 for v in expert.params.values())
    assert len(expert.gaussians_at(0.3)) == m - 1


def test_training_with_densification_and_error_sampling(data):
    expert = make(data, points=300, train={"iterations": 12, "checkpoint_every": 0,
                                           "densify": {"start": 4, "stop": 11, "every": 4, "grad_threshold": 1e-6}},
                  error_sampling={"start": 5, "every": 5, "stop": 11, "threshold": 0.0, "max_rays": 8})
    n0 = expert.num_gaussians
    result = train_expert(expert, data, seed=0)
    assert result.steps == 12 and expert.num_gaussians > n0
    n = expert.num_gaussians
    assert all(p.shape[0] == n for p in expert.params.values())
    assert torch.isfinite(expert.gaussians_at(0.5).means).all()


def test_error_guided_addition_adds_aligned_rows(data):
    expert = make(data, color="rgb", points=300,
                  error_sampling={"start": 0, "every": 1, "threshold": 0.0, "max_rays": 5, "per_ray": 2})
    per_opt, shared_opt = make_optimizers(expert)
    idx = torch.tensor([0, 8])  # camera 1 and camera 2 at frame 0
    views = data.splits["train"]
    cams, frames = views.cams[idx], views.frames[idx]
    assert frames[0] == frames[1]
    pred, outputs = render_expert_views(expert, data, cams, frames, torch.zeros(3))
    pred.mean().backward()
    for opt in per_opt.values():
        opt.step()
    n = expert.num_gaussians
    gt = data.image_float("train", idx)
    ctx = StepContext(data, per_opt, shared_opt, None, {}, outputs, pred.detach(), gt, cams, frames)
    expert.after_step(0, ctx)
    assert expert.num_gaussians == n + 2 * 5 * 2
    for name, p in expert.params.items():
        assert p.shape[0] == n + 20, name
        state = per_opt[name].state[p]
        assert state["exp_avg"].shape == p.shape and torch.all(state["exp_avg"][n:] == 0), name
    t = data.times[int(frames[0])]
    assert torch.all(expert.params["time_center"][n:] == t)
    g = expert.gaussians_at(t)
    assert torch.allclose(g.means[n:], expert.params["means"][n:])  # Δ = 0: at their sampled place
    # the new points lie on the rays of their pixels: in front of camera 1 or 2
    cam_z = torch.einsum("ij,nj->ni", data.viewmats[1, :3, :3], g.means[n:n + 10].detach()) + data.viewmats[1, :3, 3]
    assert (cam_z[:, 2] > 0).all()
    # colours come from the ground truth pixels
    assert (expert.params["colors"][n:] >= 0).all() and (expert.params["colors"][n:] <= 1).all()


@pytest.mark.parametrize("color", MODES)
def test_save_load_round_trip(data, tmp_path, color):
    expert = make(data, color=color, points=150)
    randomise(expert)
    path = expert.save(tmp_path / "stg.pt")
    loaded = get_expert("stg").load(path, CPU)
    for t in (0.0, 0.6):
        a, b = expert.gaussians_at(t), loaded.gaussians_at(t)
        for f in ("means", "quats", "scales", "opacities"):
            assert torch.equal(getattr(a, f), getattr(b, f)), f
        if color == "sh":
            assert torch.equal(a.sh, b.sh) and a.sh_degree == b.sh_degree
        else:
            assert torch.equal(a.features, b.features)
    for k, v in expert.shared_params().items():
        assert torch.equal(v, loaded.shared_params()[k]), k
