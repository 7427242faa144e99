"""Ex4DGS: keyframe interpolation, temporal opacity, progressive window, static->dynamic
conversion, per-row densification thresholds, persistence and training on the tiny scene."""

from __future__ import annotations

import math

import pytest
import torch
from gsplat.strategy.ops import duplicate, remove, split

from moegs_bench.experts.common import init_gaussian_tensors
from moegs_bench.experts.ex4dgs import (
    Ex4DGSConfig,
    Ex4DGSExpert,
    conversion_temporal,
    expand_temporal,
    hermite_interpolate,
    keyframe_count,
    keyframe_rotation,
    readjust_temporal,
    slerp,
    temporal_opacity,
)
from moegs_bench.experts.registry import expert_config, get_expert
from moegs_bench.train.loop import make_optimizers

CPU = torch.device("cpu")
LN2, LN10 = math.log(2.0), math.log(10.0)
# the paper preset's temporal-opacity settings, to apply at the tiny preset's scale
PAPER_TEMPORAL = {k: getattr(Ex4DGSConfig(), k)
                  for k in ("temporal_init", "temporal_min_width", "temporal_expand", "temporal_readjust_every")}
# the earlier rule, kept as an option: centres at the clip ends, a 1-frame floor, no updates
CLIP_TEMPORAL = {"temporal_init": "clip", "temporal_min_width": 1.0, "temporal_expand": False,
                 "temporal_readjust_every": 0}


def toy_expert(n=50, frames=8, seed=0, **overrides) -> Ex4DGSExpert:
    """An all-static expert on random points (no scene needed)."""
    g = torch.Generator().manual_seed(seed)
    xyz = torch.randn(n, 3, generator=g).numpy()
    rgb = (torch.rand(n, 3, generator=g) * 255).to(torch.uint8).numpy()
    cfg = expert_config("ex4dgs", "tiny", overrides)
    base = init_gaussian_tensors(xyz, rgb, cfg.sh_degree, cfg.init_opacity, CPU)
    expert = Ex4DGSExpert.from_tensors(base, frames, cfg)
    expert.active_sh_degree = cfg.sh_degree
    return expert


def make_dynamic(expert: Ex4DGSExpert, rows: torch.Tensor, seed=1) -> None:
    """Mark rows dynamic with random keyframes, rotations and temporal opacity."""
    g = torch.Generator().manual_seed(seed)
    p = expert.params
    with torch.no_grad():
        p["is_dynamic"][rows] = 1.0
        p["kf_pos"][rows] += 0.3 * torch.randn(len(rows), expert.num_keyframes, 3, generator=g)
        p["kf_rot"][rows] = torch.randn(len(rows), expert.num_keyframes, 4, generator=g)
        p["t_center"][rows] = torch.tensor([2.0, 5.0])
        p["drift"].normal_(0, 0.1, generator=g)


def tau(x: float) -> torch.Tensor:
    return torch.tensor(x, dtype=torch.float64)


# -- interpolation -----------------------------------------------------------------------------
def test_keyframe_count_covers_clip():
    assert keyframe_count(300, 10) == 31  # keyframes 0..300
    assert keyframe_count(8, 2) == 5 and keyframe_count(8, 3) == 4  # tiny scene: >= 3 keyframes
    assert keyframe_count(1, 10) == 2


def test_hermite_passes_through_keyframes_and_is_c1():
    g = torch.Generator().manual_seed(0)
    kf = torch.randn(7, 6, 3, generator=g, dtype=torch.float64)
    interval, eps = 3.0, 1e-6
    for k in range(6):
        assert torch.allclose(hermite_interpolate(kf, tau(k * interval), interval), kf[:, k], atol=1e-12)
    for k in range(1, 5):  # interior keyframes: one-sided derivatives agree (C1)
        x = k * interval
        p0 = hermite_interpolate(kf, tau(x), interval)
        left = (p0 - hermite_interpolate(kf, tau(x - eps), interval)) / eps
        right = (hermite_interpolate(kf, tau(x + eps), interval) - p0) / eps
        assert torch.allclose(left, right, atol=1e-4), k
        # and equals the Catmull-Rom tangent (per frame)
        assert torch.allclose(right, (kf[:, k + 1] - kf[:, k - 1]) / 2 / interval, atol=1e-4)
    # between keyframes it is not simply linear (a cubic through 4 points)
    mid = hermite_interpolate(kf, tau(1.5 * interval), interval)
    assert not torch.allclose(mid, (kf[:, 1] + kf[:, 2]) / 2)


def test_hermite_reproduces_linear_motion_inside():
    kf = torch.arange(5, dtype=torch.float64)[None, :, None].repeat(2, 1, 3)  # y_k = k
    for x in (0.3, 2.5, 3.0, 4.7, 7.9):  # end segments too (extrapolated neighbours)
        assert torch.allclose(hermite_interpolate(kf, tau(x), 2.0), torch.full((2, 3), x / 2, dtype=torch.float64))


def test_slerp_unit_norm_endpoints_and_near_identical():
    g = torch.Generator().manual_seed(0)
    q0 = torch.randn(64, 4, generator=g) * 3
    q1 = torch.randn(64, 4, generator=g)
    for u in torch.linspace(0, 1, 11):
        assert torch.allclose(slerp(q0, q1, u).norm(dim=-1), torch.ones(64), atol=1e-5)
    n0, n1 = torch.nn.functional.normalize(q0, dim=-1), torch.nn.functional.normalize(q1, dim=-1)
    sign = torch.sign((n0 * n1).sum(-1, keepdim=True))  # shorter arc: q1 may come back as -q1
    assert torch.allclose(slerp(q0, q1, 0.0), n0, atol=1e-5)
    assert torch.allclose(slerp(q0, q1, 1.0), sign * n1, atol=1e-4)
    # constant angular speed: the halfway rotation is equally far from both ends
    mid = slerp(q0, q1, 0.5)
    assert torch.allclose((mid * n0).sum(-1).abs(), (mid * n1).sum(-1).abs(), atol=1e-4)
    # identical and nearly identical quaternions: finite values and gradients
    a = n0.clone().requires_grad_(True)
    b = (n0 + 1e-7).clone().requires_grad_(True)
    out = slerp(a, b, 0.3)
    out.sum().backward()
    assert torch.isfinite(out).all() and torch.isfinite(a.grad).all() and torch.isfinite(b.grad).all()
    assert torch.allclose(out, n0, atol=1e-5)


def test_keyframe_rotation_hits_keyframes():
    g = torch.Generator().manual_seed(0)
    rot = torch.nn.functional.normalize(torch.randn(5, 4, 4, generator=g), dim=-1)
    for k in range(4):
        q = keyframe_rotation(rot, torch.tensor(2.0 * k), 2.0)
        assert torch.allclose((q * rot[:, k]).sum(-1).abs(), torch.ones(5), atol=1e-5)


def test_temporal_opacity_two_sided():
    centers = torch.tensor([[2.0, 5.0], [5.0, 2.0]])  # order of the centres does not matter
    widths = torch.log(torch.tensor([[1.0, 2.0], [2.0, 1.0]]))
    inside = [temporal_opacity(torch.tensor(x), centers, widths, 0.0) for x in (2.0, 3.0, 4.5, 5.0)]
    for o in inside:
        assert torch.allclose(o, torch.ones(2))
    # early side: σ 1 (row 0); late side: σ 2 (row 0)
    o = temporal_opacity(torch.tensor(1.0), centers, widths, 0.0)
    assert torch.allclose(o[0], torch.tensor(math.exp(-1.0)))
    o = temporal_opacity(torch.tensor(7.0), centers, widths, 0.0)
    assert torch.allclose(o[0], torch.tensor(math.exp(-1.0)))
    # monotone fall-off outside, min width widens it
    far = temporal_opacity(torch.tensor(9.0), centers, widths, 0.0)
    assert (far < o).all()
    assert (temporal_opacity(torch.tensor(9.0), centers, widths, 1.0) > far).all()


def test_temporal_floor_bounds_the_fall_off():
    # σ = exp(log_width) + floor >= floor, so at distance d outside the window the opacity is at
    # least exp(-(d/floor)²) however narrow the learned width. The paper floor is the original's
    # var_pad / 2.36 = 3 / 2.36 frames. Catches: a missing floor (opacity -> 0) and the old 1-frame floor
    floor = 3 / 2.36
    assert Ex4DGSConfig().temporal_min_width == floor
    centers = torch.tensor([[2.0, 5.0]]).repeat(3, 1)
    narrow = torch.tensor([[-30.0, -30.0], [-2.0, 0.5], [0.0, -5.0]])  # learned widths ~0 .. e^0.5
    for d in (floor, 2.0, 4.0):
        for tau in (2.0 - d, 5.0 + d):
            o = temporal_opacity(torch.tensor(tau), centers, narrow, floor)
            assert (o >= math.exp(-((d / floor) ** 2)) * (1 - 1e-5)).all()
    o = temporal_opacity(torch.tensor(5.0 + floor), centers[:1], narrow[:1], floor)
    assert torch.allclose(o, torch.tensor([math.exp(-1.0)]), rtol=1e-5)
    # the expert applies it to its dynamic rows (sigmoid(o) x fall-off)
    e = toy_expert(n=4, frames=8, **PAPER_TEMPORAL)
    make_dynamic(e, torch.tensor([0]))
    with torch.no_grad():
        e.params["t_width"][0] = -30.0
    g = e.gaussians_at((5.0 + floor) / 8)
    assert torch.allclose(g.opacities[0], torch.sigmoid(e.params["opacities"][0]) * math.exp(-1.0), rtol=1e-4)


def test_temporal_opacity_compat_far_centre_and_huge_widths():
    # compat: before the window the original measures from the later centre (catches compat
    # doing nothing); widths past e^88 overflow float32: values stay 1 and gradients finite
    centers, widths = torch.tensor([[2.0, 5.0]]), torch.zeros(1, 2)
    assert torch.allclose(temporal_opacity(torch.tensor(1.0), centers, widths, 0.0), torch.tensor([math.exp(-1.0)]))
    far = temporal_opacity(torch.tensor(1.0), centers, widths, 0.0, compat_far_centre=True)
    assert torch.allclose(far, torch.tensor([math.exp(-16.0)]))
    assert torch.allclose(temporal_opacity(torch.tensor(6.0), centers, widths, 0.0, True), torch.tensor([math.exp(-1.0)]))
    huge = torch.full((1, 2), 300.0, requires_grad=True)
    c = centers.clone().requires_grad_(True)
    o = temporal_opacity(torch.tensor(-40.0), c, huge, 3 / 2.36)
    o.sum().backward()
    assert torch.allclose(o, torch.ones(1)) and torch.isfinite(huge.grad).all() and torch.isfinite(c.grad).all()


def test_conversion_centres_follow_the_original():
    # Ex4DGS extract_dynamic_points_from_static: centres t*/2 and (W + t*)/2 clamped to [1, W-1],
    # log-widths (interval units) t* + time_pad and W - t* + time_pad. Catches: centres at the
    # clip ends (0, F-1), no clamp, widths in the wrong units
    c, w = conversion_temporal(torch.tensor([9.0, 0.0, 4.0]), 10, 10.0, 2.0)
    assert torch.allclose(c, torch.tensor([[4.5, 9.0], [1.0, 5.0], [2.0, 7.0]]))
    assert torch.allclose(w, torch.tensor([[11.0, 3.0], [2.0, 12.0], [6.0, 8.0]]) + LN10)
    # the expert: view frame 5 of a 6-frame window, keyframe interval 2, time_pad 2
    e = toy_expert(n=100, frames=8, **PAPER_TEMPORAL)
    with torch.no_grad():
        e.params["drift"][:] = 0.0
        e.params["drift"][[3, 7]] = torch.tensor([1.0, 0.0, 0.0])
    opts, _ = make_optimizers(e)
    rows = e.convert_to_dynamic(opts, torch.zeros(3), frame=5, window=6)
    assert sorted(rows.tolist()) == [3, 7]
    assert torch.allclose(e.params["t_center"][rows], torch.tensor([[2.5, 5.0]]).expand(2, 2))
    assert torch.allclose(e.params["t_width"][rows], torch.tensor([[7.0 + LN2, 3.0 + LN2]]).expand(2, 2))
    # the "clip" option: centres at the clip ends
    clip = toy_expert(n=100, frames=8, **CLIP_TEMPORAL)
    with torch.no_grad():
        clip.params["drift"][[3, 7]] = torch.tensor([1.0, 0.0, 0.0])
    rows = clip.convert_to_dynamic(make_optimizers(clip)[0], torch.zeros(3), frame=5, window=6)
    assert torch.allclose(clip.params["t_center"][rows], torch.tensor([[0.0, 7.0]]).expand(len(rows), 2))


def test_window_growth_updates_temporal_windows():
    # Ex4DGS expand_duration: late log-width := 1 interval-unit where a centre is past
    # W_new + 1 - (time_pad + I) - I/2 frames, then centres clamped to <= W_old.
    # Catches: no reset, the reset without the original's doubled shift (never fires), no clamp
    c = torch.tensor([[4.0, 9.5], [1.0, 3.0], [1.0, 12.0]])
    w = torch.zeros(3, 2) + 7.0
    c2, w2 = expand_temporal(c, w, 10, 20, 10.0, 2.0)  # threshold 20 + 1 - 12 - 5 = 4
    assert torch.allclose(c2, torch.tensor([[4.0, 9.5], [1.0, 3.0], [1.0, 10.0]]))
    assert torch.allclose(w2, torch.tensor([[7.0, 1.0 + LN10], [7.0, 7.0], [7.0, 1.0 + LN10]]))
    # the expert, on its window growth (tiny scale: 4 -> 6 frames at step 50, interval 2, pad 2):
    # threshold 6 + 1 - 4 - 1 = 2; dynamic rows only
    e = toy_expert(n=4, frames=8, **PAPER_TEMPORAL)
    make_dynamic(e, torch.tensor([0, 1]))  # centres [2, 5]
    with torch.no_grad():
        e.params["t_center"][1] = torch.tensor([1.0, 1.5])
        e.params["t_center"][2] = torch.tensor([3.0, 9.0])  # static row: untouched
        e.params["t_width"][:] = 6.0
    e.on_step(50)
    p = e.params
    assert torch.allclose(p["t_center"][0], torch.tensor([2.0, 4.0])) and torch.allclose(p["t_width"][0, 1], torch.tensor(1 + LN2))
    assert torch.allclose(p["t_center"][1], torch.tensor([1.0, 1.5])) and torch.allclose(p["t_width"][1], torch.tensor([6.0, 6.0]))
    assert torch.allclose(p["t_center"][2], torch.tensor([3.0, 9.0])) and torch.allclose(p["t_width"][2], torch.tensor([6.0, 6.0]))


def test_periodic_temporal_readjustment():
    # Ex4DGS adjust_temp_opa: a side with a centre within 0.2 I of the window edge doubles
    # max(v, 1); v < 0.5 (before doubling) becomes 0.5; centres clamped to [0.2 I, W - 0.2 I].
    # Catches: no floor, doubling without max(v, 1), the floor applied after the doubling, no clamp
    c = torch.tensor([[1.0, 39.5], [10.0, 20.0], [10.0, 20.0], [10.0, 39.0]])
    v = torch.tensor([[0.2, 3.0], [0.7, 2.0], [-1.0, 0.4], [0.8, 0.6]])
    c2, w2 = readjust_temporal(c, v + LN10, 40, 10.0)
    assert torch.allclose(c2, torch.tensor([[2.0, 38.0], [10.0, 20.0], [10.0, 20.0], [10.0, 38.0]]))
    assert torch.allclose(w2 - LN10, torch.tensor([[0.5, 6.0], [0.7, 2.0], [0.5, 0.5], [0.8, 2.0]]))
    # schedule: every 1200 steps (paper) until densify.stop - 3000 = 27000; off in the tiny preset
    paper = Ex4DGSExpert(expert_config("ex4dgs", "paper"), num_frames=300)
    assert [s for s in range(0, 40_000, 600) if paper.readjust_due(s)] == list(range(1200, 27_000, 1200))
    assert not any(toy_expert(frames=8).readjust_due(s) for s in range(0, 400))
    # the expert readjusts dynamic rows and restarts their moments
    e = toy_expert(n=6, frames=8, **PAPER_TEMPORAL)
    make_dynamic(e, torch.tensor([0, 1]))
    opts, _ = make_optimizers(e)
    g = e.gaussians_at(0.95)
    (g.opacities.sum() + g.means.sum()).backward()
    for o in opts.values():
        o.step()
    with torch.no_grad():
        e.params["t_width"][:] = -3.0
    e.readjust_temporal_windows(opts, 6)
    assert torch.allclose(e.params["t_width"][:2], torch.full((2, 2), 0.5 + LN2))  # v floor 0.5
    assert torch.allclose(e.params["t_width"][2:], torch.full((4, 2), -3.0))  # static rows untouched
    st = opts["t_center"].state[e.params["t_center"]]
    assert st["exp_avg"][:2].abs().sum() == 0


def test_presets_temporal_settings():
    # catches: a preset losing the original's values (every preset follows the original's rule;
    # the synthetic presets only scale its schedule)
    paper = expert_config("ex4dgs", "paper")
    assert (paper.temporal_init, paper.time_pad, paper.temporal_readjust_every, paper.temporal_expand) == \
        ("window", 2.0, 1200, True)
    techni = expert_config("ex4dgs", "technicolor")
    assert (techni.time_pad, techni.temporal_readjust_every, techni.temporal_min_width) == (3.0, 1000, 3 / 2.36)
    for preset in ("fast", "small", "tiny"):
        cfg = expert_config("ex4dgs", preset)
        assert cfg.temporal_init == "window" and cfg.temporal_min_width == 3 / 2.36, preset
        assert cfg.temporal_expand, preset


# -- schedules ---------------------------------------------------------------------------------
def test_progressive_window_growth():
    e = toy_expert(frames=30, window_initial=10, window_add=10, window_every=400)
    got = [e.active_frames(s, 30) for s in (0, 399, 400, 799, 800, 5000)]
    assert got == [10, 10, 20, 20, 30, 30]
    tiny = toy_expert(frames=8)
    assert [tiny.active_frames(s, 8) for s in (0, 49, 50, 100, 399)] == [4, 4, 6, 8, 8]


def test_conversion_schedule():
    e = toy_expert(frames=8)  # tiny: growth at 50, 100; delay 20; periodic 100 until 300
    due = [s for s in range(400) if e.conversion_due(s)]
    assert due == [70, 100, 120, 200]


def test_window_growth_extends_dynamic_keyframes():
    e = toy_expert(n=4, frames=8)
    with torch.no_grad():
        e.params["is_dynamic"][:2] = 1
        e.params["kf_pos"][:] = torch.arange(5.0)[None, :, None] * torch.tensor([1.0, 0.0, 0.0])
        e.params["kf_pos"][0, :, 0] = torch.tensor([0.0, 2.0, 4.0, 0.0, 0.0])  # unfitted future keyframes
    e.on_step(50)  # window 4 -> 6: keyframes beyond frame 4 (index 2) continue the motion
    assert torch.allclose(e.params["kf_pos"][0, :, 0], torch.tensor([0.0, 2.0, 4.0, 6.0, 8.0]))
    assert torch.allclose(e.params["kf_pos"][3, :, 0], torch.arange(5.0))  # static rows untouched


# -- static -> dynamic conversion ----------------------------------------------------------------
def test_conversion_picks_top_movers_with_keyframes_on_drift():
    n = 200
    e = toy_expert(n=n, frames=8)
    g = torch.Generator().manual_seed(3)
    with torch.no_grad():
        e.params["means"].copy_(torch.randn(n, 3, generator=g) * 0.1 + torch.tensor([0.0, 0.0, 5.0]))
        e.params["drift"].copy_(torch.randn(n, 3, generator=g) * 1e-3)
        movers = torch.tensor([7, 42, 99, 150])
        e.params["drift"][movers] = torch.tensor([1.0, 0.5, 0.0])
    opts, _ = make_optimizers(e)
    loss = sum(p.square().sum() for n_, p in e.params.items() if n_ != "is_dynamic")
    loss.backward()
    for o in opts.values():
        o.step()
    rows = e.convert_to_dynamic(opts, torch.zeros(3))
    assert sorted(rows.tolist()) == movers.tolist()  # top 2% of 200 = 4 rows
    assert (e.params["is_dynamic"] > 0.5).nonzero().squeeze(1).tolist() == movers.tolist()
    p = e.params
    for i in movers.tolist():
        for k in range(e.num_keyframes):
            t_k = k * e.config.keyframe_interval / e.num_frames
            assert torch.allclose(p["kf_pos"][i, k], p["means"][i] + p["drift"][i] * t_k, atol=1e-6)
    # the dynamic model reproduces the drifted position at every frame (linear keyframes)
    for f in range(8):
        g_t = e.gaussians_at(f / 8)
        expect = p["means"][movers] + p["drift"][movers] * (f / 8)
        assert torch.allclose(g_t.means[movers], expect, atol=1e-5)
        assert torch.allclose(g_t.opacities[movers], torch.sigmoid(p["opacities"][movers]), atol=1e-6)
    # converted rows restart their optimiser moments
    st = opts["kf_pos"].state[p["kf_pos"]]
    assert st["exp_avg"][movers].abs().sum() == 0 and st["exp_avg"].abs().sum() > 0
    # a second conversion only looks at the remaining static Gaussians
    rows2 = e.convert_to_dynamic(opts, torch.zeros(3))
    assert not set(rows2.tolist()) & set(movers.tolist())


def test_static_and_dynamic_motion_models():
    e = toy_expert(n=10, frames=8)
    make_dynamic(e, torch.tensor([0, 1, 2]))
    p = e.params
    g0, g1 = e.gaussians_at(0.0), e.gaussians_at(0.5)
    static = torch.arange(3, 10)
    assert torch.allclose(g1.means[static] - g0.means[static], p["drift"][static] * 0.5, atol=1e-6)
    assert torch.equal(g1.quats[static], p["quats"][static])  # fixed rotation
    assert torch.allclose(g0.means[:3], p["kf_pos"][:3, 0]) and torch.allclose(g1.means[:3], p["kf_pos"][:3, 2])
    traj = e.trajectories(torch.tensor([0.0, 0.5]), torch.tensor([0, 5]))
    assert traj.shape == (2, 2, 3) and torch.allclose(traj[1], g1.means[[0, 5]])


def test_regularisation_terms():
    e = toy_expert(n=6, frames=8)
    assert e.regularisation(0) is None  # before the first conversion
    make_dynamic(e, torch.tensor([0, 1]))
    step = 200
    reg = e.regularisation(step)
    p = e.params
    static_term = torch.log(p["drift"][2:].norm(dim=-1) + 1e-3).mean()
    kf = p["kf_pos"][:2]
    motion_term = (kf[:, :1] - kf[:, 1:]).norm(dim=-1).mean()
    assert torch.allclose(reg, 1e-4 * static_term + 1e-4 * motion_term)


# -- densification -------------------------------------------------------------------------------
def test_strategy_thresholds_per_row_and_split_moves_keyframes():
    e = toy_expert(n=6, frames=8)
    make_dynamic(e, torch.tensor([0, 1, 2]))
    with torch.no_grad():
        e.params["scales"][:] = math.log(0.001)  # small: duplicated, not split
        e.params["scales"][[1, 4]] = math.log(1.0)  # large: split
    opts, _ = make_optimizers(e)
    strategy = e.make_strategy()
    strategy.check_sanity(e.params, opts)
    state = strategy.initialize_state(scene_scale=1.0)
    # rows 0,1,3,4 sit between the dynamic (1e-4) and static (2e-4) thresholds; row 2 and 5 below
    state["grad2d"] = torch.tensor([1.5e-4, 1.5e-4, 0.5e-4, 1.5e-4, 3e-4, 0.5e-4])
    state["count"] = torch.ones(6)
    before = {k: v.detach().clone() for k, v in e.params.items()}
    n_dupli, n_split = strategy._grow_gs(e.params, opts, state, step=1000)
    assert (n_dupli, n_split) == (1, 2)  # dynamic row 0 duplicated; dynamic 1 and static 4 split
    n = e.num_gaussians
    assert n == 6 + 1 + 2
    for name, p in e.params.items():
        assert p.shape[0] == n, name
        assert opts[name].param_groups[0]["params"][0] is p
    p = e.params
    # duplicate appended a copy of row 0 (all tensors, keyframes included); after the split the
    # kept rows [0, 2, 3, 5, copy] come first, so the copy is row 4
    for name in before:
        assert torch.equal(p[name][4], before[name][0]), name
    # split rows: the rest first, then 2 copies each of rows 1 and 4; keyframes moved with the mean
    split_rows = [1, 4, 1, 4]
    for j, src in enumerate(split_rows):
        row = n - 4 + j
        offset = p["means"][row] - before["means"][src]
        assert torch.allclose(p["kf_pos"][row], before["kf_pos"][src] + offset, atol=1e-6)
        assert torch.equal(p["is_dynamic"][row], before["is_dynamic"][src])
    remove(e.params, opts, state, torch.tensor([True] + [False] * (n - 1)))
    assert all(v.shape[0] == n - 1 for v in e.params.values())


def test_gsplat_ops_keep_rows_aligned():
    e = toy_expert(n=8, frames=8)
    make_dynamic(e, torch.tensor([1, 3]))
    opts, _ = make_optimizers(e)
    state = {"grad2d": torch.zeros(8), "count": torch.zeros(8)}
    duplicate(e.params, opts, state, torch.tensor([0, 1, 0, 0, 0, 0, 0, 0], dtype=torch.bool))
    split(e.params, opts, state, torch.tensor([0, 0, 0, 1, 0, 0, 0, 0, 0], dtype=torch.bool))
    n = e.num_gaussians
    assert n == 10 and all(v.shape[0] == n for v in e.params.values())
    assert torch.equal(e.params["kf_rot"][8], e.params["kf_rot"][9])  # both split copies of row 3
    assert int((e.params["is_dynamic"] > 0.5).sum()) == 4
    g = e.gaussians_at(0.3)
    assert len(g) == n and torch.isfinite(g.means).all()


# -- gradients and persistence --------------------------------------------------------------------
def test_gradients_reach_every_parameter():
    e = toy_expert(n=12, frames=8)
    make_dynamic(e, torch.arange(6))
    g = e.gaussians_at(0.8)  # frame 6.4: dynamic rows outside their [2,5] centres -> fall-off
    loss = g.means.sum() + g.quats.square().sum() + g.scales.sum() + g.opacities.sum() + g.sh.sum()
    loss = loss + e.regularisation(1000)
    loss.backward()
    for name, p in e.params.items():
        if name == "is_dynamic":
            continue  # a flag: not differentiable
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_save_load_round_trip(tmp_path):
    e = toy_expert(n=20, frames=8)
    make_dynamic(e, torch.tensor([0, 5]))
    e.pending_conversion = True
    path = e.save(tmp_path / "ex4dgs.pt")
    loaded = get_expert("ex4dgs").load(path, CPU)
    assert loaded.num_frames == 8 and loaded.pending_conversion
    for t in (0.0, 0.37, 0.9):
        a, b = e.gaussians_at(t), loaded.gaussians_at(t)
        for f in ("means", "quats", "scales", "opacities", "sh"):
            assert torch.equal(getattr(a, f), getattr(b, f)), f
        assert a.sh_degree == b.sh_degree


# -- training on the tiny scene ---------------------------------------------------------------------
@pytest.fixture(scope="module")
def data(tiny_scene_dir):
    from moegs_bench.data.load import load_scene

    return load_scene(tiny_scene_dir, CPU)


def test_training_converts_and_densifies(data):
    from moegs_bench.train.loop import train_expert

    cfg = expert_config("ex4dgs", "tiny", {
        "max_init_points": 400, "window_every": 10, "convert_start": 5, "convert_delay": 5,
        "convert_every": 0, "lr": {"drift": 1e-2},
        "train": {"iterations": 40, "densify": {"start": 10, "stop": 35, "every": 10, "grad_threshold": 5e-5}}})
    e = Ex4DGSExpert.from_scene(data, cfg, torch.Generator().manual_seed(0))
    n0 = e.num_gaussians
    result = train_expert(e, data, seed=0)
    assert result.steps == 40 and math.isfinite(result.final_loss)
    n = e.num_gaussians
    assert n != n0
    assert all(p.shape[0] == n for p in e.params.values())
    assert int((e.params["is_dynamic"] > 0.5).sum()) > 0  # conversions happened
    g = e.gaussians_at(0.5)
    assert torch.isfinite(g.means).all() and torch.isfinite(g.opacities).all()
