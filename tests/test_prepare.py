"""prepare: options, segments, moegs_bench/datasets/*.toml, the datasets command, failure safety."""

from __future__ import annotations

import os

import numpy as np
import pytest
from click.testing import CliRunner

from moegs_bench.cli.prepare import datasets_cmd, prepare
from moegs_bench.data.datasets import list_datasets, load_dataset, load_dataset_file
from moegs_bench.data.fingerprints import changed_inputs, file_fingerprint
from moegs_bench.data.formats import RawScene, parse_frame_range, select_frames
from moegs_bench.data.prepare import (
    PrepareOptions,
    Resolution,
    parse_colmap_frames,
    plan_segments,
    prepare_raw_scene,
    resize_area,
)
from moegs_bench.data.scene import Camera, intrinsics, look_at, read_scene
from moegs_bench.errors import ConfigError, MoegsError, SceneFormatError


def test_resolution_parsing():
    assert Resolution.parse("full").size_for(2704, 2028) == (2704, 2028)
    assert Resolution.parse("0.5").size_for(2704, 2028) == (1352, 1014)
    assert Resolution.parse("half").downscale == 2 and Resolution.parse("0.25").downscale == 4
    assert Resolution.parse("0.3").downscale is None
    assert Resolution.parse("640x480").size_for(2704, 2028) == (640, 480)
    for bad in ("big", "0", "1.5", "10x", "-1x5"):
        with pytest.raises(ConfigError, match="--resolution"):
            Resolution.parse(bad)


def test_frame_ranges_and_colmap_frames():
    assert parse_frame_range("0:300") == (0, 300) and parse_frame_range(None) is None
    for bad in ("5", "3:3", "a:b", "-1:4"):
        with pytest.raises(ConfigError, match="--frames"):
            parse_frame_range(bad)
    assert select_frames(range(10), (2, 5), "x") == ([2, 3, 4], (2, 5))
    with pytest.raises(ConfigError, match="outside the data"):
        select_frames(range(10), (5, 11), "x")
    pick = parse_colmap_frames("10:20:5")
    assert [f for f in range(30) if pick(f)] == [10, 15]
    pick = parse_colmap_frames("3,7")
    assert [f for f in range(30) if pick(f)] == [3, 7]
    assert parse_colmap_frames("all")(123)
    with pytest.raises(ConfigError, match="--colmap-frames"):
        parse_colmap_frames("5:1")


def test_resize_area_is_the_area_mean():
    img = np.random.default_rng(0).integers(0, 256, (8, 12, 3)).astype(np.uint8)
    out = resize_area(img, (6, 4))
    want = img.astype(float).reshape(4, 2, 6, 2, 3).mean((1, 3))
    assert out.shape == (4, 6, 3) and np.abs(out - want).max() <= 0.5
    out = resize_area(img, (8, 4))  # 1.5 source columns per output pixel
    cols = img.astype(float).reshape(4, 2, 12, 3).mean(1)
    want = np.stack([(cols[:, 3 * k // 2] * (1 if k % 2 == 0 else 0.5)
                      + cols[:, 3 * k // 2 + 1] * (0.5 if k % 2 == 0 else 1)) / 1.5 for k in range(8)], 1)
    assert np.abs(out - want).max() <= 0.5 + 1e-4


def _raw(frames, cams=2, fail_at=None) -> RawScene:
    cameras = [Camera(f"cam{i:02d}", intrinsics(8, 6, 60), look_at([i, 0, -3], [0, 0, 0]), 8, 6)
               for i in range(cams)]

    def read(cam, ids):
        for f in ids:
            if f == fail_at and cam == "cam01":
                raise SceneFormatError("cam01.mp4", None, "cannot decode video")
            yield f, np.full((6, 8, 3), f % 256, np.uint8)

    return RawScene("toy", "n3v", cameras, list(frames), (frames[0], frames[-1] + 1),
                    {c.name: list(frames) for c in cameras}, ["cam01"], ["cam00"], read)


def test_plan_segments(tmp_path):
    segs = plan_segments(_raw(range(0, 120)), tmp_path, 50)
    assert [(s.frame_range, len(s.frame_ids), s.root.name) for s in segs] == [
        ((0, 50), 50, "seg00"), ((50, 100), 50, "seg01"), ((100, 120), 20, "seg02")]
    (one,) = plan_segments(_raw(range(5, 9)), tmp_path, 0)
    assert one.root == tmp_path / "toy" and one.frame_ids == [5, 6, 7, 8] and one.index is None


def test_failure_leaves_no_valid_scene_and_rerun_resumes(tmp_path):
    with pytest.raises(SceneFormatError, match="cannot decode"):
        prepare_raw_scene(_raw(range(6), fail_at=3), tmp_path, PrepareOptions(colmap=False, workers=1))
    root = tmp_path / "toy"
    assert not (root / "scene.json").exists() and (root / "frames" / "cam00" / "00005.png").is_file()
    with pytest.raises(SceneFormatError, match="scene.json is missing"):
        read_scene(root)
    prepare_raw_scene(_raw(range(6)), tmp_path, PrepareOptions(colmap=False))
    scene = read_scene(root)
    assert scene.num_frames == 6 and np.allclose(scene.times, np.arange(6) / 6)


def test_refuses_to_overwrite_a_scene_it_did_not_make(tmp_path):
    (tmp_path / "toy").mkdir()
    (tmp_path / "toy" / "scene.json").write_text("{}")
    with pytest.raises(MoegsError, match="did not make"):
        prepare_raw_scene(_raw(range(2)), tmp_path, PrepareOptions(colmap=False))


def test_colmap_frames_outside_the_scene(tmp_path):
    with pytest.raises(ConfigError, match="--colmap-frames 50:60"):
        prepare_raw_scene(_raw(range(4)), tmp_path, PrepareOptions(colmap_frames="50:60"))


def test_dataset_files_hold_the_published_settings():
    names = [d.name for d in list_datasets()]
    assert names == ["hypernerf", "n3v", "synthetic", "technicolor"]
    n3v = load_dataset("n3v")
    assert n3v.resolution == "0.5" and n3v.test_cameras == ("cam00",)
    assert set(n3v.scenes) == {"coffee_martini", "cook_spinach", "cut_roasted_beef", "flame_salmon_1",
                               "flame_steak", "sear_steak"}
    assert n3v.scenes["coffee_martini"].drop_cameras == ("cam13",)
    assert all(s.frames == (0, 300) for s in n3v.scenes.values())
    assert n3v.expert_sets[2] == ("ex4dgs", "stg") and len(n3v.expert_sets[4]) == 4
    tech = load_dataset("technicolor")
    ranges = {k: s.frames for k, s in tech.scenes.items()}
    assert ranges == {"Birthday": (151, 201), "Fabien": (51, 101), "Painter": (100, 150),
                      "Theater": (51, 101), "Train": (151, 201)}
    assert tech.test_cameras == ("cam10",) and tech.resolution == "full"
    assert tech.scenes["Birthday"].repairs == ({"camera": 9, "frame": 173, "source_frame": 172},)
    assert set(tech.experts) == {"ex4dgs", "ed3dgs", "stg"}
    hyper = load_dataset("hypernerf")
    assert hyper.find_scene("vrig-peel-banana").name == "banana" and hyper.expert_sets[2] == ("4dgs", "ed3dgs")
    for d in list_datasets():
        assert set(d.experts) <= set(d.presets)
    with pytest.raises(ConfigError, match="unknown dataset 'nope'"):
        load_dataset("nope")


def test_bad_dataset_file(tmp_path):
    path = tmp_path / "x.toml"
    path.write_text('name = "x"\nlayout = "n3v"\n[scenes.a]\nframes = "9:3"\n')
    with pytest.raises(ConfigError, match=r"scenes.a.frames"):
        load_dataset_file(path)
    path.write_text('name = "x"\nlayout = "n3v"\n[scenes.a]\nframe = "0:3"\n')
    with pytest.raises(ConfigError, match="unknown key 'frame'"):
        load_dataset_file(path)
    path.write_text('name = "x"\nlayout = "lego"\n')
    with pytest.raises(ConfigError, match="layout 'lego'"):
        load_dataset_file(path)


def test_datasets_command_lists_them():
    res = CliRunner().invoke(datasets_cmd, [], terminal_width=200)
    assert res.exit_code == 0
    for name in ("n3v", "technicolor", "hypernerf", "synthetic", "coffee_martini", "cam10"):
        assert name in res.output
    res = CliRunner().invoke(datasets_cmd, ["technicolor"], terminal_width=200)
    assert res.exit_code == 0 and "151:201" in res.output and "Birthday" in res.output


def test_prepare_group_has_the_subcommands():
    assert set(prepare.commands) == {"n3v", "technicolor", "hypernerf", "synthetic"}


def test_colmap_frames_error_comes_before_any_write(tmp_path):
    with pytest.raises(ConfigError):
        prepare_raw_scene(_raw(range(4)), tmp_path / "out", PrepareOptions(colmap_frames="50:60"))
    assert not (tmp_path / "out").exists()


def test_a_reflected_camera_from_any_reader_is_rejected_before_writing(tmp_path):
    raw = _raw(range(2), cams=3)
    w2c = raw.cameras[1].w2c.copy()
    w2c[0, :3] *= -1  # orthonormal, determinant -1
    raw.cameras[1] = Camera("cam01", raw.cameras[1].K, w2c, 8, 6)
    with pytest.raises(SceneFormatError, match="camera cam01: rotation is a reflection"):
        prepare_raw_scene(raw, tmp_path / "out", PrepareOptions(colmap=False))
    assert not (tmp_path / "out").exists()


def test_a_reader_that_names_no_files_is_extracted_on_every_run(tmp_path):
    """Without fingerprints nothing can be vouched for: the frames are made again."""
    log: list[str] = []
    prepare_raw_scene(_raw(range(2)), tmp_path, PrepareOptions(colmap=False), log=log.append)
    image = tmp_path / "toy" / "frames" / "cam00" / "00000.png"
    os.utime(image, ns=(0, 0))  # a rewritten file (renamed into place) has a current mtime
    log.clear()
    prepare_raw_scene(_raw(range(2)), tmp_path, PrepareOptions(colmap=False), log=log.append)
    assert image.stat().st_mtime_ns != 0
    assert any("redo (the reader names no input files)" in line for line in log)
    read_scene(tmp_path / "toy")


def test_file_fingerprints(tmp_path):
    path = tmp_path / "v.bin"
    data = bytearray(np.random.default_rng(0).integers(0, 256, 3 << 20, dtype=np.uint8).tobytes())
    path.write_bytes(bytes(data))
    media, content = file_fingerprint(path, exact=False), file_fingerprint(path, exact=True)
    assert media["kind"] == "media" and content["kind"] == "content" and media["size"] == 3 << 20

    def edited(offset):
        changed = bytearray(data)
        changed[offset] ^= 0xFF
        path.write_bytes(bytes(changed))
        st = path.stat()
        os.utime(path, ns=(st.st_atime_ns, media["mtime_ns"]))  # same mtime: only the bytes differ
        return file_fingerprint(path, exact=False), file_fingerprint(path, exact=True)

    for offset in (10, len(data) - 10):  # the first and the last MiB are hashed
        m, c = edited(offset)
        assert changed_inputs({"v": media}, {"v": m}) == ["v changed (content)"]
        assert changed_inputs({"v": content}, {"v": c}) == ["v changed (content)"]
    m, c = edited(len(data) // 2)  # the middle of a large media file: only mtime and size guard it
    assert changed_inputs({"v": media}, {"v": m}) == []
    assert changed_inputs({"v": content}, {"v": c}) == ["v changed (content)"]
    path.write_bytes(bytes(data))  # same bytes, new mtime: a change for media, not for content
    assert changed_inputs({"v": media}, {"v": file_fingerprint(path, False)}) == ["v changed (modification time)"]
    assert changed_inputs({"v": content}, {"v": file_fingerprint(path, True)}) == []
    assert changed_inputs({"a": media}, {"b": media}) == ["a is no longer read", "b is new"]
