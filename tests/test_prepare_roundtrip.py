"""Round trips: synthetic scene -> raw layout (prepare synthetic --layout) -> prepare -> the
generator's cameras, images, times and splits."""

from __future__ import annotations

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from moegs_bench.cli.prepare import prepare
from moegs_bench.data.raw_writers import write_raw_layout
from moegs_bench.data.scene import read_scene
from moegs_bench.errors import ConfigError


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float("inf") if mse == 0 else 10 * np.log10(255.0**2 / mse)


def _run(args):
    res = CliRunner().invoke(prepare, [str(a) for a in args])
    assert res.exit_code == 0, f"{res.output}\n{res.exception!r}"
    return res


def _synthetic(tmp_path, rig: str, layout: str, raw_name: str, *extra):
    _run(["synthetic", "--scene", "mixed", "--rig", rig, "--size", "tiny", "--seed", "0", "--device", "cpu",
          "--out", tmp_path / "gen", "--layout", layout, "--raw-out", tmp_path / "raw" / raw_name, *extra])
    return read_scene(tmp_path / "gen")


def _same_camera(got, want):
    assert (got.width, got.height) == (want.width, want.height)
    assert np.allclose(got.K, want.K, rtol=1e-5, atol=0)
    assert np.allclose(got.w2c[:3, :3], want.w2c[:3, :3], rtol=1e-5, atol=1e-6)
    assert np.allclose(got.w2c[:3, 3], want.w2c[:3, 3], rtol=1e-5, atol=1e-6)


def _image(scene, cam, f):
    return np.asarray(Image.open(scene.image_path(cam, f)).convert("RGB"))


def test_n3v_round_trip(tmp_path):
    gen = _synthetic(tmp_path, "n3v", "n3v", "toy")
    _run(["n3v", "--src", tmp_path / "raw", "--out", tmp_path / "out", "--resolution", "full",
          "--colmap-frames", "0:2"])
    scene = read_scene(tmp_path / "out" / "toy")
    assert [c.name for c in scene.cameras] == [c.name for c in gen.cameras]
    for got, want in zip(scene.cameras, gen.cameras, strict=True):
        _same_camera(got, want)
    assert np.allclose(scene.times, gen.times) and scene.frame_ids == list(range(gen.num_frames))
    assert scene.test_cameras == gen.test_cameras == ["cam00"] and scene.train_cameras == gen.train_cameras
    worst = min(psnr(_image(scene, c.name, f), _image(gen, c.name, f))
                for c in gen.cameras for f in range(gen.num_frames))
    assert worst >= 40.0
    assert sorted(scene.points["frames"]) == ["0", "1"]  # --colmap-frames 0:2
    assert scene.load_points("merged")["xyz"].shape[1] == 3
    scene.load_points("downsampled")


def test_technicolor_round_trip(tmp_path):
    gen = _synthetic(tmp_path, "technicolor", "technicolor", "Toy", "--raw-first-frame", "51")
    _run(["technicolor", "--src", tmp_path / "raw", "--out", tmp_path / "out", "--no-colmap"])
    scene = read_scene(tmp_path / "out" / "Toy")
    assert scene.frame_ids == list(range(51, 51 + gen.num_frames))
    assert np.allclose(scene.times, gen.times)
    assert scene.test_cameras == gen.test_cameras == ["cam10"] and scene.train_cameras == gen.train_cameras
    for got, want in zip(scene.cameras, gen.cameras, strict=True):
        _same_camera(got, want)
    for c in gen.cameras:
        for f in range(gen.num_frames):
            assert np.array_equal(_image(scene, c.name, f), _image(gen, c.name, f))


@pytest.fixture(scope="module")
def mono(tmp_path_factory):
    """A tiny monocular synthetic scene, also written in the HyperNeRF layout."""
    root = tmp_path_factory.mktemp("mono")
    return _synthetic(root, "mono", "hypernerf", "toy"), root


def test_hypernerf_round_trip(mono, tmp_path):
    gen, root = mono
    _run(["hypernerf", "--src", root / "raw" / "toy", "--out", tmp_path / "out", "--resolution", "full",
          "--no-colmap"])
    scene = read_scene(tmp_path / "out" / "toy")
    assert scene.train_cameras == gen.train_cameras and scene.test_cameras == gen.test_cameras
    used = [f for f in range(gen.num_frames)
            if any(gen.images[c][f] is not None for c in gen.train_cameras + gen.test_cameras)]
    assert scene.frame_ids == used
    assert np.allclose(scene.times, gen.times[used])
    for name in scene.train_cameras + scene.test_cameras:
        _same_camera(scene.camera(name), gen.camera(name))
        row = next(i for i, p in enumerate(scene.images[name]) if p is not None)
        f = scene.frame_ids[row]
        assert np.array_equal(_image(scene, name, row), _image(gen, name, f))


def test_synthetic_layout_options_go_together(tmp_path):
    res = CliRunner().invoke(prepare, ["synthetic", "--out", str(tmp_path / "gen"), "--layout", "n3v"])
    assert res.exit_code != 0 and "--raw-out" in str(res.exception)


@pytest.mark.parametrize("layout", ["n3v", "technicolor"])
def test_monocular_scene_cannot_be_written_as_a_rig(mono, tmp_path, layout):
    with pytest.raises(ConfigError, match="monocular scene fits hypernerf"):
        write_raw_layout(mono[0], layout, tmp_path / "raw")
