"""The scene model: a textured room with a floor, and moving objects of five motion regimes.

World axes are OpenCV's (x right, y down, z forward). Every camera ray leaves from inside
the room, so every pixel hits a surface at a finite depth.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass, field

import numpy as np

from ...errors import ConfigError
from .motion import REGIMES, Motion, quat_to_matrix, sample_motion
from .rigs import SCENE_CENTRE, choose
from .texture import TextureSpec, make_lattice, random_texture

SCENES: tuple[str, ...] = ("mixed", "static", "smooth", "fast", "abrupt", "nonrigid")

ROOM_LO = np.array([-4.5, -3.0, -6.0])  # walls, ceiling and a back wall behind the cameras
ROOM_HI = np.array([4.5, 1.5, 3.5])
FLOOR_Y = 1.0  # the floor plane (y is down: below the objects)
ACTION_LO = np.array([-1.5, -1.2, -1.0])  # every object stays inside this box, above the floor
ACTION_HI = np.array([1.5, 0.98, 1.4])

# (regime, primitive) of each object; regime-named scenes are mostly that regime.
_COMPOSITIONS: dict[str, list[tuple[str, str]]] = {
    "mixed": [("static", "box"), ("static", "sphere"), ("smooth", "sphere"), ("fast", "sphere"),
              ("abrupt", "box"), ("nonrigid", "box")],
    "static": [("static", "box"), ("static", "sphere"), ("static", "box"), ("static", "sphere"),
               ("static", "box")],
    **{r: [(r, "sphere"), (r, "box"), (r, "sphere"), (r, "box")]
       for r in ("smooth", "fast", "abrupt", "nonrigid")},
}


@dataclass(frozen=True)
class SceneObject:
    """One moving primitive. kind: sphere (an ellipsoid of half-axes `scale`) or box (half-extents
    `scale`), both in object-local coordinates that the texture is attached to."""

    name: str
    kind: str
    regime: str
    motion: Motion
    texture: TextureSpec
    base_scale: np.ndarray  # [3] texture coordinates = unit-local coordinates x base_scale

    @property
    def regime_id(self) -> int:
        return REGIMES.index(self.regime)


@dataclass(frozen=True)
class SyntheticWorld:
    """Everything needed to render any view at any time: objects, background, light, noise."""

    scene: str
    seed: int
    objects: list[SceneObject]
    room_texture: TextureSpec
    floor_texture: TextureSpec
    lattice: np.ndarray  # [LATTICE^3,3] float32 value-noise lattice
    # unit vector towards the light: from above (-y), left and the cameras' side
    light_dir: np.ndarray = field(default_factory=lambda: _unit([-0.4, -1.0, -0.6]))
    ambient: float = 0.4  # Lambert shading: albedo x (ambient + diffuse x max(0, n.l))
    diffuse: float = 0.65

    @property
    def centre(self) -> np.ndarray:
        return np.asarray(SCENE_CENTRE)

    @property
    def bounds(self) -> tuple[np.ndarray, np.ndarray]:
        """World box [lo, hi] that contains every surface any camera can see."""
        lo = ROOM_LO.copy()
        hi = ROOM_HI.copy()
        hi[1] = FLOOR_Y
        return lo, hi

    @property
    def extent(self) -> float:
        """Half the diagonal of `bounds` (the scale of the scene)."""
        lo, hi = self.bounds
        return float(0.5 * np.linalg.norm(hi - lo))

    def poses(self, times: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Object poses at times [F]: centres [O,F,3], quaternions wxyz [O,F,4], scales [O,F,3]."""
        times = np.atleast_1d(np.asarray(times, dtype=np.float64))
        if not self.objects:
            return np.zeros((0, len(times), 3)), np.zeros((0, len(times), 4)), np.zeros((0, len(times), 3))
        c, q, s = zip(*(o.motion.at(times) for o in self.objects), strict=True)
        return np.stack(c), np.stack(q), np.stack(s)

    def rotations(self, times: np.ndarray) -> np.ndarray:
        """Object-to-world rotation matrices [O,F,3,3]."""
        return quat_to_matrix(self.poses(times)[1])

    def trajectories(self, times: np.ndarray) -> dict[str, np.ndarray]:
        """The ground-truth trajectory arrays written to gt/trajectories.npz."""
        centres, quats, scales = self.poses(times)
        return {
            "names": np.array([o.name for o in self.objects], dtype=str),
            "kinds": np.array([o.kind for o in self.objects], dtype=str),
            "regime_ids": np.array([o.regime_id for o in self.objects], dtype=np.int32),
            "regimes": np.array(REGIMES, dtype=str),
            "times": np.asarray(times, dtype=np.float32),
            "centres": centres.astype(np.float32),
            "quats": quats.astype(np.float32),
            "scales": scales.astype(np.float32),
        }


def _unit(v) -> np.ndarray:
    v = np.asarray(v, dtype=np.float64)
    return v / np.linalg.norm(v)


def bounding_radius(kind: str):
    """Radius of the bounding sphere of a primitive of half-extents scale [T,3] -> [T]."""
    if kind == "sphere":
        return lambda s: np.max(s, axis=-1)
    return lambda s: np.linalg.norm(s, axis=-1)


def _stream(seed: int, scene: str) -> np.random.Generator:
    """The random stream of one (seed, scene); crc32 because Python's str hash is salted."""
    return np.random.default_rng(np.random.SeedSequence([int(seed), zlib.crc32(scene.encode())]))


def build_world(scene: str = "mixed", seed: int = 0) -> SyntheticWorld:
    """The scene model of `scene` (one of SCENES) for a seed: same inputs, same world."""
    choose("scene", scene, SCENES)
    if not isinstance(seed, int | np.integer) or seed < 0:
        raise ConfigError(f"synthetic seed must be a non-negative integer, got {seed!r}")
    rng = _stream(seed, scene)
    lattice = make_lattice(rng)
    # calmer walls than objects, so that the objects stand out
    room = random_texture(rng, freq=1.6, checker=0.5, saturation=(0.2, 0.6))
    floor = random_texture(rng, freq=1.2, checker=1.0, saturation=(0.3, 0.7))
    objects = []
    for i, (regime, kind) in enumerate(_COMPOSITIONS[scene]):
        objects.append(_sample_object(rng, i, regime, kind, objects))
    return SyntheticWorld(scene, int(seed), objects, room, floor, lattice)


def _sample_object(rng: np.random.Generator, index: int, regime: str, kind: str,
                   placed: list[SceneObject]) -> SceneObject:
    """A random object; static and deforming ones (which stay put) keep clear of the earlier
    ones at time 0, so that resting objects do not interpenetrate (after 200 draws the last
    one is kept: overlapping solids still render correctly, as their union)."""
    radius = bounding_radius(kind)
    for _ in range(200):
        scale = rng.uniform(0.28, 0.45, size=3) if kind == "sphere" else rng.uniform(0.2, 0.34, size=3)
        motion = sample_motion(regime, rng, scale, radius, ACTION_LO, ACTION_HI)
        if regime not in ("static", "nonrigid") or _clear(motion, radius, placed):
            break
    texture = random_texture(rng, freq=4.0, checker=1.0)
    return SceneObject(f"{regime}_{kind}_{index}", kind, regime, motion, texture, scale)


def _clear(motion: Motion, radius, placed: list[SceneObject]) -> bool:
    c, _, s = motion.at(np.zeros(1))
    for other in placed:
        oc, _, os_ = other.motion.at(np.zeros(1))
        if np.linalg.norm(c - oc) < radius(s)[0] + bounding_radius(other.kind)(os_)[0]:
            return False
    return True
