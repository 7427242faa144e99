"""Motion trajectories (eval/trajectories.py) and their table (report/tables/trajectories.py).
Each test names, in a comment, the wrong implementation it catches."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch

from moegs_bench.data.scene import read_scene
from moegs_bench.data.synthetic.motion import quat_to_matrix
from moegs_bench.errors import ConfigError
from moegs_bench.eval import trajectories as tj
from moegs_bench.render.gaussians import Gaussians
from moegs_bench.report.tables import build_table, format_table
from moegs_bench.report.tables.trajectories import parse_metric

F64 = torch.float64


def _gaussians(means: torch.Tensor, opacities: torch.Tensor | None = None) -> Gaussians:
    n = len(means)
    return Gaussians(means.float(), torch.tensor([[1.0, 0, 0, 0]]).repeat(n, 1),
                     torch.full((n, 3), 0.01), torch.ones(n) if opacities is None else opacities,
                     features=torch.zeros(n, 3))


def _line(times: torch.Tensor, start, velocity) -> torch.Tensor:
    """Tracks [N,T,3] of start [N,3] + velocity [N,3] * t."""
    return torch.as_tensor(start, dtype=F64)[:, None] + torch.as_tensor(velocity, dtype=F64)[:, None] * times[None, :, None]


def _quat_z(angle: float) -> list[float]:
    return [math.cos(angle / 2), 0.0, 0.0, math.sin(angle / 2)]


# -- statistics on analytic paths ------------------------------------------------------------
def test_straight_line_has_no_curvature_and_no_jerk():
    # catches: a curvature or jerk that assumes equal time steps (these times are uneven), or
    # one that does not vanish for uniform motion
    t = torch.tensor([0.0, 0.05, 0.2, 0.3, 0.55, 0.6, 0.9, 1.0], dtype=F64)
    tracks = _line(t, [[0.1, 0.2, 0.3], [1.0, -1.0, 0.0]], [[0.5, -0.3, 0.2], [0.0, 2.0, 0.0]])
    assert torch.allclose(tj.track_curvature(tracks, t), torch.zeros(2, dtype=F64), atol=1e-9)
    assert torch.allclose(tj.track_jerk(tracks, t), torch.zeros(2, dtype=F64), atol=1e-8)
    # speed = length / duration: catches dividing by the number of steps instead of the time
    assert torch.allclose(tj.track_speed(tracks, t), torch.tensor([math.sqrt(0.38), 2.0], dtype=F64))


def test_circle_curvature_is_one_over_radius():
    # catches: |v x a| / |v|^2 (missing a power), or the curvature scaled by the time step
    t = torch.linspace(0.0, 1.0, 401, dtype=F64)
    radius = 0.7
    th = 2 * math.pi * t
    circle = torch.stack([radius * th.cos(), radius * th.sin(), 0.3 * torch.ones_like(t)], -1)[None]
    assert tj.track_curvature(circle, t).item() == pytest.approx(1 / radius, rel=1e-3)
    assert tj.track_length(circle).item() == pytest.approx(2 * math.pi * radius, rel=1e-4)


def test_jerk_of_a_cubic_is_six_on_uneven_times():
    # catches: a third derivative without the 3! or the divided-difference spans
    t = torch.tensor([0.0, 0.1, 0.15, 0.4, 0.5, 0.9], dtype=F64)
    cubic = torch.stack([t ** 3, torch.zeros_like(t), torch.zeros_like(t)], -1)[None]
    assert tj.track_jerk(cubic, t).item() == pytest.approx(6.0, rel=1e-9)


def test_curvature_leaves_out_samples_at_rest():
    # catches: dividing by a zero speed (inf / NaN) instead of leaving the sample out
    t = torch.linspace(0.0, 1.0, 9, dtype=F64)
    still = torch.zeros(1, 9, 3, dtype=F64)
    assert torch.isnan(tj.track_curvature(still, t)).all()
    assert tj.track_jerk(still, t).item() == 0.0


def test_path_length_of_a_polyline():
    # catches: the distance from start to end instead of the length along the path
    poly = torch.tensor([[[0, 0, 0], [3, 0, 0], [3, 4, 0], [3, 4, 12]]], dtype=F64)
    assert tj.track_length(poly).item() == pytest.approx(19.0)


def test_times_must_increase():
    # catches: silently accepting unordered times (negative steps give negative speeds)
    with pytest.raises(ValueError, match="increasing"):
        tj.track_speed(torch.zeros(1, 3, 3, dtype=F64), [0.0, 0.5, 0.2])


def test_coherence_of_rigid_translation_and_of_random_motion():
    # catches: cosines of positions instead of velocities, neighbours including the Gaussian
    # itself (which would lift random motion towards 1), or still Gaussians counted as coherent
    gen = torch.Generator().manual_seed(0)
    t = torch.linspace(0.0, 1.0, 6, dtype=F64)
    start = torch.rand(60, 3, generator=gen, dtype=F64)
    rigid = _line(t, start, torch.tensor([[0.3, -0.2, 0.5]], dtype=F64).expand(60, 3))
    coh, moving = tj.track_coherence(rigid, t, k=5)
    assert bool(moving.all()) and torch.allclose(coh, torch.ones(60, dtype=F64))
    random = start[:, None] + 0.1 * torch.randn(60, 6, 3, generator=gen, dtype=F64)
    for k in (1, 5):
        coh_r, _ = tj.track_coherence(random, t, k=k)
        assert coh_r.mean().item() < 0.3
    mixed = torch.cat([rigid[:30], start[30:, None].expand(30, 6, 3)])
    coh_m, moving_m = tj.track_coherence(mixed, t, k=5)
    assert moving_m.sum().item() == 30 and torch.isnan(coh_m[30:]).all()
    assert torch.allclose(coh_m[:30], torch.ones(30, dtype=F64))


# -- tracking ---------------------------------------------------------------------------------
def test_gaussian_tracks_follow_a_known_line():
    # catches: tracks built from the wrong rows (index ignored) or with time and Gaussian axes swapped
    start = torch.arange(15, dtype=torch.float32).reshape(5, 3)
    vel = torch.tensor([[1.0, 0.0, -1.0]]) * torch.arange(1, 6)[:, None]
    times = [0.0, 0.25, 0.5, 1.0]
    tracks = tj.gaussian_tracks(lambda t: _gaussians(start + vel * t), times, torch.tensor([3, 1]))
    expect = _line(torch.tensor(times, dtype=F64), start[[3, 1]], vel[[3, 1]])
    assert tracks.shape == (2, 4, 3) and torch.allclose(tracks, expect)


def test_changing_gaussian_count_raises():
    # catches: tracking rows of different models (temporal segments) as if they were one Gaussian
    def gaussians_at(t):
        return _gaussians(torch.zeros(4 if t < 0.5 else 6, 3))

    with pytest.raises(ValueError, match="temporal segments"):
        tj.gaussian_tracks(gaussians_at, [0.0, 0.25, 0.75], torch.tensor([0]))


def test_sample_gaussians_is_seeded_and_visible_only():
    # catches: sampling invisible Gaussians, an unseeded sample, or more than n
    opac = torch.tensor([0.9, 0.01, 0.5, 0.0, 0.8, 0.3, 0.02, 0.7])
    g = _gaussians(torch.zeros(8, 3), opac)
    a = tj.sample_gaussians(g, 3, torch.Generator().manual_seed(1), min_opacity=0.05)
    b = tj.sample_gaussians(g, 3, torch.Generator().manual_seed(1), min_opacity=0.05)
    assert torch.equal(a, b) and len(a) == 3 and bool((opac[a] > 0.05).all())
    every = tj.sample_gaussians(g, 100, torch.Generator().manual_seed(1), min_opacity=0.05)
    assert every.tolist() == [0, 2, 4, 5, 7]


def test_gaussians_near():
    # catches: a squared distance compared with the radius
    pts = torch.tensor([[0.0, 0, 0], [0.5, 0, 0], [0, 0.9, 0], [2, 0, 0]])
    assert tj.gaussians_near(pts, [0.0, 0.0, 0.0], 0.8).tolist() == [True, True, False, False]


# -- the truth ---------------------------------------------------------------------------------
def test_assign_to_objects_nearest_and_none():
    # catches: the first object winning over the nearest, points outside every object assigned,
    # or box radii taken as the largest half-extent (a box corner lies at |s|)
    centres = torch.tensor([[0.0, 0, 0], [0.6, 0, 0], [5, 5, 5]])
    quats = torch.tensor([[1.0, 0, 0, 0]] * 3)
    scales = torch.tensor([[0.5, 0.5, 0.5], [0.5, 0.5, 0.5], [0.3, 0.3, 0.3]])
    kinds = ["sphere", "sphere", "box"]
    pts = torch.tensor([[-0.2, 0, 0], [0.5, 0, 0], [3, 0, 0], [5.29, 5.29, 5.29]])
    ids = tj.assign_to_objects(pts, centres, quats, scales, kinds)
    assert ids.tolist() == [0, 1, -1, 2]


def test_assign_to_objects_surface_of_interpenetrating_objects():
    # catches: the plain nearest centre, which gives a point on the big sphere's visible surface
    # (outside the small one) to the small sphere whose centre is nearer
    centres = torch.tensor([[0.0, 0, 0], [1.2, 0, 0]])
    quats = torch.tensor([[1.0, 0, 0, 0]] * 2)
    scales = torch.tensor([[1.0, 1.0, 1.0], [0.3, 0.3, 0.3]])
    x = (2.44 - 0.31 ** 2) / 2.4  # on the unit sphere, 0.31 from the small sphere's centre
    pts = torch.tensor([[x, math.sqrt(1 - x * x), 0.0], [1.45, 0.0, 0.0]])
    ids = tj.assign_to_objects(pts, centres, quats, scales, ["sphere", "sphere"])
    assert ids.tolist() == [0, 1]


def test_assign_to_objects_inside_the_shape():
    # catches: shape=True still using the bounding sphere, or the box axes not rotated
    centres = torch.zeros(1, 3)
    quats = torch.tensor([_quat_z(math.pi / 2)])  # local x along world y
    scales = torch.tensor([[0.5, 0.1, 0.1]])
    pts = torch.tensor([[0.0, 0.45, 0.0], [0.45, 0.0, 0.0]])
    assert tj.assign_to_objects(pts, centres, quats, scales, ["box"]).tolist() == [0, 0]
    assert tj.assign_to_objects(pts, centres, quats, scales, ["box"], shape=True).tolist() == [0, -1]


def test_true_tracks_of_a_turning_and_stretching_object():
    # catches: R(t) applied without R(0)^T (the start orientation is not the identity), scaling
    # along world instead of local axes, or background points moved
    times = torch.tensor([0.0, 0.5, 1.0], dtype=F64)
    alpha, turn = 0.7, math.pi / 2
    centres = torch.tensor([[[1.0, 0, 0], [1.0, 0.5, 0], [1.0, 1.0, 0]]], dtype=F64)
    quats = torch.tensor([[_quat_z(alpha + turn * float(t)) for t in times]], dtype=F64)
    scales = torch.tensor([[[0.5, 0.2, 0.2], [0.75, 0.2, 0.2], [1.0, 0.2, 0.2]]], dtype=F64)
    rz = lambda a: torch.tensor([[math.cos(a), -math.sin(a), 0], [math.sin(a), math.cos(a), 0], [0, 0, 1]], dtype=F64)  # noqa: E731
    local = torch.tensor([0.4, 0.1, 0.0], dtype=F64)  # object-local offset at t = 0
    p0 = centres[0, 0] + rz(alpha) @ local
    truth = tj.true_tracks(torch.stack([p0, torch.tensor([9.0, 9, 9], dtype=F64)]), torch.tensor([0, -1]),
                           centres, quats, scales)
    for i, t in enumerate(times.tolist()):
        stretch = torch.tensor([scales[0, i, 0] / 0.5, 1.0, 1.0], dtype=F64)
        expect = centres[0, i] + rz(alpha + turn * t) @ (stretch * local)
        assert torch.allclose(truth[0, i], expect, atol=1e-6), (t, truth[0, i], expect)
    assert torch.allclose(truth[1], torch.tensor([9.0, 9, 9], dtype=F64).expand(3, 3))


def test_track_error_zero_on_truth_and_grows_with_offset():
    # catches: an error summed (not averaged) over time, or squared distances
    t = torch.linspace(0, 1, 5, dtype=F64)
    truth = _line(t, [[0.0, 0, 0], [1, 1, 1]], [[1.0, 0, 0], [0, 1, 0]])
    assert torch.equal(tj.track_error(truth, truth), torch.zeros(2, dtype=F64))
    shifted = truth + torch.tensor([0.0, 0.0, 0.3], dtype=F64)
    assert torch.allclose(tj.track_error(shifted, truth), torch.full((2,), 0.3, dtype=F64))
    assert (tj.track_error(truth + 0.6, truth) > tj.track_error(shifted, truth)).all()


# -- the summary on the tiny synthetic scene ------------------------------------------------
def _surface_points(kinds, gen: np.random.Generator, per_object: int) -> np.ndarray:
    """Unit-local points [O,P,3] on each primitive's surface (unit sphere or unit cube)."""
    out = []
    for kind in kinds:
        if kind == "sphere":
            u = gen.normal(size=(per_object, 3))
            u /= np.linalg.norm(u, axis=1, keepdims=True)
        else:
            u = gen.uniform(-1, 1, size=(per_object, 3))
            axis = gen.integers(0, 3, size=per_object)
            u[np.arange(per_object), axis] = gen.choice([-1.0, 1.0], size=per_object)
        out.append(u)
    return np.stack(out)


def _exact_scene(npz, noise: float):
    """gaussians_at(t) with Gaussians on the objects' true surfaces (written from the renderer's
    rule, x = c + R (s * u) for a fixed unit-local u: independent of `true_tracks`) plus static
    background points; `noise` adds per-time jitter."""
    gen = np.random.default_rng(3)
    u = _surface_points(npz["kinds"], gen, 150)  # [O,P,3]
    background = gen.uniform([-4, -2.5, 2.5], [4, 0.9, 3.4], size=(300, 3))
    rot = quat_to_matrix(npz["quats"].astype(np.float64))  # [O,F,3,3]
    times = npz["times"]

    def on_objects(f: int) -> np.ndarray:
        return npz["centres"][:, f, None] + np.einsum("ojk,opk->opj", rot[:, f], npz["scales"][:, f, None] * u)

    # objects may interpenetrate: keep the surface points of frame 0 that no other object hides
    start = on_objects(0).reshape(-1, 3)
    local = np.einsum("nok,okj->noj", start[:, None] - npz["centres"][None, :, 0], rot[:, 0]) / npz["scales"][None, :, 0]
    size = np.where(npz["kinds"][None] == "box", np.abs(local).max(-1), np.linalg.norm(local, axis=-1))
    owner = np.repeat(np.arange(len(u)), u.shape[1])
    size[np.arange(len(start)), owner] = np.inf
    visible = size.min(axis=1) > 1.0

    def gaussians_at(t: float) -> Gaussians:
        f = int(np.argmin(np.abs(times - t)))
        pts = np.concatenate([on_objects(f).reshape(-1, 3)[visible], background])
        pts = pts + noise * np.random.default_rng(100 + f).normal(size=pts.shape)
        return _gaussians(torch.as_tensor(pts))

    return gaussians_at


@pytest.fixture(scope="module")
def truth_npz(tiny_scene_dir):
    scene = read_scene(tiny_scene_dir)
    return dict(np.load(scene.root / scene.gt["trajectories"]))


def test_summary_on_exact_motion_has_no_error_in_any_regime(truth_npz):
    # catches: a truth model that is wrong for any regime (e.g. rigid only: the nonrigid object
    # would show an error), misassigned objects, or tracks taken at the wrong frames
    result = tj.track_trajectories(_exact_scene(truth_npz, 0.0), truth_npz["times"], truth=truth_npz,
                                   n=200, seed=0)
    m = result.metrics
    for regime in ("static", "smooth", "fast", "abrupt", "nonrigid"):
        assert m[f"traj_count_{regime}"] > 0
        assert m[f"traj_error_{regime}"] < 1e-5, regime
        assert f"traj_length_{regime}" in m and f"traj_speed_{regime}" in m
    assert m["traj_error"] < 1e-5
    assert m["traj_speed_fast"] > m["traj_speed_smooth"] > m["traj_speed_static"]
    # rigid objects move coherently (neighbours' velocities agree)
    assert m["traj_coherence_smooth"] > 0.9
    arrays = result.arrays()
    assert arrays["tracks"].shape == (len(result.index), len(truth_npz["times"]), 3)
    assert set(arrays) >= {"times", "index", "tracks", "object_ids", "regime_ids", "regimes", "truth"}
    assert all(math.isfinite(v) for v in m.values())


def test_summary_error_grows_with_noise(truth_npz):
    # catches: an error that ignores the tracked positions (e.g. compares the truth with itself)
    noisy = tj.trajectory_summary(_exact_scene(truth_npz, 0.01), truth_npz["times"], truth=truth_npz,
                                  n=200, seed=0)
    for regime in ("static", "smooth", "fast", "abrupt", "nonrigid"):
        assert noisy[f"traj_error_{regime}"] > 5e-3, regime


def test_summary_without_truth_and_is_seeded(truth_npz):
    # catches: per-regime keys invented without truth, or an unseeded sample
    scene = _exact_scene(truth_npz, 0.0)
    a = tj.trajectory_summary(scene, truth_npz["times"], n=100, seed=4)
    b = tj.trajectory_summary(scene, truth_npz["times"], n=100, seed=4)
    assert a == b and a["traj_count"] == 100
    assert not any(k.endswith("_fast") for k in a) and "traj_error" not in a
    with pytest.raises(ValueError, match="truth"):
        tj.trajectory_summary(scene, truth_npz["times"], regimes=["fast"])


def test_summary_times_must_be_truth_frames(truth_npz):
    # catches: poses of the wrong frames silently used as truth
    with pytest.raises(ValueError, match="frames of the truth"):
        tj.trajectory_summary(_exact_scene(truth_npz, 0.0), [0.0, 0.1, 0.3], truth=truth_npz)


# -- the table ---------------------------------------------------------------------------------
def _tidy() -> pd.DataFrame:
    rows = []
    values = {  # (method, scene, seed) -> traj_speed; other metrics derived
        ("stg", "mixed", 0): 1.0, ("stg", "mixed", 1): 3.0, ("stg", "fast", 0): 6.0,
        ("ex4dgs", "mixed", 0): 2.0, ("ex4dgs", "fast", 0): 4.0,
    }
    for (method, scene, seed), speed in values.items():
        base = dict(dataset="synthetic", scene=scene, method=method, variant="default", seed=seed)
        rows += [{**base, "metric": "traj_speed", "value": speed},
                 {**base, "metric": "traj_error_fast", "value": speed / 10},
                 {**base, "metric": "traj_count_fast", "value": 100.0},
                 {**base, "metric": "psnr", "value": 30.0}]
    return pd.DataFrame(rows)


def test_parse_metric():
    # catches: regimes with underscores split wrongly, or non-trajectory metrics taken in
    assert parse_metric("traj_speed") == ("all", "speed")
    assert parse_metric("traj_error_fast") == ("fast", "error")
    assert parse_metric("psnr") is None and parse_metric("traj_unknown_fast") is None


def test_trajectories_table():
    # catches: a plain mean over all rows (stg mixed has two seeds: per-scene means first), other
    # metrics leaking in, or missing footnotes
    table = build_table("trajectories", _tidy())
    assert list(table.index) == ["stg", "ex4dgs"]
    assert list(table.columns) == [("all", "speed"), ("fast", "error"), ("fast", "count")]
    assert table.loc["stg", ("all", "speed")] == pytest.approx((2.0 + 6.0) / 2)
    assert table.loc["ex4dgs", ("fast", "error")] == pytest.approx(0.3)
    notes = " ".join(table.attrs["footnotes"])
    assert "scene units per unit time" in notes and "error:" in notes and "count:" in notes
    assert "speed" in format_table(table, "markdown")
    only = build_table("trajectories", _tidy(), regimes=["fast"], stats=["error"])
    assert list(only.columns) == [("fast", "error")]


def test_trajectories_table_without_metrics():
    # catches: an empty table printed without saying why
    with pytest.raises(ConfigError, match="traj_"):
        build_table("trajectories", _tidy()[lambda d: d["metric"] == "psnr"])
