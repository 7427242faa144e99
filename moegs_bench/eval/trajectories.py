"""Motion trajectories of Gaussians (the MoE-GS paper's App. E, Fig. 11): follow the centres of a
seeded sample of visible Gaussians over time, measure how the tracks move (length, speed,
curvature, jerk, spatial coherence) and, on the synthetic scenes, how far they are from the true
motion of the surface they sit on.

Everything takes a function `gaussians_at(t) -> Gaussians` (t: normalised time of the clip), so
this module knows no expert. Tracks are float64 tensors [N,T,3]; times [T] strictly increase.
Units: scene units and normalised clip time, so speeds are scene units per unit time.
See docs/metrics.md, "Motion trajectories".
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from ..data.synthetic.motion import REGIMES, quat_to_matrix
from ..data.synthetic.world import bounding_radius
from ..render.gaussians import Gaussians

GaussiansAt = Callable[[float], Gaussians]

STATISTICS: tuple[str, ...] = ("length", "speed", "curvature", "jerk", "coherence", "still",
                               "error", "count")
DEFAULT_MIN_OPACITY = 0.05  # below this a Gaussian hardly shows in any render
DEFAULT_MIN_SPEED = 1e-3  # scene units per unit time: slower counts as not moving
DEFAULT_NEIGHBOURS = 8
TIME_MATCH = 1e-5  # tracking times must equal truth frame times to this (npz times are float32)


# -- tracking ---------------------------------------------------------------------------------
def _as_times(times) -> Tensor:
    """Times [T] as float64 on the CPU; ValueError unless 1-D and strictly increasing."""
    t = torch.as_tensor(times, dtype=torch.float64).detach().cpu().reshape(-1)
    if len(t) < 2 or not bool((t[1:] > t[:-1]).all()):
        raise ValueError(f"trajectory times must be at least 2 strictly increasing values, got {t.tolist()}")
    return t


def _gaussians_over(gaussians_at: GaussiansAt, times: Tensor) -> Iterator[Gaussians]:
    """The Gaussians at each time; ValueError as soon as their number changes (rows of two
    times would then be different Gaussians, as in a model made of temporal segments)."""
    first = None
    for t in times.tolist():
        g = gaussians_at(float(t))
        if first is None:
            first = (len(g), t)
        elif len(g) != first[0]:
            raise ValueError(
                f"the number of Gaussians changes between times ({first[0]} at t={first[1]:.4g}, "
                f"{len(g)} at t={t:.4g}): the model is made of temporal segments or adds Gaussians "
                "over time; track within one segment (times where the count stays the same)")
        yield g


@torch.no_grad()
def gaussian_tracks(gaussians_at: GaussiansAt, times, index: Tensor) -> Tensor:
    """Centres of Gaussians `index` [N] (rows of `gaussians_at(t)`) at `times` [T] -> [N,T,3]
    (float64, CPU). ValueError when the number of Gaussians differs between times."""
    idx = torch.as_tensor(index, dtype=torch.long)
    means = [g.means[idx.to(g.device)].detach().to("cpu", torch.float64)
             for g in _gaussians_over(gaussians_at, _as_times(times))]
    return torch.stack(means, dim=1)


@torch.no_grad()
def lowest_opacity(gaussians_at: GaussiansAt, times) -> Gaussians:
    """The Gaussians at times[0] with each opacity replaced by its minimum over `times` [T]:
    sampling from these picks Gaussians visible over the whole window (a faded Gaussian's
    position, e.g. an STG polynomial far from its time centre, is not a trajectory)."""
    gs = _gaussians_over(gaussians_at, _as_times(times))
    first = next(gs).detach()
    low = first.opacities.clone()
    for g in gs:
        low = torch.minimum(low, g.opacities.detach().to(low.device))
    return first.with_opacities(low)


def sample_gaussians(g: Gaussians, n: int, generator: torch.Generator,
                     min_opacity: float = DEFAULT_MIN_OPACITY) -> Tensor:
    """A seeded sample of at most `n` Gaussians of `g` whose opacity exceeds `min_opacity`:
    sorted row indices [n'] (long, CPU; n' = min(n, visible))."""
    visible = torch.nonzero(g.opacities.detach().cpu() > min_opacity).squeeze(1)
    pick = torch.randperm(len(visible), generator=generator)[:n]
    return visible[pick].sort().values


def gaussians_near(points: Tensor, centre, radius: float) -> Tensor:
    """Which points [N,3] lie within `radius` of `centre` [3] (e.g. on one object): bool [N]."""
    c = torch.as_tensor(centre, dtype=points.dtype, device=points.device)
    return (points - c).norm(dim=-1) <= radius


# -- finite differences -----------------------------------------------------------------------
def interval_velocities(tracks: Tensor, times) -> Tensor:
    """Velocities on the intervals between samples: tracks [N,T,3] -> [N,T-1,3]."""
    t = _as_times(times).to(tracks.device, tracks.dtype)
    return tracks.diff(dim=1) / t.diff()[None, :, None]


def inner_derivatives(tracks: Tensor, times) -> tuple[Tensor, Tensor]:
    """Velocity and acceleration at the inner samples 1..T-2: [N,T-2,3] each. Both are exact for
    quadratic motion on any spacing (derivatives of the parabola through 3 neighbours)."""
    t = _as_times(times).to(tracks.device, tracks.dtype)
    v = interval_velocities(tracks, t)
    h_left, h_right = t.diff()[:-1, None], t.diff()[1:, None]
    # slopes weighted by the opposite interval: the parabola's derivative at the middle sample
    vel = (h_right * v[:, :-1] + h_left * v[:, 1:]) / (h_left + h_right)
    acc = 2.0 * (v[:, 1:] - v[:, :-1]) / (h_left + h_right)
    return vel, acc


def third_derivatives(tracks: Tensor, times) -> Tensor:
    """Jerk from 3! x the third divided difference of 4 consecutive samples: [N,T-3,3] (exact for
    cubic motion on any spacing; empty when T < 4)."""
    t = _as_times(times).to(tracks.device, tracks.dtype)
    _, acc = inner_derivatives(tracks, t)
    span = (t[3:] - t[:-3])[:, None]
    return 3.0 * (acc[:, 1:] - acc[:, :-1]) / span


# -- statistics per track ---------------------------------------------------------------------
def track_length(tracks: Tensor) -> Tensor:
    """Polyline length of each track: tracks [N,T,3] -> [N] (scene units)."""
    return tracks.diff(dim=1).norm(dim=-1).sum(dim=1)


def track_speed(tracks: Tensor, times) -> Tensor:
    """Mean speed, length / duration: tracks [N,T,3], times [T] -> [N] (scene units per unit time)."""
    t = _as_times(times)
    return track_length(tracks) / float(t[-1] - t[0])


def _masked_mean(values: Tensor, mask: Tensor, dim: int) -> Tensor:
    """Mean of `values` where `mask` along `dim`; NaN where nothing is selected."""
    count = mask.sum(dim=dim)
    total = torch.where(mask, values, torch.zeros_like(values)).sum(dim=dim)
    return torch.where(count > 0, total / count.clamp_min(1), torch.full_like(total, float("nan")))


def track_curvature(tracks: Tensor, times, min_speed: float = DEFAULT_MIN_SPEED) -> Tensor:
    """Mean curvature |v x a| / |v|^3 over the inner samples: tracks [N,T,3], times [T] -> [N]
    (1 / scene units). Samples slower than `min_speed` are left out (a direction change at rest
    has no curvature); NaN for a track with no sample left or T < 3."""
    if tracks.shape[1] < 3:
        return torch.full(tracks.shape[:1], float("nan"), dtype=tracks.dtype, device=tracks.device)
    vel, acc = inner_derivatives(tracks, times)
    speed = vel.norm(dim=-1)
    moving = speed > min_speed
    kappa = torch.linalg.cross(vel, acc, dim=-1).norm(dim=-1) / speed.clamp_min(min_speed) ** 3
    return _masked_mean(kappa, moving, dim=1)


def track_jerk(tracks: Tensor, times) -> Tensor:
    """Mean |third derivative| over the samples: tracks [N,T,3], times [T] -> [N] (scene units
    per unit time^3); NaN when T < 4."""
    if tracks.shape[1] < 4:
        return torch.full(tracks.shape[:1], float("nan"), dtype=tracks.dtype, device=tracks.device)
    return third_derivatives(tracks, times).norm(dim=-1).mean(dim=1)


def moving_tracks(tracks: Tensor, times, min_speed: float = DEFAULT_MIN_SPEED) -> Tensor:
    """Which tracks move: mean speed above `min_speed`. tracks [N,T,3] -> bool [N]."""
    return track_speed(tracks, times) > min_speed


def nearest_neighbours(points: Tensor, k: int, block: int = 2048) -> Tensor:
    """Indices [M,k'] of the k' = min(k, M-1) nearest other points of each of points [M,3]."""
    m = len(points)
    k = min(k, m - 1)
    out = []
    for start in range(0, m, block):  # blocks of rows: an [M,M] distance matrix may not fit
        d = torch.cdist(points[start:start + block], points)
        rows = torch.arange(len(d), device=points.device)
        d[rows, start + rows] = float("inf")  # a point is not its own neighbour
        out.append(d.topk(k, dim=1, largest=False).indices)
    return torch.cat(out) if out else torch.zeros(0, k, dtype=torch.long, device=points.device)


def track_coherence(tracks: Tensor, times, k: int = DEFAULT_NEIGHBOURS,
                    min_speed: float = DEFAULT_MIN_SPEED) -> tuple[Tensor, Tensor]:
    """Spatial coherence: for each moving Gaussian, the mean cosine similarity between its
    interval velocities and those of its k nearest moving neighbours (by position at times[0]).

    tracks [N,T,3], times [T] -> (coherence [N], moving [N] bool). Gaussians that do not move
    (`moving_tracks`) are left out of the cosines (NaN) and counted by `moving`; intervals where
    either of a pair is slower than `min_speed` are skipped. 1: neighbours move alike."""
    moving = moving_tracks(tracks, times, min_speed)
    out = torch.full(tracks.shape[:1], float("nan"), dtype=tracks.dtype, device=tracks.device)
    if int(moving.sum()) < 2:
        return out, moving
    tr = tracks[moving]
    v = interval_velocities(tr, times)  # [M,T-1,3]
    speed = v.norm(dim=-1)
    nb = nearest_neighbours(tr[:, 0], k)  # [M,k]
    dots = (v[:, None] * v[nb]).sum(dim=-1)  # [M,k,T-1]
    norms = speed[:, None] * speed[nb]
    valid = (speed[:, None] > min_speed) & (speed[nb] > min_speed)
    cos = dots / norms.clamp_min(min_speed ** 2)
    out[moving] = _masked_mean(cos.flatten(1), valid.flatten(1), dim=1)
    return out, moving


# -- the truth of the synthetic scenes --------------------------------------------------------
def _f64(x) -> Tensor:
    return torch.as_tensor(np.asarray(x) if not isinstance(x, Tensor) else x,
                           dtype=torch.float64).detach().cpu()


def _rotations(quats) -> Tensor:
    """Object-to-world rotation matrices [...,3,3] (columns = local axes) of wxyz quats [...,4]."""
    return torch.as_tensor(quat_to_matrix(_f64(quats).numpy()), dtype=torch.float64)


def assign_to_objects(points0, centres0, quats0, scales0, kinds: Sequence[str],
                      margin: float = 0.05, shape: bool = False) -> Tensor:
    """The object each point sits in at the first time: points0 [N,3], centres0 [O,3], quats0
    [O,4] (wxyz, object-to-world), scales0 [O,3] (half-extents), kinds [O] ("sphere"/"box")
    -> object id [N] (long; -1 in none).

    A point is in an object when inside its bounding sphere (`world.bounding_radius`) grown by
    `margin` (relative: surface points carry reconstruction noise); with `shape`, inside the
    primitive itself grown by `margin`. Where several hold, the centre nearest in the object's
    own units wins: the smallest |R^T (p - c) / s| (2-norm for an ellipsoid, max-norm for a box),
    so a point on the visible surface of two interpenetrating objects (on one, outside the
    other) goes to the one it lies on, which the plain nearest centre can get wrong."""
    p, c, s = _f64(points0), _f64(centres0), _f64(scales0)
    if len(c) == 0:
        return torch.full((len(p),), -1, dtype=torch.long)
    local = torch.einsum("nok,okj->noj", p[:, None] - c[None], _rotations(quats0)) / s[None]
    box = torch.tensor([k == "box" for k in kinds])
    size = torch.where(box[None], local.abs().amax(dim=-1), local.norm(dim=-1))  # [N,O]; 1 on the surface
    if shape:
        inside = size <= 1.0 + margin
    else:
        radius = torch.stack([_f64(bounding_radius(k)(s[o:o + 1].numpy()))[0]
                              for o, k in enumerate(kinds)])  # one per object (O is small)
        inside = (p[:, None] - c[None]).norm(dim=-1) <= radius[None] * (1.0 + margin)
    size = torch.where(inside, size, torch.full_like(size, float("inf")))
    best = size.argmin(dim=1)
    return torch.where(inside.any(dim=1), best, torch.full_like(best, -1))


def true_tracks(points0, object_ids, centres, quats, scales) -> Tensor:
    """Each point carried by its object's motion: points0 [N,3] at the first time, object_ids [N]
    (-1: background, which does not move), centres [O,T,3], quats [O,T,4] (wxyz), scales [O,T,3]
    -> [N,T,3] float64.

    p(t) = c(t) + R(t) diag(s(t)/s(0)) R(0)^T (p0 - c0): the point keeps its object-local
    coordinates R^T (p - c) / s, exactly as the synthetic renderer attaches surfaces and textures
    to the objects, so rigid objects move rigidly and deforming ones stretch with their scales."""
    p, ids = _f64(points0), torch.as_tensor(object_ids, dtype=torch.long).cpu()
    c, s, rot = _f64(centres), _f64(scales), _rotations(quats)
    if len(c) == 0:
        return p[:, None].expand(-1, 1, -1).clone()
    o = ids.clamp_min(0)
    local = torch.einsum("nk,nkj->nj", p - c[o, 0], rot[o, 0]) / s[o, 0]  # R0^T (p0 - c0) / s0
    moved = c[o] + torch.einsum("ntjk,ntk->ntj", rot[o], s[o] * local[:, None])  # [N,T,3]
    still = p[:, None].expand_as(moved)
    return torch.where((ids >= 0)[:, None, None], moved, still)


def track_error(tracks: Tensor, truth: Tensor) -> Tensor:
    """Mean over time of the distance to the true position: [N,T,3] x [N,T,3] -> [N]."""
    return (tracks - truth.to(tracks.device, tracks.dtype)).norm(dim=-1).mean(dim=1)


@dataclass(frozen=True)
class Truth:
    """Object poses at the tracking times (from gt/trajectories.npz): centres [O,T,3], quats
    [O,T,4], scales [O,T,3], kinds [O], regime_ids [O], regimes [R]."""

    centres: Tensor
    quats: Tensor
    scales: Tensor
    kinds: tuple[str, ...]
    regime_ids: Tensor
    regimes: tuple[str, ...]


def truth_at(truth: Mapping[str, Any] | str | Path, times) -> Truth:
    """The truth (an npz path or its arrays: times [F], centres [O,F,3], quats [O,F,4], scales
    [O,F,3], kinds [O], regime_ids [O], regimes [R]) at the frames equal to `times` [T];
    ValueError for a time that is not a frame of the truth."""
    data = np.load(truth) if isinstance(truth, str | Path) else truth
    frame_times = _f64(data["times"])
    t = _as_times(times)
    gap, frames = (t[:, None] - frame_times[None]).abs().min(dim=1)
    if len(frame_times) == 0 or bool((gap > TIME_MATCH).any()):
        raise ValueError(f"tracking times {t.tolist()} are not all frames of the truth "
                         f"({frame_times.tolist()})")
    return Truth(_f64(data["centres"])[:, frames], _f64(data["quats"])[:, frames],
                 _f64(data["scales"])[:, frames], tuple(str(k) for k in data["kinds"]),
                 torch.as_tensor(np.asarray(data["regime_ids"]), dtype=torch.long),
                 tuple(str(r) for r in data.get("regimes", REGIMES)))


# -- the summary --------------------------------------------------------------------------------
@dataclass
class TrajectoryResult:
    """Tracked Gaussians and what was measured on them.

    times [T]; index [N] (rows of gaussians_at(times[0])); tracks [N,T,3]; object_ids [N] (-1:
    background, or no truth); regime_ids [N] (index into `regimes`; -1 without truth); truth
    [N,T,3] or None; metrics (finite traj_* values); notes (why a key is missing)."""

    times: Tensor
    index: Tensor
    tracks: Tensor
    object_ids: Tensor
    regime_ids: Tensor
    regimes: tuple[str, ...]
    truth: Tensor | None = None
    metrics: dict[str, float] = field(default_factory=dict)
    notes: dict[str, str] = field(default_factory=dict)

    def arrays(self) -> dict[str, np.ndarray]:
        """numpy arrays for `np.savez` (figures): times, index, tracks, object_ids, regime_ids,
        regimes, and truth when known."""
        out = {"times": self.times.numpy(), "index": self.index.numpy(),
               "tracks": self.tracks.numpy().astype(np.float32),
               "object_ids": self.object_ids.numpy().astype(np.int32),
               "regime_ids": self.regime_ids.numpy().astype(np.int32),
               "regimes": np.array(self.regimes, dtype=str)}
        if self.truth is not None:
            out["truth"] = self.truth.numpy().astype(np.float32)
        return out


def _regime_of_points(points0: Tensor, truth: Truth, regimes: Sequence[str],
                      ) -> tuple[Tensor, Tensor]:
    """Object id [N] and regime id [N] (into `regimes`; -1 for a regime not reported) of points
    at times[0]; background points (no object) are static, like the scene's label maps."""
    ids = assign_to_objects(points0, truth.centres[:, 0], truth.quats[:, 0], truth.scales[:, 0],
                            truth.kinds)
    regime_names = [truth.regimes[int(r)] for r in truth.regime_ids] + ["static"]  # last: background
    lookup = torch.tensor([regimes.index(r) if r in regimes else -1 for r in regime_names])
    return ids, lookup[torch.where(ids >= 0, ids, torch.full_like(ids, len(truth.kinds)))]


def _sample(g0: Gaussians, regime_ids: Tensor | None, n_regimes: int, n: int, seed: int,
            min_opacity: float) -> Tensor:
    """Row indices [N]: n visible Gaussians, or n per regime (regime_ids [N_all]) with truth."""
    generator = torch.Generator().manual_seed(seed)
    if regime_ids is None:
        return sample_gaussians(g0, n, generator, min_opacity)
    opac = g0.opacities.detach().cpu()
    parts = [sample_gaussians(g0.with_opacities(torch.where(regime_ids == r, opac, 0.0)), n,
                              generator, min_opacity) for r in range(n_regimes)]
    return torch.cat(parts).sort().values


def _group_metrics(stats: dict[str, Tensor], mask: Tensor, suffix: str,
                   ) -> tuple[dict[str, float], dict[str, str]]:
    """traj_<stat><suffix>: the mean over the Gaussians of `mask` [N] of each per-track statistic
    [N] (NaN left out); a statistic with no value is left out with a note."""
    metrics = {f"traj_count{suffix}": float(mask.sum())}
    notes = {}
    for name, values in stats.items():
        v = values[mask]
        v = v[~v.isnan()]
        key = f"traj_{name}{suffix}"
        if len(v):
            metrics[key] = float(v.mean())
        else:
            notes[key] = ("no tracked Gaussian" if not bool(mask.any()) else
                          "undefined for every tracked Gaussian (too few times, or none moves "
                          "faster than min_speed)")
    return metrics, notes


def _per_track_stats(tracks: Tensor, times: Tensor, k: int, min_speed: float,
                     truth: Tensor | None) -> dict[str, Tensor]:
    """Every per-track statistic [N] of tracks [N,T,3] (error only with truth [N,T,3])."""
    coherence, moving = track_coherence(tracks, times, k, min_speed)
    stats = {"length": track_length(tracks), "speed": track_speed(tracks, times),
             "curvature": track_curvature(tracks, times, min_speed),
             "jerk": track_jerk(tracks, times), "coherence": coherence,
             "still": (~moving).to(tracks.dtype)}
    if truth is not None:
        stats["error"] = track_error(tracks, truth)
    return stats


def track_trajectories(gaussians_at: GaussiansAt, times, regimes: Sequence[str] | None = None,
                       truth: Mapping[str, Any] | str | Path | None = None, n: int = 1000,
                       seed: int = 0, min_opacity: float = DEFAULT_MIN_OPACITY,
                       k: int = DEFAULT_NEIGHBOURS, min_speed: float = DEFAULT_MIN_SPEED,
                       ) -> TrajectoryResult:
    """Sample Gaussians visible at every one of `times` [T], track them, measure them.

    Without `truth`: n Gaussians, overall statistics (traj_length, traj_speed, traj_curvature,
    traj_jerk, traj_coherence, traj_still = fraction not moving, traj_count). With `truth`
    (gt/trajectories.npz or its arrays; `times` must be among its frames): Gaussians are
    assigned to objects at times[0] (background = static), n are sampled per regime of
    `regimes` (default: all of the truth's), and traj_error plus every traj_<stat>_<regime> and
    traj_count_<regime> are added. ValueError when the number of Gaussians changes over times."""
    t = _as_times(times)
    if regimes is not None and truth is None:
        raise ValueError("per-regime trajectories need the truth (gt/trajectories.npz)")
    g0 = lowest_opacity(gaussians_at, t)
    tr = truth_at(truth, t) if truth is not None else None
    names = tuple(regimes) if regimes is not None else (tr.regimes if tr is not None else ())
    unknown = [r for r in names if tr is not None and r not in tr.regimes]
    if unknown:
        raise ValueError(f"unknown regimes {unknown}; the truth has {list(tr.regimes)}")
    obj_all = reg_all = None
    if tr is not None:
        obj_all, reg_all = _regime_of_points(g0.means.detach().cpu(), tr, names)
    index = _sample(g0, reg_all, len(names), n, seed, min_opacity)
    tracks = gaussian_tracks(gaussians_at, t, index)
    object_ids = obj_all[index] if obj_all is not None else torch.full_like(index, -1)
    regime_ids = reg_all[index] if reg_all is not None else torch.full_like(index, -1)
    truth_tracks = (true_tracks(tracks[:, 0], object_ids, tr.centres, tr.quats, tr.scales)
                    if tr is not None else None)
    stats = _per_track_stats(tracks, t, k, min_speed, truth_tracks)
    metrics, notes = _group_metrics(stats, torch.ones(len(index), dtype=torch.bool), "")
    for r, name in enumerate(names):
        m, nt = _group_metrics(stats, regime_ids == r, f"_{name}")
        metrics.update(m)
        notes.update(nt)
    return TrajectoryResult(t, index, tracks, object_ids, regime_ids, names, truth_tracks,
                            metrics, notes)


def trajectory_summary(gaussians_at: GaussiansAt, times, regimes: Sequence[str] | None = None,
                       truth: Mapping[str, Any] | str | Path | None = None, n: int = 1000,
                       seed: int = 0, **options: float) -> dict[str, float]:
    """The traj_* metrics of `track_trajectories` (same arguments; options: min_opacity, k,
    min_speed): {name: finite value}."""
    return track_trajectories(gaussians_at, times, regimes, truth, n, seed, **options).metrics
