"""HyperNeRF raw layout: camera json, warp-id times, the two split rules, rgb/<k>x, errors."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from moegs_bench.cli.prepare import prepare
from moegs_bench.data.formats.hypernerf import (
    camera_json,
    read_camera_json,
    read_hypernerf,
    split_indices,
)
from moegs_bench.data.raw_writers import write_hypernerf
from moegs_bench.data.scene import Camera, look_at, read_scene
from moegs_bench.errors import SceneFormatError

W, H = 24, 16


def moving_camera(n: int) -> list[Camera]:
    """One camera swaying in front of the origin, off-centre principal point, fy != fx."""
    cams = []
    for f in range(n):
        eye = [np.sin(f * 0.4), 0.2 * np.cos(f * 0.7), -3.0]
        K = np.array([[22.0, 0, 12.5], [0, 22.5, 7.5], [0, 0, 1]])
        cams.append(Camera(f"{f:06d}", K, look_at(eye, [0, 0, 0]), W, H))
    return cams


def image(f: int) -> np.ndarray:
    return np.random.default_rng(f).integers(0, 256, (H, W, 3)).astype(np.uint8)


def make_replica(path, n: int, val: bool, warp_offset: int = 0):
    cams = moving_camera(n)
    views = [(c.name, c, f + warp_offset, image(f)) for f, c in enumerate(cams)]
    train = [c.name for f, c in enumerate(cams) if f % 4 == 0]
    test = [c.name for f, c in enumerate(cams) if f % 4 == 2] if val else []
    write_hypernerf(path, views, train, test, near=1.0, far=5.0)
    return cams


def test_camera_json_round_trip(tmp_path):
    cam = moving_camera(3)[2]
    (tmp_path / "c.json").write_text(json.dumps(camera_json(cam)))
    back = read_camera_json(tmp_path / "c.json", cam.name)
    assert np.allclose(back.K, cam.K) and np.allclose(back.w2c, cam.w2c, atol=1e-12)
    centred = read_camera_json(tmp_path / "c.json", cam.name, centered_principal_point=True)
    assert np.allclose(centred.K[:2, 2], [W / 2, H / 2])


def test_split_rule_without_val_ids():
    assert split_indices(10) == ([0, 4, 8], [2, 6])
    assert split_indices(13) == ([0, 4, 8, 12], [2, 6, 10])


def test_round_trip_with_val_ids_full_resolution(tmp_path):
    cams = make_replica(tmp_path / "raw" / "chicken", 12, val=True)
    res = CliRunner().invoke(prepare, ["hypernerf", "--src", str(tmp_path / "raw"), "--out", str(tmp_path / "out"),
                                       "--resolution", "full", "--no-colmap"])
    assert res.exit_code == 0, res.output
    scene = read_scene(tmp_path / "out" / "chicken")
    assert scene.train_cameras == ["000000", "000004", "000008"]
    assert scene.test_cameras == ["000002", "000006", "000010"]
    assert scene.frame_ids == [0, 2, 4, 6, 8, 10]  # warp ids of the images used
    assert np.allclose(scene.times, np.array(scene.frame_ids) / 12)  # warp / (max warp + 1)
    for f in scene.frame_ids:
        cam = cams[f]
        got = scene.camera(cam.name)
        assert np.allclose(got.K, cam.K, rtol=1e-5) and np.allclose(got.w2c, cam.w2c, atol=1e-6)
        row = scene.frame_ids.index(f)
        assert [n for n in scene.images if scene.images[n][row] is not None] == [cam.name]
        assert np.array_equal(np.asarray(Image.open(scene.image_path(cam.name, row))), image(f))
    assert scene.meta["near"] == 1.0 and scene.meta["far"] == 5.0


def test_half_resolution_reads_rgb_2x_and_rule_split(tmp_path):
    cams = make_replica(tmp_path / "broom", 13, val=False, warp_offset=0)
    res = CliRunner().invoke(prepare, ["hypernerf", "--src", str(tmp_path / "broom"), "--out", str(tmp_path / "out"),
                                       "--no-colmap"])  # default resolution 0.5 -> rgb/2x
    assert res.exit_code == 0, res.output
    scene = read_scene(tmp_path / "out" / "broom")
    assert scene.meta["rgb"] == "rgb/2x" and scene.meta["split_rule"].startswith("every 4th")
    assert scene.train_cameras == ["000000", "000004", "000008", "000012"]
    assert scene.test_cameras == ["000002", "000006", "000010"]
    got = scene.camera("000004")
    assert (got.width, got.height) == (W // 2, H // 2)
    assert np.allclose(got.K, cams[4].scaled(W // 2, H // 2).K)
    row = scene.frame_ids.index(4)
    want = image(4).astype(float).reshape(H // 2, 2, W // 2, 2, 3).mean((1, 3))
    assert np.abs(np.asarray(Image.open(scene.image_path("000004", row))) - want).max() <= 0.5


def test_frames_and_segments_over_warp_ids(tmp_path):
    make_replica(tmp_path / "banana", 16, val=True)
    raw = read_hypernerf(tmp_path / "banana", frames=(4, 12))
    assert raw.frame_ids == [4, 6, 8, 10] and raw.train_cameras == ["000004", "000008"]
    res = CliRunner().invoke(prepare, ["hypernerf", "--src", str(tmp_path), "--out", str(tmp_path / "out"),
                                       "--segment", "8", "--no-colmap", "--resolution", "full"])
    assert res.exit_code == 0, res.output
    seg1 = read_scene(tmp_path / "out" / "banana" / "seg01")
    assert seg1.frame_ids == [8, 10, 12, 14] and np.allclose(seg1.times, [0, 0.25, 0.5, 0.75])
    assert seg1.train_cameras == ["000008", "000012"] and len(seg1.cameras) == 4


def test_errors_name_file_and_field(tmp_path):
    make_replica(tmp_path / "s", 8, val=False)
    (tmp_path / "s" / "camera" / "000004.json").write_text(json.dumps({"orientation": np.eye(3).tolist()}))
    with pytest.raises(SceneFormatError, match=r"000004.json: position: missing field"):
        read_hypernerf(tmp_path / "s")
    (tmp_path / "s" / "rgb" / "2x" / "000000.png").unlink()
    with pytest.raises(SceneFormatError, match=r"2x/000000.png: file is missing"):
        read_hypernerf(tmp_path / "s")
    meta = json.loads((tmp_path / "s" / "metadata.json").read_text())
    meta["000000"]["warp_id"] = "zero"
    (tmp_path / "s" / "metadata.json").write_text(json.dumps(meta))
    with pytest.raises(SceneFormatError, match=r"metadata.json: 000000.warp_id"):
        read_hypernerf(tmp_path / "s")
    (tmp_path / "s" / "dataset.json").unlink()
    with pytest.raises(SceneFormatError, match="dataset.json: file is missing"):
        read_hypernerf(tmp_path / "s")
