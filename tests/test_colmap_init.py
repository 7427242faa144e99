"""pycolmap initialisation on a textured analytic scene with an exactly known surface."""

from __future__ import annotations

import os

import numpy as np
import pytest

from moegs_bench.data.colmap_init import (
    ColmapConfig,
    FrameJob,
    downsample,
    run_frame_job,
    triangulate_frames,
    triangulate_views,
    voxel_average,
    write_point_clouds,
)
from moegs_bench.data.scene import Camera, PreparedScene, intrinsics, look_at
from moegs_bench.io import save_png

WALL_Z = 1.5  # a textured wall z = WALL_Z behind a textured sphere
SPHERE_R = 0.7
EXTENT = 4.0  # size of what the cameras see (wall width in view, distance to it)


def _noise(p: np.ndarray, freq: float, seed: int) -> np.ndarray:
    """Trilinear value noise [...,3] in [0,1] of 3D points p [...,3]."""
    grid = np.random.default_rng(seed).random((64, 64, 64, 3))
    q = p * freq
    i = np.floor(q).astype(int)
    f = q - i
    out = 0.0
    for dx in (0, 1):
        for dy in (0, 1):
            for dz in (0, 1):
                w = ((f[..., 0] if dx else 1 - f[..., 0]) * (f[..., 1] if dy else 1 - f[..., 1])
                     * (f[..., 2] if dz else 1 - f[..., 2]))
                out = out + w[..., None] * grid[(i[..., 0] + dx) % 64, (i[..., 1] + dy) % 64, (i[..., 2] + dz) % 64]
    return out


def render(cam: Camera, centre) -> np.ndarray:
    """Ray-cast the wall and a sphere at `centre` with a texture fixed to the surfaces."""
    u, v = np.meshgrid(np.arange(cam.width) + 0.5, np.arange(cam.height) + 0.5)
    d = np.stack([(u - cam.K[0, 2]) / cam.K[0, 0], (v - cam.K[1, 2]) / cam.K[1, 1], np.ones_like(u)], -1)
    c2w = cam.c2w
    d = d @ c2w[:3, :3].T
    d /= np.linalg.norm(d, axis=-1, keepdims=True)
    o = c2w[:3, 3]
    t_wall = (WALL_Z - o[2]) / d[..., 2]
    oc = o - np.asarray(centre)
    b = (d * oc).sum(-1)
    disc = b * b - (oc @ oc - SPHERE_R**2)
    t_sph = np.where(disc > 0, -b - np.sqrt(np.maximum(disc, 0)), np.inf)
    hit_sphere = (t_sph > 0) & (t_sph < t_wall)
    p = o + d * np.where(hit_sphere, t_sph, t_wall)[..., None]
    local = np.where(hit_sphere[..., None], p - np.asarray(centre) + 10.0, p)  # texture moves with the sphere
    col = 0.55 * _noise(local, 18, 1) + 0.45 * _noise(local, 5, 2)
    return (np.clip(col, 0, 1) * 255).astype(np.uint8)


def rig(n: int = 6, w: int = 160, h: int = 120, radius: float = 3.0) -> list[Camera]:
    cams = []
    for i in range(n):
        a = (i / (n - 1) - 0.5) * 0.8
        eye = [radius * np.sin(a), 0.3 * np.cos(3 * a), -radius * np.cos(a)]
        cams.append(Camera(f"cam{i:02d}", intrinsics(w, h, 60.0), look_at(eye, [0, 0, 0.5]), w, h))
    return cams


def surface_distance(xyz: np.ndarray, centre) -> np.ndarray:
    """Distance of points [P,3] to the nearest scene surface (sphere or wall)."""
    sphere = np.abs(np.linalg.norm(xyz - np.asarray(centre), axis=1) - SPHERE_R)
    return np.minimum(sphere, np.abs(xyz[:, 2] - WALL_Z))


def make_scene(root, cams, centres) -> PreparedScene:
    """A prepared multi-view scene (images only) of the sphere at one centre per frame."""
    images = {c.name: [] for c in cams}
    for f, centre in enumerate(centres):
        for cam in cams:
            rel = f"frames/{cam.name}/{f:05d}.png"
            save_png(root / rel, render(cam, centre))
            images[cam.name].append(rel)
    n = len(centres)
    return PreparedScene(root, "toy", "test", list(cams), np.arange(n) / n, list(range(n)),
                         [c.name for c in cams[1:]], [cams[0].name], images)


def test_triangulated_points_lie_on_the_surface(tmp_path):
    cams = rig()
    names = []
    for cam in cams:
        save_png(tmp_path / f"{cam.name}.png", render(cam, (0, 0, 0)))
        names.append(f"{cam.name}.png")
    cloud = triangulate_views(tmp_path, names, cams, [0.25] * len(cams), tmp_path / "work", ColmapConfig(), 2)
    assert len(cloud.xyz) > 300
    assert cloud.xyz.dtype == np.float32 and cloud.rgb.dtype == np.uint8 and cloud.rgb.shape == cloud.xyz.shape
    assert np.median(surface_distance(cloud.xyz, (0, 0, 0))) < 0.01 * EXTENT
    assert np.allclose(cloud.time, 0.25)
    assert cloud.rgb.std() > 10  # colours come from the images


def test_frames_in_worker_processes_cache_and_merge(tmp_path):
    centres = [(0.0, 0.0, 0.0), (0.3, 0.0, 0.0)]
    scene = make_scene(tmp_path, rig(5, 128, 96), centres)
    done = []
    config = ColmapConfig(workers=2)
    points = write_point_clouds(scene, [0, 1], config, on_done=lambda f, n, s: done.append(f))
    assert sorted(done) == [0, 1]
    scene.points = points
    for f, centre in enumerate(centres):
        xyz = scene.load_points(f"frame:{f}")["xyz"]
        assert len(xyz) > 50 and np.median(surface_distance(xyz, centre)) < 0.01 * EXTENT
    merged = scene.load_points("merged")
    n0 = len(scene.load_points("frame:0")["xyz"])
    assert len(merged["xyz"]) == n0 + len(scene.load_points("frame:1")["xyz"])
    assert np.all(merged["time"][:n0] == 0.0) and np.all(merged["time"][n0:] == 0.5)
    assert np.all(merged["frame"][n0:] == 1) and merged["frame"].dtype == np.int32
    assert len(scene.load_points("downsampled")["xyz"]) == len(merged["xyz"])  # under max_points
    # Cached: a second run triangulates nothing; other settings start again.
    done.clear()
    triangulate_frames(scene, [0, 1], config, on_done=lambda f, n, s: done.append(f))
    assert done == []
    triangulate_frames(scene, [1], ColmapConfig(min_angle=1.0), on_done=lambda f, n, s: done.append(f))
    assert done == [1] and not (tmp_path / "points" / "frame_00000.npz").exists()


def test_monocular_scene_is_triangulated_across_time(tmp_path):
    cams = rig(16, 160, 120)
    n = len(cams)
    images = {}
    for f, cam in enumerate(cams):  # one (moving) camera per frame, static scene
        rel = f"frames/{cam.name}/{f:05d}.png"
        save_png(tmp_path / rel, render(cam, (0, 0, 0)))
        images[cam.name] = [rel if g == f else None for g in range(n)]
    names = [c.name for c in cams]
    scene = PreparedScene(tmp_path, "mono", "test", cams, np.arange(n) / n, list(range(n)),
                          names[::2], names[1::2], images)
    scene.points = write_point_clouds(scene, list(range(n)), ColmapConfig(max_views=4))
    merged = scene.load_points("merged")
    assert len(merged["xyz"]) > 50
    assert np.median(surface_distance(merged["xyz"], (0, 0, 0))) < 0.01 * EXTENT
    # 8 training views, at most 4: every 2nd (frames 0, 4, 8, 12); a point's time is its views' mean.
    assert merged["time"].min() >= 0.0 and merged["time"].max() <= 12 / 16 + 1e-6
    assert set(np.unique(merged["frame"])) <= set(range(13))
    assert scene.points["frames"] == {"0": "points/frame_00000.npz"}


def test_voxel_average_and_downsampling_rule():
    xyz = np.array([[0.0, 0, 0], [0.01, 0, 0], [0.5, 0, 0]], np.float32)
    rgb = np.array([[0, 0, 0], [100, 50, 10], [7, 7, 7]], np.uint8)
    p, c = voxel_average(xyz, rgb, 0.1)
    order = np.argsort(p[:, 0])
    assert np.allclose(p[order], [[0.005, 0, 0], [0.5, 0, 0]]) and np.array_equal(c[order], [[50, 25, 5], [7, 7, 7]])
    grid = np.stack(np.meshgrid(*[np.arange(30) * 0.01] * 3), -1).reshape(-1, 3).astype(np.float32)  # 27000 pts
    same, _ = downsample(grid, np.zeros_like(grid, np.uint8), ColmapConfig(max_points=30000))
    assert len(same) == 27000
    small, _ = downsample(grid, np.zeros_like(grid, np.uint8), ColmapConfig(max_points=1000))
    # voxel 0.02 leaves 15^3 = 3375 > 1000 points, then 0.03 on those leaves 10^3
    assert len(small) == 1000


def test_triangulation_needs_two_training_views(tmp_path):
    cams = rig(2, 64, 48)
    scene = make_scene(tmp_path, cams, [(0, 0, 0)])
    with pytest.raises(Exception, match="needs 2"):
        triangulate_frames(scene, [0])


def test_a_worker_whose_parent_died_writes_nothing(tmp_path):
    """A frame job carries the pid of the process that asked for it; a worker left behind by a
    kill -9 (its parent pid is another) neither triangulates nor writes."""
    job = FrameJob(0, str(tmp_path), ("a.png", "b.png"), ({}, {}), (0.0, 0.0), str(tmp_path / "frame.npz"),
                   str(tmp_path / "work"), ColmapConfig().triangulation_key(), 1, parent=os.getppid() + 1)
    assert run_frame_job(job) == (0, -1, 0.0)
    assert not (tmp_path / "frame.npz").exists()
