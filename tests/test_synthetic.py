"""The procedural synthetic scenes: format, determinism, ground-truth geometry, motion regimes."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from moegs_bench.data.scene import read_scene
from moegs_bench.data.synthetic import (
    REGIMES,
    RIGS,
    SCENES,
    SIZES,
    SizeSpec,
    build_world,
    generate_synthetic,
    make_rig,
    render_view,
    render_views,
)
from moegs_bench.data.synthetic.world import ACTION_HI, ACTION_LO, FLOOR_Y
from moegs_bench.errors import ConfigError, SceneFormatError

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def mixed(tmp_path_factory) -> Path:
    """The default scene (mixed, n3v, tiny, seed 0), generated once for the module."""
    out = tmp_path_factory.mktemp("synthetic") / "mixed"
    generate_synthetic(out, "mixed", "n3v", "tiny", seed=0, device="cpu")
    return out


@pytest.fixture(scope="module")
def mono(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("synthetic") / "mono"
    generate_synthetic(out, "mixed", "mono", "tiny", seed=0, device="cpu")
    return out


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _depth(scene, cam: str, f: int) -> np.ndarray:
    return np.load(scene.root / scene.gt["depth"][cam][f])


def _labels(scene, cam: str, f: int) -> np.ndarray:
    return np.array(Image.open(scene.root / scene.gt["labels"][cam][f]))


def _backproject(cam, i, j, z) -> np.ndarray:
    """World points [P,3] of pixel centres (i, j) at camera depths z."""
    x = np.stack([(j + 0.5 - cam.K[0, 2]) / cam.K[0, 0] * z,
                  (i + 0.5 - cam.K[1, 2]) / cam.K[1, 1] * z, z], 1)
    return x @ cam.c2w[:3, :3].T + cam.c2w[:3, 3]


def _project(cam, X) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Pixel coordinates u, v (pixel centres at +0.5) and camera depths of world points [P,3]."""
    Y = X @ cam.w2c[:3, :3].T + cam.w2c[:3, 3]
    return Y[:, 0] / Y[:, 2] * cam.K[0, 0] + cam.K[0, 2], Y[:, 1] / Y[:, 2] * cam.K[1, 1] + cam.K[1, 2], Y[:, 2]


def test_round_trip(mixed):
    scene = read_scene(mixed)
    again = generate_synthetic(mixed, "mixed", "n3v", "tiny", seed=0)  # finished: returned as is
    assert scene.to_json() == {**again.to_json(), "meta": scene.meta}
    spec = SIZES["tiny"]
    assert scene.num_frames == spec.frames and len(scene.cameras) == spec.n3v_cameras
    assert scene.test_cameras == ["cam00"] and "cam00" not in scene.train_cameras
    assert np.allclose(scene.times, np.arange(spec.frames) / spec.frames)
    assert scene.gt["regimes"] == list(REGIMES) and scene.meta["seed"] == 0
    image = np.array(Image.open(scene.image_path("cam03", 5)))
    assert image.shape == (spec.height, spec.width, 3) and image.dtype == np.uint8
    assert image.std() > 20  # textured, not flat


def test_deterministic_and_resumable(mixed, tmp_path):
    """An interrupted generation leaves no scene.json; resuming it gives the same bytes as an
    uninterrupted one (so the same seed gives the same files)."""
    out = tmp_path / "again"

    def stop(done, total):
        if done >= total // 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        generate_synthetic(out, "mixed", "n3v", "tiny", seed=0, progress=stop)
    with pytest.raises(SceneFormatError):
        read_scene(out)
    calls = []
    generate_synthetic(out, "mixed", "n3v", "tiny", seed=0, progress=lambda d, t: calls.append((d, t)))
    assert calls[-1][0] == calls[-1][1] == 6 * 8
    assert _files(out) == _files(mixed)
    with pytest.raises(ConfigError, match="seed=1"):
        generate_synthetic(out, "mixed", "n3v", "tiny", seed=1)


def test_seed_changes_scene():
    a, b = build_world("mixed", 0), build_world("mixed", 1)
    assert not np.allclose(a.poses(np.array([0.3]))[0], b.poses(np.array([0.3]))[0])
    assert np.array_equal(a.poses(np.linspace(0, 1, 5))[0], build_world("mixed", 0).poses(np.linspace(0, 1, 5))[0])


def test_every_pixel_has_finite_depth(mixed):
    scene = read_scene(mixed)
    for cam, f in [(c.name, f) for c in scene.cameras for f in range(scene.num_frames)]:
        d = _depth(scene, cam, f)
        assert d.dtype == np.float32 and d.shape == (scene.cameras[0].height, scene.cameras[0].width)
        assert np.all(np.isfinite(d)) and d.min() > 0.5


def _reprojection_error(src, depth_src, mask_src, dst, depth_dst, mask_dst) -> np.ndarray:
    """Relative depth error [P] of src pixels in mask_src, back-projected through depth_src and
    seen by dst at a pixel in mask_dst, against the depth dst reports there."""
    i, j = np.nonzero(mask_src)
    X = _backproject(src, i, j, depth_src[i, j].astype(np.float64))
    u, v, z = _project(dst, X)
    inside = (u >= 0) & (u < dst.width) & (v >= 0) & (v < dst.height) & (z > 0)
    ui, vi = np.floor(u[inside]).astype(int), np.floor(v[inside]).astype(int)
    keep = mask_dst[vi, ui]
    return np.abs(depth_dst[vi, ui][keep] - z[inside][keep]) / z[inside][keep]


def test_depth_consistent_across_cameras(mixed):
    """Static pixels of cam00 back-projected through their depth land, in another camera, where
    that camera reports the same depth (up to pixel discretisation at 64x48 and occlusions)."""
    scene = read_scene(mixed)
    src = scene.camera("cam00")
    for other, f in [("cam03", 0), ("cam05", 6), ("cam01", 3)]:
        rel = _reprojection_error(src, _depth(scene, "cam00", f), _labels(scene, "cam00", f) == 0,
                                  scene.camera(other), _depth(scene, other, f), _labels(scene, other, f) == 0)
        assert len(rel) > 1000
        assert np.median(rel) < 0.01 and (rel < 0.03).mean() > 0.8, (other, f)


def test_depth_consistent_at_higher_resolution():
    """The same at 256x192 on background pixels seen by both cameras: all agree within 3%."""
    world = build_world("mixed", 0)
    cams = make_rig("n3v", SizeSpec(256, 192, 8, 6, 16, 10)).cameras
    a, b = render_views(world, [cams[0], cams[5]], 0.75, device="cpu")
    rel = _reprojection_error(cams[0], a.depth.numpy(), a.object_ids.numpy() == -1,
                              cams[5], b.depth.numpy(), b.object_ids.numpy() == -1)
    assert len(rel) > 10000 and np.median(rel) < 0.003 and (rel < 0.03).mean() > 0.99


def test_labels_cover_every_regime(mixed):
    scene = read_scene(mixed)
    seen = set()
    for c in scene.cameras:
        for f in range(scene.num_frames):
            seen |= set(np.unique(_labels(scene, c.name, f)).tolist())
    assert seen == set(range(len(REGIMES)))


def test_regimes_move_as_named(mixed):
    scene = read_scene(mixed)
    with np.load(mixed / scene.gt["trajectories"]) as z:
        traj = {k: z[k] for k in z.files}
    O, F = len(traj["names"]), scene.num_frames
    assert traj["centres"].shape == (O, F, 3) and traj["quats"].shape == (O, F, 4)
    assert traj["scales"].shape == (O, F, 3)
    step = np.linalg.norm(np.diff(traj["centres"], axis=1), axis=-1).mean(1)  # [O] per frame
    by = {r: step[traj["regime_ids"] == i] for i, r in enumerate(REGIMES)}
    assert np.all(by["static"] == 0) and by["fast"].min() > 3 * by["smooth"].max() > 0
    assert np.all(traj["quats"][traj["regime_ids"] == 0] == traj["quats"][traj["regime_ids"] == 0][:, :1])
    shape = traj["scales"] / traj["scales"][:, :1]
    nonrigid = traj["regime_ids"] == REGIMES.index("nonrigid")
    assert np.ptp(shape[nonrigid], axis=1).max() > 0.2  # anisotropic scaling over time
    assert np.all(shape[~nonrigid] == 1)


def test_abrupt_motion_turns_sharply():
    world = build_world("abrupt", 0)
    centres = world.poses(np.linspace(0, 1, 401))[0]
    for path in centres:
        vel = np.diff(path, axis=0)
        cos = (vel[1:] * vel[:-1]).sum(-1) / (np.linalg.norm(vel[1:], axis=-1) * np.linalg.norm(vel[:-1], axis=-1))
        assert cos.min() < math.cos(math.radians(90)) and np.median(cos) > 0.999  # straight, then a turn


@pytest.mark.parametrize("scene", SCENES)
def test_scene_composition(scene):
    """Regime scenes are made of their regime; mixed has every regime; objects stay inside the
    action volume (above the floor) for the whole clip."""
    world = build_world(scene, 7)
    regimes = [o.regime for o in world.objects]
    if scene == "mixed":
        assert set(regimes) == set(REGIMES)
    else:
        assert regimes.count(scene) > len(regimes) / 2
    centres, _, scales = world.poses(np.linspace(0, 1, 101))
    for obj, c, s in zip(world.objects, centres, scales, strict=True):
        r = (s.max(-1) if obj.kind == "sphere" else np.linalg.norm(s, axis=-1))[:, None]
        assert np.all(c - r >= ACTION_LO - 1e-9) and np.all(c + r <= ACTION_HI + 1e-9), obj.name
    assert ACTION_HI[1] <= FLOOR_Y


def test_static_scene_renders_identical_frames():
    world = build_world("static", 3)
    cam = make_rig("technicolor", "tiny").cameras[10]
    a, b = render_view(world, cam, 0.0, device="cpu"), render_view(world, cam, 0.875, device="cpu")
    assert torch.equal(a.rgb, b.rgb) and torch.equal(a.depth, b.depth)
    moving = build_world("fast", 3)
    assert not torch.equal(render_view(moving, cam, 0.0).labels, render_view(moving, cam, 0.5).labels)


def test_textures_move_with_objects():
    """Textures are attached to the objects: a moving object keeps its colours."""
    world = build_world("smooth", 0)
    cam = make_rig("n3v", "tiny").cameras[0]
    a, b = render_view(world, cam, 0.0, device="cpu"), render_view(world, cam, 0.5, device="cpu")
    for k, obj in enumerate(world.objects):
        in_a, in_b = a.object_ids == k, b.object_ids == k
        if in_a.sum() > 30 and in_b.sum() > 30:  # visible in both: similar colour statistics
            assert torch.allclose(a.rgb[in_a].mean(0), b.rgb[in_b].mean(0), atol=0.12), obj.name


def test_points_tagged_and_on_surfaces(mixed):
    scene = read_scene(mixed)
    merged = scene.load_points("merged")
    assert set(scene.points["frames"]) == {str(f) for f in range(scene.num_frames)}
    assert len(merged["xyz"]) == scene.num_frames * SIZES["tiny"].points_per_frame
    assert np.array_equal(merged["time"], scene.times[merged["frame"]].astype(np.float32))
    noise = scene.meta["point_noise"]
    for f in (0, 7):
        pts = merged["xyz"][merged["frame"] == f].astype(np.float64)
        assert np.array_equal(pts, scene.load_points(f"frame:{f}")["xyz"])
        best = np.full(len(pts), np.inf)
        for name in scene.train_cameras:
            cam = scene.camera(name)
            u, v, z = _project(cam, pts)
            ok = (u >= 0) & (u < cam.width) & (v >= 0) & (v < cam.height)
            d = _depth(scene, name, f)[np.floor(v[ok]).astype(int), np.floor(u[ok]).astype(int)]
            best[ok] = np.minimum(best[ok], np.abs(d - z[ok]))
        assert np.mean(best < 5 * noise) > 0.95
    lo, hi = (np.array(b) for b in scene.meta["bounds"])
    assert np.all(merged["xyz"] > lo - 0.1) and np.all(merged["xyz"] < hi + 0.1)


def test_mono_split_rule(mono):
    scene = read_scene(mono)
    F = SIZES["tiny"].mono_frames
    assert [c.name for c in scene.cameras] == [f"f{f:04d}" for f in range(F)]
    assert scene.train_cameras == [f"f{f:04d}" for f in range(0, F, 4)]
    assert scene.test_cameras == [f"f{f:04d}" for f in range(2, F, 4)]
    for f, cam in enumerate(scene.cameras):
        assert [p is not None for p in scene.images[cam.name]] == [g == f for g in range(F)]
    assert sorted(int(k) for k in scene.points["frames"]) == list(range(0, F, 4))
    assert len({tuple(np.round(c.center, 6)) for c in scene.cameras}) == F  # the camera moves
    assert scene.views("train") == [(f, f) for f in range(0, F, 4)]


def test_technicolor_rig():
    rig = make_rig("technicolor", "tiny")
    assert [c.name for c in rig.cameras] == [f"cam{i:02d}" for i in range(16)]
    assert rig.test == ["cam10"] and len(rig.train) == 15
    for c in rig.cameras:
        assert np.allclose(c.w2c[:3, :3], np.eye(3))  # parallel, forward
    xs = sorted({round(float(c.center[0]), 6) for c in rig.cameras})
    ys = sorted({round(float(c.center[1]), 6) for c in rig.cameras})
    assert len(xs) == 4 and len(ys) == 4
    assert np.allclose(rig.cameras[10].center[:2], [xs[2], ys[2]])  # row-major: row 2, column 2


def test_n3v_rig_faces_centre():
    rig = make_rig("n3v", "small")
    assert len(rig.cameras) == SIZES["small"].n3v_cameras and rig.test == ["cam00"]
    world = build_world()
    for c in rig.cameras:
        centre_cam = c.w2c[:3, :3] @ world.centre + c.w2c[:3, 3]
        assert abs(centre_cam[0]) < 1e-9 and abs(centre_cam[1]) < 1e-9 and centre_cam[2] > 0
    assert abs(rig.cameras[0].center[0]) < 1e-9  # cam00 in the middle of the arc


def test_sizes():
    full = SIZES["full"]
    assert full.width >= 960 and full.height >= 720 and full.frames >= 50 and full.n3v_cameras >= 15
    assert SIZES["tiny"].width * SIZES["tiny"].height < SIZES["small"].width * SIZES["small"].height


@pytest.mark.parametrize("kwargs, option", [({"scene": "nope"}, "scene"), ({"rig": "nope"}, "rig"),
                                            ({"size": "huge"}, "size")])
def test_unknown_options(tmp_path, kwargs, option):
    valid = {"scene": SCENES, "rig": RIGS, "size": tuple(SIZES)}[option]
    with pytest.raises(ConfigError, match=option) as err:
        generate_synthetic(tmp_path / "x", **kwargs)
    assert all(v in str(err.value) for v in valid)
    assert not (tmp_path / "x").exists()


def test_refuses_foreign_folder(tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(ConfigError, match="other files"):
        generate_synthetic(tmp_path)
