"""Tiny raw scenes in the exact layouts of N3V, Technicolor and HyperNeRF (written by
moegs_bench.data.raw_writers), for the reliability cases of `prepare`.

The N3V replica is textured (a wall and a sphere with a 3D noise texture, ray-cast), so that
COLMAP finds and triangulates features even at 96x72.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import numpy as np
import torch

from moegs_bench.data.raw_writers import encode_video, write_hypernerf, write_n3v, write_technicolor
from moegs_bench.data.scene import Camera, intrinsics, look_at
from moegs_bench.data.synthetic.texture import make_lattice, noise_volume, value_noise

W, H = 96, 72  # N3V replica frames
WALL_Z, SPHERE_R = 1.5, 0.7


@lru_cache(maxsize=1)
def _volume() -> torch.Tensor:
    return noise_volume(torch.from_numpy(make_lattice(np.random.default_rng(7))))


def _noise(p: np.ndarray, freq: float) -> np.ndarray:
    """The synthetic scenes' value noise [...,3] in [0,1] of 3D points p [...,3]."""
    q = torch.from_numpy(np.ascontiguousarray(p * freq, dtype=np.float32).reshape(-1, 3))
    return value_noise(q, _volume()).numpy().reshape(*p.shape[:-1], 3)


def textured(cam: Camera, shift: float = 0.0, tint: int = 0) -> np.ndarray:
    """[H,W,3] uint8: a textured wall z = WALL_Z behind a textured sphere at x = shift; `tint`
    adds a constant (a 'different recording' of the same geometry)."""
    u, v = np.meshgrid(np.arange(cam.width) + 0.5, np.arange(cam.height) + 0.5)
    d = np.stack([(u - cam.K[0, 2]) / cam.K[0, 0], (v - cam.K[1, 2]) / cam.K[1, 1], np.ones_like(u)], -1)
    c2w = cam.c2w
    d = d @ c2w[:3, :3].T
    d /= np.linalg.norm(d, axis=-1, keepdims=True)
    o = c2w[:3, 3]
    centre = np.array([shift, 0.0, 0.0])
    t_wall = (WALL_Z - o[2]) / d[..., 2]
    oc = o - centre
    b = (d * oc).sum(-1)
    disc = b * b - (oc @ oc - SPHERE_R**2)
    t_sph = np.where(disc > 0, -b - np.sqrt(np.maximum(disc, 0)), np.inf)
    hit = (t_sph > 0) & (t_sph < t_wall)
    p = o + d * np.where(hit, t_sph, t_wall)[..., None]
    local = np.where(hit[..., None], p - centre + 10.0, p)
    col = 0.55 * _noise(local, 12) + 0.45 * _noise(local, 4)
    return np.clip(col * 230 + tint, 0, 255).astype(np.uint8)


def n3v_rig(n: int = 4, w: int = W, h: int = H) -> list[Camera]:
    """n cameras on an arc looking at the sphere (centred principal point, as N3V stores)."""
    cams = []
    for i in range(n):
        a = (i / max(n - 1, 1) - 0.5) * 0.8
        eye = [3.0 * np.sin(a), 0.3 * np.cos(3 * a), -3.0 * np.cos(a)]
        cams.append(Camera(f"cam{i:02d}", intrinsics(w, h, 60.0), look_at(eye, [0, 0, 0.5]), w, h))
    return cams


def write_n3v_scene(path: Path, cams: int = 4, frames: int = 2, tint: int = 0) -> list[Camera]:
    """An N3V scene folder: camXX.mp4 (lossless H.264) + poses_bounds.npy; returns the cameras."""
    rig = n3v_rig(cams)
    write_n3v(path, rig, frames, lambda ci, f: textured(rig[ci], 0.15 * f, tint))
    return rig


def rewrite_video(path: Path, cam: Camera, frames: int, tint: int) -> None:
    """Replace one camera's video with another recording (same size and frame count)."""
    encode_video(path, [textured(cam, 0.15 * f, tint) for f in range(frames)])


def technicolor_rig(w: int = 16, h: int = 12) -> list[Camera]:
    """A 4x4 rig (cam10 is the default test camera), off-centre principal points."""
    cams = []
    for i in range(16):
        r, c = divmod(i, 4)
        K = np.array([[20.0, 0, w / 2 + 0.3 * (i % 3 - 1)], [0, 20.0, h / 2], [0, 0, 1]])
        cams.append(Camera(f"cam{i:02d}", K, look_at([(c - 1.5) * 0.3, (r - 1.5) * 0.3, -4.0], [0, 0, 0]), w, h))
    return cams


def technicolor_image(ci: int, number: int, w: int = 16, h: int = 12) -> np.ndarray:
    return np.random.default_rng(1000 * ci + number).integers(1, 256, (h, w, 3)).astype(np.uint8)


def write_technicolor_scene(path: Path, numbers=(51, 52, 53)) -> list[Camera]:
    """A Technicolor scene folder: <Scene>_undist_<frame>_<cam>.png + cameras_parameters.txt."""
    rig = technicolor_rig()
    write_technicolor(path, rig, list(numbers), lambda ci, f: technicolor_image(ci, numbers[f]))
    return rig


def write_hypernerf_scene(path: Path, n: int = 8) -> list[Camera]:
    """A HyperNeRF scene folder (one moving camera, val_ids given), images 24x16 at rgb/1x."""
    cams = []
    for f in range(n):
        K = np.array([[22.0, 0, 12.0], [0, 22.0, 8.0], [0, 0, 1]])
        cams.append(Camera(f"{f:06d}", K, look_at([np.sin(f * 0.4), 0.2, -3.0], [0, 0, 0]), 24, 16))
    views = [(c.name, c, f, np.random.default_rng(f).integers(0, 256, (16, 24, 3)).astype(np.uint8))
             for f, c in enumerate(cams)]
    train = [c.name for f, c in enumerate(cams) if f % 4 == 0]
    val = [c.name for f, c in enumerate(cams) if f % 4 == 2]
    write_hypernerf(path, views, train, val, near=1.0, far=5.0)
    return cams
