"""Motion regimes of the synthetic objects: centre, orientation and scale over normalised time.

Every motion is a function of t in [0, 1] (the whole clip), so sizes with more frames sample
the same continuous motion more densely. Quaternions are wxyz, rotation matrices map
object-local to world axes (columns = local axes), scales are per-axis half-extents.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

REGIMES: tuple[str, ...] = ("static", "smooth", "fast", "abrupt", "nonrigid")

Pose = tuple[np.ndarray, np.ndarray, np.ndarray]  # centre [T,3], quat wxyz [T,4], scale [T,3]


# -- quaternions ------------------------------------------------------------------------------
def quat_axis_angle(axis: np.ndarray, angle: np.ndarray) -> np.ndarray:
    """Quaternions [T,4] (wxyz) of rotations by angle [T] (radians) about a unit axis [3]."""
    half = 0.5 * np.asarray(angle, dtype=np.float64)
    return np.concatenate([np.cos(half)[:, None], np.sin(half)[:, None] * np.asarray(axis)[None]], 1)


def quat_mul(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Hamilton product a*b of wxyz quaternions [...,4] (b applied first)."""
    aw, ax, ay, az = np.moveaxis(a, -1, 0)
    bw, bx, by, bz = np.moveaxis(b, -1, 0)
    return np.stack([aw * bw - ax * bx - ay * by - az * bz,
                     aw * bx + ax * bw + ay * bz - az * by,
                     aw * by - ax * bz + ay * bw + az * bx,
                     aw * bz + ax * by - ay * bx + az * bw], -1)


def quat_to_matrix(q: np.ndarray) -> np.ndarray:
    """Rotation matrices [...,3,3] of wxyz quaternions [...,4] (normalised first)."""
    q = q / np.linalg.norm(q, axis=-1, keepdims=True)
    w, x, y, z = np.moveaxis(q, -1, 0)
    return np.stack([
        np.stack([1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)], -1),
        np.stack([2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)], -1),
        np.stack([2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)], -1),
    ], -2)


def random_unit(rng: np.random.Generator) -> np.ndarray:
    v = rng.normal(size=3)
    return v / np.linalg.norm(v)


def random_quat(rng: np.random.Generator) -> np.ndarray:
    """A uniformly random orientation, [4] wxyz with w >= 0."""
    q = rng.normal(size=4)
    q /= np.linalg.norm(q)
    return q if q[0] >= 0 else -q


def _spin(q0: np.ndarray, axis: np.ndarray, angle: np.ndarray) -> np.ndarray:
    """Orientation [T,4]: the base orientation q0 turned by angle [T] about a world axis."""
    return quat_mul(quat_axis_angle(axis, angle), np.broadcast_to(q0, (len(angle), 4)))


# -- the regimes --------------------------------------------------------------------------------
@dataclass(frozen=True)
class StaticMotion:
    """Does not move."""

    centre: np.ndarray
    quat: np.ndarray
    scale: np.ndarray

    def at(self, t: np.ndarray) -> Pose:
        n = len(np.atleast_1d(t))
        return (np.tile(self.centre, (n, 1)), np.tile(self.quat, (n, 1)),
                np.tile(self.scale, (n, 1)))


@dataclass(frozen=True)
class PolynomialMotion:
    """Smooth rigid motion: centre = sum_k coeffs[k] t^k, a slow constant spin."""

    coeffs: np.ndarray  # [D+1,3]
    quat: np.ndarray
    spin_axis: np.ndarray
    spin: float  # radians over the clip
    scale: np.ndarray

    def at(self, t: np.ndarray) -> Pose:
        t = np.atleast_1d(np.asarray(t, dtype=np.float64))
        powers = t[:, None] ** np.arange(len(self.coeffs))[None]
        centre = powers @ self.coeffs
        return centre, _spin(self.quat, self.spin_axis, self.spin * t), np.tile(self.scale, (len(t), 1))


@dataclass(frozen=True)
class OrbitMotion:
    """Fast rigid motion: an ellipse travelled `cycles` times over the clip, a fast spin."""

    middle: np.ndarray
    axis_a: np.ndarray  # [3] semi-axis vectors of the ellipse
    axis_b: np.ndarray
    cycles: float
    phase: float
    quat: np.ndarray
    spin_axis: np.ndarray
    spin: float
    scale: np.ndarray

    def at(self, t: np.ndarray) -> Pose:
        t = np.atleast_1d(np.asarray(t, dtype=np.float64))
        th = 2 * math.pi * self.cycles * t + self.phase
        centre = self.middle + np.cos(th)[:, None] * self.axis_a + np.sin(th)[:, None] * self.axis_b
        return centre, _spin(self.quat, self.spin_axis, self.spin * t), np.tile(self.scale, (len(t), 1))


@dataclass(frozen=True)
class PiecewiseLinearMotion:
    """Irregular motion: straight segments between knots with sudden turns; the spin angle is
    piecewise linear too, changing speed and direction at the same knots."""

    knot_times: np.ndarray  # [K] increasing, first 0 and last 1
    knots: np.ndarray  # [K,3]
    quat: np.ndarray
    spin_axis: np.ndarray
    knot_angles: np.ndarray  # [K]
    scale: np.ndarray

    def at(self, t: np.ndarray) -> Pose:
        t = np.atleast_1d(np.asarray(t, dtype=np.float64))
        centre = np.stack([np.interp(t, self.knot_times, self.knots[:, i]) for i in range(3)], 1)
        angle = np.interp(t, self.knot_times, self.knot_angles)
        return centre, _spin(self.quat, self.spin_axis, angle), np.tile(self.scale, (len(t), 1))


@dataclass(frozen=True)
class DeformingMotion:
    """Non-rigid motion: per-axis scale oscillating with different phases (the shape changes),
    a spin and a slow drift of the centre."""

    centre: np.ndarray
    drift: np.ndarray  # [3] displacement over the clip
    quat: np.ndarray
    spin_axis: np.ndarray
    spin: float
    scale: np.ndarray  # [3] base half-extents
    amplitude: np.ndarray  # [3] relative scale amplitude per axis
    cycles: float
    phases: np.ndarray  # [3]

    def at(self, t: np.ndarray) -> Pose:
        t = np.atleast_1d(np.asarray(t, dtype=np.float64))
        wave = np.sin(2 * math.pi * self.cycles * t[:, None] + self.phases[None])
        scale = self.scale[None] * (1.0 + self.amplitude[None] * wave)
        centre = self.centre[None] + t[:, None] * self.drift[None]
        return centre, _spin(self.quat, self.spin_axis, self.spin * t), scale


Motion = StaticMotion | PolynomialMotion | OrbitMotion | PiecewiseLinearMotion | DeformingMotion


# -- sampling a motion that stays inside the action volume ----------------------------------------
_CHECK_TIMES = np.linspace(0.0, 1.0, 257)


def fits(motion: Motion, radius: Callable[[np.ndarray], np.ndarray], lo: np.ndarray,
         hi: np.ndarray) -> bool:
    """Whether the object's bounding sphere stays inside the box [lo, hi] over the whole clip.

    radius maps scales [T,3] to bounding radii [T] (it depends on the primitive's shape)."""
    centre, _, scale = motion.at(_CHECK_TIMES)
    r = radius(scale)[:, None]
    return bool(np.all(centre - r >= lo) and np.all(centre + r <= hi))


def sample_motion(regime: str, rng: np.random.Generator, scale: np.ndarray,
                  radius: Callable[[np.ndarray], np.ndarray], lo: np.ndarray, hi: np.ndarray,
                  tries: int = 500) -> Motion:
    """A random motion of `regime` for an object of base half-extents `scale` [3] that keeps the
    object inside [lo, hi]. Proposals are drawn until one fits (the ranges make most fit)."""
    propose = _PROPOSALS[regime]
    for _ in range(tries):
        motion = propose(rng, scale, lo, hi)
        if fits(motion, radius, lo, hi):
            return motion
    raise RuntimeError(f"no {regime} motion fits the action volume in {tries} tries")


def _uniform(rng: np.random.Generator, lo: np.ndarray, hi: np.ndarray, margin: float) -> np.ndarray:
    return rng.uniform(lo + margin, hi - margin)


def _propose_static(rng, scale, lo, hi) -> Motion:
    return StaticMotion(_uniform(rng, lo, hi, 0.2), random_quat(rng), scale)


def _propose_smooth(rng, scale, lo, hi) -> Motion:
    c0 = _uniform(rng, lo, hi, 0.2)
    v1 = random_unit(rng) * rng.uniform(0.4, 0.7)
    v2 = random_unit(rng) * rng.uniform(0.2, 0.4)
    return PolynomialMotion(np.stack([c0, v1, v2]), random_quat(rng), random_unit(rng),
                            float(rng.uniform(0.4, 0.9) * rng.choice([-1, 1])), scale)


def _propose_fast(rng, scale, lo, hi) -> Motion:
    yaw = rng.uniform(0, 2 * math.pi)
    e1 = np.array([math.cos(yaw), 0.0, math.sin(yaw)])
    e2 = np.array([-math.sin(yaw), rng.uniform(-0.4, 0.4), math.cos(yaw)])
    e2 /= np.linalg.norm(e2)
    middle = 0.5 * (lo + hi) + rng.uniform(-0.2, 0.2, size=3)
    return OrbitMotion(middle, e1 * rng.uniform(0.7, 1.0), e2 * rng.uniform(0.45, 0.7),
                       float(rng.uniform(1.5, 2.0)), float(rng.uniform(0, 2 * math.pi)),
                       random_quat(rng), random_unit(rng),
                       float(rng.uniform(2.0, 3.0) * math.pi * rng.choice([-1, 1])), scale)


def _propose_abrupt(rng, scale, lo, hi) -> Motion:
    segments = int(rng.integers(4, 6))
    gaps = 0.12 + rng.dirichlet(np.ones(segments)) * (1 - 0.12 * segments)
    knot_times = np.concatenate([[0.0], np.cumsum(gaps)])
    knot_times[-1] = 1.0
    margin = float(np.linalg.norm(scale))  # bounds every orientation of a box or an ellipsoid
    points = [_uniform(rng, lo, hi, margin)]
    direction = random_unit(rng)
    for _ in range(segments):
        points.append(_sharp_step(rng, points[-1], direction, lo + margin, hi - margin))
        direction = (points[-1] - points[-2]) / np.linalg.norm(points[-1] - points[-2])
    steps = rng.uniform(0.5, 1.5, size=segments) * rng.choice([-1, 1], size=segments)
    angles = np.concatenate([[0.0], np.cumsum(steps)])
    return PiecewiseLinearMotion(knot_times, np.stack(points), random_quat(rng), random_unit(rng),
                                 angles, scale)


def _sharp_step(rng, point, direction, lo, hi, tries: int = 200) -> np.ndarray:
    """The next knot: 0.5 to 1 away, inside [lo, hi], turning more than 100 degrees (a sudden
    change of direction); the last proposal if none qualifies (the caller's check rejects it)."""
    for _ in range(tries):
        d = random_unit(rng)
        nxt = point + d * rng.uniform(0.5, 1.0)
        if d @ direction < math.cos(math.radians(100)) and np.all(nxt >= lo) and np.all(nxt <= hi):
            return nxt
    return nxt


def _propose_nonrigid(rng, scale, lo, hi) -> Motion:
    return DeformingMotion(_uniform(rng, lo, hi, 0.3), random_unit(rng) * rng.uniform(0.0, 0.25),
                           random_quat(rng), random_unit(rng),
                           float(rng.uniform(1.0, 2.0) * rng.choice([-1, 1])), scale,
                           rng.uniform(0.25, 0.45, size=3), float(rng.uniform(1.0, 1.5)),
                           rng.uniform(0, 2 * math.pi, size=3))


_PROPOSALS = {"static": _propose_static, "smooth": _propose_smooth, "fast": _propose_fast,
              "abrupt": _propose_abrupt, "nonrigid": _propose_nonrigid}
