"""Technicolor raw layout: cameras_parameters.txt, the published frame ranges, the broken
Birthday frame, and the reader's errors."""

from __future__ import annotations

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from moegs_bench.cli.prepare import prepare
from moegs_bench.data.formats.technicolor import (
    Repair,
    camera_to_row,
    quat_to_rotmat,
    read_technicolor,
    rotmat_to_quat,
    row_to_camera,
)
from moegs_bench.data.raw_writers import write_technicolor
from moegs_bench.data.scene import Camera, look_at, read_scene
from moegs_bench.errors import ConfigError, SceneFormatError

W, H = 16, 12


def grid_rig(w: int = W, h: int = H) -> list[Camera]:
    """A 4x4 rig of slightly toed-in cameras with off-centre principal points."""
    cams = []
    for i in range(16):
        r, c = divmod(i, 4)
        eye = np.array([(c - 1.5) * 0.3, (r - 1.5) * 0.3, -4.0])
        K = np.array([[20.0 + i * 0.1, 0, w / 2 + 0.3 * (i % 3 - 1)], [0, 20.0 + i * 0.1, h / 2 - 0.2 * (i % 2)], [0, 0, 1]])
        cams.append(Camera(f"cam{i:02d}", K, look_at(eye, [0.05 * c, 0.02 * r, 0.0]), w, h))
    return cams


def pattern(ci: int, number: int) -> np.ndarray:
    """Noise image of camera ci at file frame `number`: distinct per view, never 0 in any
    channel (so a repaired image shows which pixels came from the neighbouring frame)."""
    return np.random.default_rng(1000 * ci + number).integers(1, 256, (H, W, 3)).astype(np.uint8)


def make_replica(path, numbers, cams=None):
    cams = cams or grid_rig()
    return write_technicolor(path, cams, numbers, lambda ci, f: pattern(ci, numbers[f]))


def test_quaternion_round_trip():
    rng = np.random.default_rng(1)
    for _ in range(20):
        q = rng.normal(size=4)
        q /= np.linalg.norm(q)
        q = q if q[0] >= 0 else -q
        R = quat_to_rotmat(q)
        assert np.allclose(R @ R.T, np.eye(3)) and np.isclose(np.linalg.det(R), 1)
        assert np.allclose(rotmat_to_quat(R), q)


def test_parameters_row_round_trip_keeps_principal_point():
    for cam in grid_rig():
        back = row_to_camera(np.asarray(camera_to_row(cam)), cam.name, cam.width, cam.height)
        assert np.allclose(back.K, cam.K, rtol=1e-12) and np.allclose(back.w2c, cam.w2c, atol=1e-12)


def test_birthday_replica_picks_151_200_test_cam10_and_repairs_frame_173(tmp_path):
    numbers = list(range(149, 203))
    raw = tmp_path / "raw" / "Birthday"
    make_replica(raw, numbers)
    broken = raw / "Birthday_undist_00173_09.png"
    data = broken.read_bytes()
    broken.write_bytes(data[: len(data) // 2])  # truncated upstream
    res = CliRunner().invoke(prepare, ["technicolor", "--src", str(tmp_path / "raw"), "--out", str(tmp_path / "out"),
                                       "--scenes", "Birthday", "--no-colmap"])
    assert res.exit_code == 0, res.output
    scene = read_scene(tmp_path / "out" / "Birthday")
    assert scene.frame_ids == list(range(151, 201)) and scene.meta["frame_range"] == [151, 201]
    assert np.allclose(scene.times, np.arange(50) / 50)
    assert scene.test_cameras == ["cam10"] and len(scene.train_cameras) == 15
    for got, want in zip(scene.cameras, grid_rig(), strict=True):
        assert np.allclose(got.K, want.K, rtol=1e-5) and np.allclose(got.w2c, want.w2c, atol=1e-6)
        assert (got.width, got.height) == (W, H)
    img = np.asarray(Image.open(scene.image_path("cam05", scene.frame_ids.index(160))))
    assert np.array_equal(img, pattern(5, 160))  # PNG: lossless
    fixed = np.asarray(Image.open(scene.image_path("cam09", 173 - 151)))
    assert np.array_equal(fixed[:2], pattern(9, 173)[:2])  # what the broken file still holds
    assert np.array_equal(fixed[-1], pattern(9, 172)[-1])  # the lost part comes from frame 172


def test_frames_option_and_unknown_scene(tmp_path):
    make_replica(tmp_path / "Train", list(range(1, 6)))
    raw = read_technicolor(tmp_path / "Train", (2, 4))
    assert raw.frame_ids == [2, 3] and raw.test_cameras == ["cam10"]
    raw = read_technicolor(tmp_path / "Train")
    assert raw.frame_ids == [1, 2, 3, 4, 5] and raw.frame_range == (1, 6)
    with pytest.raises(ConfigError, match="outside the data"):
        read_technicolor(tmp_path / "Train", (151, 201))
    res = CliRunner().invoke(prepare, ["technicolor", "--src", str(tmp_path), "--out", str(tmp_path / "out"),
                                       "--scenes", "Painter", "--no-colmap"])
    assert isinstance(res.exception, ConfigError) and "unknown scene 'Painter'" in str(res.exception)
    # A published scene name with its default range that the replica does not hold.
    res = CliRunner().invoke(prepare, ["technicolor", "--src", str(tmp_path), "--out", str(tmp_path / "out"),
                                       "--no-colmap"])
    assert isinstance(res.exception, ConfigError) and "151:201" in str(res.exception)
    assert not (tmp_path / "out").exists()


def test_missing_and_malformed_parameters(tmp_path):
    scene = tmp_path / "Fabien"
    make_replica(scene, [51, 52])
    params = scene / "cameras_parameters.txt"
    text = params.read_text()
    lines = text.splitlines()
    params.write_text("\n".join(lines[:3] + [" ".join(lines[3].split()[:11])] + lines[4:]) + "\n")
    with pytest.raises(SceneFormatError, match=r"cameras_parameters.txt: line 4: expected 12 columns"):
        read_technicolor(scene)
    params.write_text(text.replace(lines[2].split()[0], "abc", 1))
    with pytest.raises(SceneFormatError, match="line 3: expected numbers"):
        read_technicolor(scene)
    params.write_text("\n".join(lines[:15]) + "\n")  # 14 camera rows, images of 16
    with pytest.raises(SceneFormatError, match="14 camera rows but images exist for camera 14"):
        read_technicolor(scene)
    params.unlink()
    with pytest.raises(SceneFormatError, match="cameras_parameters.txt: file is missing"):
        read_technicolor(scene)


def test_missing_image_is_named(tmp_path):
    scene = tmp_path / "Theater"
    make_replica(scene, [51, 52, 53])
    (scene / "Theater_undist_00052_03.png").unlink()
    with pytest.raises(SceneFormatError, match="Theater_undist_00052_03.png: file is missing"):
        read_technicolor(scene)
    with pytest.raises(SceneFormatError, match="Theater_undist_00052_03.png"):
        read_technicolor(scene, (51, 54))


def test_repair_keeps_intact_images(tmp_path):
    make_replica(tmp_path / "Birthday", [172, 173])
    raw = read_technicolor(tmp_path / "Birthday", repairs=[Repair(9, 173, 172)])
    (_, img), = list(raw.read_frames("cam09", [173]))
    assert np.array_equal(img, pattern(9, 173))
