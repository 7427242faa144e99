"""Camera rigs and size presets of the synthetic scenes.

World axes follow OpenCV (x right, y down, z forward): the cameras stand at z ~ -4 and look
along +z at the scene centre; the floor is the plane y = FLOOR_Y below the objects.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import numpy as np

from ...errors import ConfigError
from ..scene import Camera, intrinsics, look_at

RIGS: tuple[str, ...] = ("n3v", "technicolor", "mono")

# Where every rig looks: the middle of the volume the objects move in (see world.py).
SCENE_CENTRE = (0.0, -0.1, 0.2)
CAMERA_DISTANCE = 3.6  # from the scene centre; the objects' volume fills most of the view
CAMERA_HEIGHT = -0.3  # slightly above the centre (y is down), so the floor shows


@dataclass(frozen=True)
class SizeSpec:
    """Scale of a generated scene.

    width x height: image size of every camera; frames: frames of the multi-view rigs;
    n3v_cameras: cameras on the N3V-like arc (Technicolor is always 4x4); mono_frames: frames
    of the monocular rig (every 4th trains, so it needs more); points_per_frame: GT points
    sampled per frame; supersample: s x s RGB samples per pixel (anti-aliasing); gt_views:
    which views get ground-truth depth and label files ("all", or "test": only the test views,
    the only ones evaluation and the analyses read, which keeps large sizes' folders small).
    """

    width: int
    height: int
    frames: int
    n3v_cameras: int
    mono_frames: int
    points_per_frame: int
    supersample: int = 2
    chunk_rays: int = 1 << 20  # rays per ray-casting batch: bounds peak memory at full size
    gt_views: Literal["all", "test"] = "all"


SIZES: dict[str, SizeSpec] = {
    # CPU tests: a few seconds per scene.
    "tiny": SizeSpec(width=64, height=48, frames=8, n3v_cameras=6, mono_frames=16,
                     points_per_frame=2000),
    # CPU demonstrations.
    "small": SizeSpec(width=192, height=144, frames=24, n3v_cameras=12, mono_frames=48,
                      points_per_frame=5000),
    # GPU benchmark: N3V/Technicolor-like 50-frame segments (REFERENCE.md section 3).
    "full": SizeSpec(width=960, height=720, frames=50, n3v_cameras=18, mono_frames=200,
                     points_per_frame=20000, chunk_rays=1 << 22),
    # N3V-sized (REFERENCE.md section 3): 300 frames at the half resolution the methods train at,
    # cam00 plus 18 training cameras (N3V scenes have 18-21); 5700 views, so one RGB sample per
    # pixel (2x2 would cast 2.5x the rays) and depth / labels for the test views only (all views'
    # float32 depth alone would take 31 GB)
    "n3v": SizeSpec(width=1352, height=1014, frames=300, n3v_cameras=19, mono_frames=300,
                    points_per_frame=5000, supersample=1, chunk_rays=1 << 22, gt_views="test"),
}


@dataclass(frozen=True)
class RigLayout:
    """Cameras of one rig and which of them recorded each frame.

    frame_views[f] lists indices into `cameras` of the views recorded at frame f (all cameras
    for the multi-view rigs, the one camera of that frame for `mono`).
    """

    rig: str
    cameras: list[Camera]
    train: list[str]
    test: list[str]
    frame_views: list[list[int]]

    @property
    def num_frames(self) -> int:
        return len(self.frame_views)


def choose(kind: str, value: str, valid) -> str:
    """`value` if it is one of `valid`, else a ConfigError naming the option and the choices."""
    if value not in valid:
        raise ConfigError(f"unknown synthetic {kind} {value!r}; valid: {', '.join(valid)}")
    return value


def size_spec(size: str | SizeSpec) -> SizeSpec:
    """A SizeSpec from its name (tiny, small, full, n3v) or itself."""
    if isinstance(size, SizeSpec):
        return size
    return SIZES[choose("size", size, tuple(SIZES))]


def make_rig(rig: str, size: str | SizeSpec = "tiny", num_frames: int | None = None) -> RigLayout:
    """Cameras, split and per-frame views of `rig` at `size` (num_frames overrides the size's)."""
    spec = size_spec(size)
    choose("rig", rig, RIGS)
    if rig == "mono":
        return _mono_rig(spec, num_frames or spec.mono_frames)
    frames = num_frames or spec.frames
    cams = _n3v_cameras(spec) if rig == "n3v" else _technicolor_cameras(spec)
    test = "cam00" if rig == "n3v" else "cam10"  # REFERENCE.md section 3: the test cameras
    names = [c.name for c in cams]
    views = [list(range(len(cams))) for _ in range(frames)]
    return RigLayout(rig, cams, [n for n in names if n != test], [test], views)


def _n3v_cameras(spec: SizeSpec) -> list[Camera]:
    """A forward-facing arc like N3V: cam00 in the middle, the others left to right on two rows
    (alternating heights, so no three cameras are collinear), all looking at the centre."""
    K = intrinsics(spec.width, spec.height, fov_x_deg=60.0)
    centre = np.asarray(SCENE_CENTRE)
    placements = [(0.0, 0.0)]
    others = spec.n3v_cameras - 1
    angles = np.linspace(-30.0, 30.0, others) if others > 1 else np.full(others, 15.0)
    for i, ang in enumerate(angles):
        placements.append((float(ang), 0.35 if i % 2 == 0 else -0.35))
    cams = []
    for i, (ang, dy) in enumerate(placements):
        a = math.radians(ang)
        eye = centre + CAMERA_DISTANCE * np.array([math.sin(a), 0.0, -math.cos(a)])
        eye[1] = CAMERA_HEIGHT + dy
        cams.append(Camera(f"cam{i:02d}", K.copy(), look_at(eye, centre), spec.width, spec.height))
    return cams


def _technicolor_cameras(spec: SizeSpec, spacing: float = 0.3) -> list[Camera]:
    """A 4x4 planar grid of parallel cameras (row-major cam00..cam15, top-left first), with
    slightly off-centre principal points as in the Technicolor calibration."""
    base = intrinsics(spec.width, spec.height, fov_x_deg=55.0)
    cams = []
    for r in range(4):
        for c in range(4):
            i = 4 * r + c
            eye = np.array([(c - 1.5) * spacing, CAMERA_HEIGHT + (r - 1.5) * spacing,
                            SCENE_CENTRE[2] - CAMERA_DISTANCE])
            w2c = np.eye(4)
            w2c[:3, 3] = -eye  # camera axes are the world axes: every camera looks along +z
            K = base.copy()
            K[0, 2] += 0.01 * spec.width * ((i * 7) % 5 - 2) / 2
            K[1, 2] += 0.01 * spec.height * ((i * 3) % 5 - 2) / 2
            cams.append(Camera(f"cam{i:02d}", K, w2c, spec.width, spec.height))
    return cams


def _mono_rig(spec: SizeSpec, frames: int) -> RigLayout:
    """One hand-held-like camera swaying in front of the scene, stored as one camera per frame;
    every 4th frame trains and the frames 2 later test (REFERENCE.md section 3, HyperNeRF)."""
    K = intrinsics(spec.width, spec.height, fov_x_deg=60.0)
    centre = np.asarray(SCENE_CENTRE)
    cams = []
    for f in range(frames):
        s = f / max(frames, 1)
        eye = centre + np.array([
            1.1 * math.sin(2 * math.pi * 0.75 * s),
            CAMERA_HEIGHT - centre[1] + 0.25 * math.sin(2 * math.pi * 1.3 * s + 0.4),
            -CAMERA_DISTANCE + 0.3 * math.cos(2 * math.pi * 0.5 * s),
        ])
        cams.append(Camera(f"f{f:04d}", K.copy(), look_at(eye, centre), spec.width, spec.height))
    train = [f"f{f:04d}" for f in range(0, frames, 4)]
    test = [f"f{f:04d}" for f in range(2, frames, 4)]
    return RigLayout("mono", cams, train, test, [[f] for f in range(frames)])
