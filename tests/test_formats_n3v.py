"""N3V raw layout: LLFF pose conversion, the reader's errors, and prepare end to end on replicas."""

from __future__ import annotations

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from moegs_bench.cli.prepare import prepare
from moegs_bench.data.datasets import load_dataset
from moegs_bench.data.formats.n3v import camera_to_llff, llff_to_camera, read_n3v
from moegs_bench.data.prepare import PrepareOptions, prepare_dataset
from moegs_bench.data.raw_writers import encode_video, write_n3v
from moegs_bench.data.scene import Camera, intrinsics, look_at, read_scene
from moegs_bench.errors import ConfigError, MoegsError, SceneFormatError


def rig(n: int, w: int = 32, h: int = 24) -> list[Camera]:
    """n cameras on an arc looking at the origin (OpenCV axes, centred principal point)."""
    cams = []
    for i in range(n):
        a = np.radians(-30 + 60 * i / max(n - 1, 1))
        eye = [3 * np.sin(a), -0.3 + 0.2 * (i % 2), -3 * np.cos(a)]
        cams.append(Camera(f"cam{i:02d}", intrinsics(w, h, 60.0), look_at(eye, [0, 0, 0]), w, h))
    return cams


def pattern(ci: int, f: int, w: int = 32, h: int = 24) -> np.ndarray:
    """A deterministic smooth-ish test image for camera ci at frame f."""
    y, x = np.mgrid[0:h, 0:w]
    r = (128 + 100 * np.sin(x / 3.0 + f * 0.3 + ci)).astype(np.uint8)
    g = (128 + 100 * np.cos(y / 2.0 - f * 0.2)).astype(np.uint8)
    b = ((x * 7 + y * 5 + f * 11 + ci * 13) % 256).astype(np.uint8)
    return np.stack([r, g, b], -1)


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float("inf") if mse == 0 else 10 * np.log10(255.0**2 / mse)


def make_replica(path, cams, frames, w=32, h=24):
    return write_n3v(path, cams, frames, lambda ci, f: pattern(ci, f, w, h))


# -- pose conversion ---------------------------------------------------------------------------
def test_llff_round_trip_and_axes():
    rng = np.random.default_rng(0)
    for _i in range(5):
        eye = rng.normal(size=3) * 3
        cam = Camera("cam00", intrinsics(40, 30, 50.0), look_at(eye, rng.normal(size=3) * 0.1), 40, 30)
        back = llff_to_camera(camera_to_llff(cam), "cam00")
        assert np.allclose(back.w2c, cam.w2c, atol=1e-12) and np.allclose(back.K, cam.K)
        assert (back.width, back.height) == (40, 30)
    # Columns [down, right, back] = identity: the camera looks along world -z, x (right) is world y.
    pose = np.zeros((3, 5))
    pose[:, :3] = np.eye(3)
    pose[:, 3] = [0, 0, 5]
    pose[:, 4] = [30, 40, 50]
    cam = llff_to_camera(pose, "c")
    p_cam = cam.w2c[:3, :3] @ np.array([0.0, 1.0, 0.0]) + cam.w2c[:3, 3]  # world +y, 5 in front
    assert np.allclose(p_cam, [1, 0, 5])  # appears to the right (x), in front (z > 0)
    p_cam = cam.w2c[:3, :3] @ np.array([1.0, 0.0, 0.0]) + cam.w2c[:3, 3]
    assert np.allclose(p_cam, [0, 1, 5])  # world +x is image down
    assert np.allclose(cam.K, [[50, 0, 20], [0, 50, 15], [0, 0, 1]])


def test_camera_to_llff_rejects_what_n3v_cannot_store():
    cam = rig(1)[0]
    K = cam.K.copy()
    K[0, 2] += 1
    with pytest.raises(ValueError, match="principal point"):
        camera_to_llff(Camera("c", K, cam.w2c, cam.width, cam.height))


# -- round trip ---------------------------------------------------------------------------------
def test_round_trip_cameras_images_times_split(tmp_path):
    cams = rig(4)
    make_replica(tmp_path / "raw" / "toy", cams, 5)
    spec = load_dataset("n3v")
    out = prepare_dataset("n3v", tmp_path / "raw", tmp_path / "out", spec,
                          options=PrepareOptions(resolution="full", colmap=False))
    assert len(out) == 1
    scene = read_scene(tmp_path / "out" / "toy")
    assert [c.name for c in scene.cameras] == [c.name for c in cams]
    for got, want in zip(scene.cameras, cams, strict=True):
        assert np.allclose(got.K, want.K, rtol=1e-5)
        assert np.allclose(got.w2c[:3, :3], want.w2c[:3, :3], atol=1e-6)
        assert np.allclose(got.w2c[:3, 3], want.w2c[:3, 3], rtol=1e-5, atol=1e-6)
    assert scene.test_cameras == ["cam00"] and scene.train_cameras == ["cam01", "cam02", "cam03"]
    assert np.allclose(scene.times, np.arange(5) / 5) and scene.frame_ids == list(range(5))
    for ci, cam in enumerate(cams):
        for f in range(5):
            img = np.asarray(Image.open(scene.image_path(cam.name, f)))
            assert psnr(img, pattern(ci, f)) >= 40.0
    assert scene.points == {}


def test_half_resolution_scales_intrinsics_and_uses_area_filter(tmp_path):
    cams = rig(2)
    make_replica(tmp_path / "toy", cams, 2)
    prepare_dataset("n3v", tmp_path / "toy", tmp_path / "out", load_dataset("n3v"),
                    options=PrepareOptions(resolution="0.5", colmap=False))
    scene = read_scene(tmp_path / "out" / "toy")
    assert (scene.cameras[0].width, scene.cameras[0].height) == (16, 12)
    assert np.allclose(scene.cameras[0].K, cams[0].scaled(16, 12).K)
    img = np.asarray(Image.open(scene.image_path("cam01", 1))).astype(float)
    box = pattern(1, 1).astype(float).reshape(12, 2, 16, 2, 3).mean((1, 3))
    assert np.abs(img - box).max() <= 3  # the 2x2 mean, up to codec rounding


def test_coffee_martini_drops_cam13(tmp_path):
    make_replica(tmp_path / "raw" / "coffee_martini", rig(15, 8, 6), 2, 8, 6)
    raw = read_n3v(tmp_path / "raw" / "coffee_martini", drop_cameras=("cam13",))
    assert "cam13" not in [c.name for c in raw.cameras] and len(raw.cameras) == 14
    args = ["n3v", "--src", str(tmp_path / "raw"), "--out", str(tmp_path / "out"), "--no-colmap", "--frames", "0:2"]
    assert CliRunner().invoke(prepare, args).exit_code == 0
    scene = read_scene(tmp_path / "out" / "coffee_martini")
    assert "cam13" not in scene.images and len(scene.cameras) == 14
    assert scene.meta["dropped_cameras"] == ["cam13"]
    assert CliRunner().invoke(prepare, args + ["--keep-dropped-cameras"]).exit_code == 0
    assert "cam13" in read_scene(tmp_path / "out" / "coffee_martini").images


def test_flame_salmon_uses_the_first_300_frames(tmp_path):
    make_replica(tmp_path / "flame_salmon_1", rig(2, 8, 6), 310, 8, 6)
    prepare_dataset("n3v", tmp_path / "flame_salmon_1", tmp_path / "out", load_dataset("n3v"),
                    options=PrepareOptions(resolution="full", colmap=False))
    scene = read_scene(tmp_path / "out" / "flame_salmon_1")
    assert scene.frame_ids == list(range(300)) and np.allclose(scene.times, np.arange(300) / 300)


def test_segment_50_gives_six_scenes_from_300_frames(tmp_path):
    make_replica(tmp_path / "raw" / "cook_spinach", rig(3), 300)
    result = CliRunner().invoke(prepare, ["n3v", "--src", str(tmp_path / "raw"), "--out", str(tmp_path / "out"),
                                          "--segment", "50", "--no-colmap", "--resolution", "full"])
    assert result.exit_code == 0, result.output
    segs = sorted((tmp_path / "out" / "cook_spinach").glob("seg*"))
    assert [s.name for s in segs] == [f"seg{k:02d}" for k in range(6)]
    for k, seg in enumerate(segs):
        scene = read_scene(seg)
        assert scene.frame_ids == list(range(50 * k, 50 * k + 50))
        assert np.allclose(scene.times, np.arange(50) / 50)
        assert scene.meta["segment"] == k and scene.meta["frame_range"] == [50 * k, 50 * k + 50]
        img = np.asarray(Image.open(scene.image_path("cam01", 7)))
        assert psnr(img, pattern(1, 50 * k + 7)) >= 40.0


def test_resume_keeps_written_images_and_restores_missing(tmp_path):
    make_replica(tmp_path / "toy", rig(2), 3)
    spec, opts = load_dataset("n3v"), PrepareOptions(resolution="full", colmap=False)
    prepare_dataset("n3v", tmp_path / "toy", tmp_path / "out", spec, options=opts)
    root = tmp_path / "out" / "toy"
    kept = root / "frames" / "cam00" / "00000.png"
    lost = root / "frames" / "cam01" / "00002.png"
    stamp = kept.stat().st_mtime_ns
    lost.unlink()
    (root / "scene.json").unlink()  # as if interrupted before the end
    prepare_dataset("n3v", tmp_path / "toy", tmp_path / "out", spec, options=opts)
    assert kept.stat().st_mtime_ns == stamp and lost.is_file()
    read_scene(root)
    # Other inputs (a new resolution) start the scene afresh.
    prepare_dataset("n3v", tmp_path / "toy", tmp_path / "out", spec,
                    options=PrepareOptions(resolution="16x12", colmap=False))
    assert Image.open(kept).size == (16, 12)


# -- errors ----------------------------------------------------------------------------------------
def test_missing_poses_bounds(tmp_path):
    make_replica(tmp_path / "toy", rig(2), 2)
    (tmp_path / "toy" / "poses_bounds.npy").unlink()
    with pytest.raises(SceneFormatError, match="poses_bounds.npy"):
        read_n3v(tmp_path / "toy")


def test_pose_count_differs_from_video_count(tmp_path):
    make_replica(tmp_path / "toy", rig(3), 2)
    (tmp_path / "toy" / "cam02.mp4").unlink()
    with pytest.raises(SceneFormatError, match="3 poses but the folder has 2"):
        read_n3v(tmp_path / "toy")


def test_malformed_poses_bounds(tmp_path):
    make_replica(tmp_path / "toy", rig(2), 2)
    np.save(tmp_path / "toy" / "poses_bounds.npy", np.zeros((2, 15)))
    with pytest.raises(SceneFormatError, match=r"\[N,17\]"):
        read_n3v(tmp_path / "toy")


def test_unreadable_video(tmp_path):
    make_replica(tmp_path / "toy", rig(2), 2)
    (tmp_path / "toy" / "cam01.mp4").write_bytes(b"not a video at all")
    with pytest.raises(SceneFormatError, match="cam01.mp4.*unreadable video"):
        read_n3v(tmp_path / "toy")


def test_short_video_and_inconsistent_counts(tmp_path):
    cams = rig(2)
    make_replica(tmp_path / "toy", cams, 6)
    encode_video(tmp_path / "toy" / "cam01.mp4", [pattern(1, f) for f in range(4)])
    with pytest.raises(SceneFormatError, match="inconsistent frame counts"):
        read_n3v(tmp_path / "toy")
    with pytest.raises(SceneFormatError, match="cam01.mp4: video has 4 frames"):
        read_n3v(tmp_path / "toy", frames=(0, 6))
    raw = read_n3v(tmp_path / "toy", frames=(1, 4))
    assert raw.frame_ids == [1, 2, 3] and raw.frame_range == (1, 4)


def test_cli_errors_are_one_line_and_leave_no_scene(tmp_path):
    make_replica(tmp_path / "raw" / "toy", rig(2), 3)
    runner = CliRunner()
    res = runner.invoke(prepare, ["n3v", "--src", str(tmp_path / "raw"), "--out", str(tmp_path / "out"),
                                  "--scenes", "sear_steak", "--no-colmap"])
    assert isinstance(res.exception, ConfigError) and "unknown scene 'sear_steak'" in str(res.exception)
    res = runner.invoke(prepare, ["n3v", "--src", str(tmp_path / "raw"), "--out", str(tmp_path / "out"),
                                  "--frames", "0:10", "--no-colmap"])
    assert isinstance(res.exception, MoegsError) and "video has 3 frames" in str(res.exception)
    assert not (tmp_path / "out").exists()
    res = runner.invoke(prepare, ["n3v", "--src", str(tmp_path / "nowhere"), "--out", str(tmp_path / "out")])
    assert isinstance(res.exception, ConfigError)
