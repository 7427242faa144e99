"""Reliability of `prepare` on malformed raw data (N3V, Technicolor, HyperNeRF): each fault
fails with exit status 2 and one line naming the file and the field, line or camera, and
leaves nothing that reads as a prepared scene. Faults found from headers and camera files stop
`prepare` before it writes anything; a frame that fails to decode stops it with the scene in
work left without scene.json, and a re-run with the file fixed completes it."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from moegs_bench.data.raw_writers import encode_video
from moegs_bench.data.scene import read_scene
from moegs_bench.errors import SceneFormatError

from .conftest import assert_one_line_error, cli
from .raw_replicas import (
    n3v_rig,
    technicolor_image,
    textured,
    write_hypernerf_scene,
    write_n3v_scene,
    write_technicolor_scene,
)


def prepare(fmt, src, out, *extra):
    return cli("prepare", fmt, "--src", src, "--out", out, "--no-colmap", "--resolution", "full", *extra)


def fails_before_writing(outcome, out, *must_contain) -> str:
    """One-line error, exit 2, and the output folder was never created."""
    line = assert_one_line_error(outcome, *must_contain)
    assert outcome.code == 2
    assert not out.exists(), f"{out} was written before the error: {sorted(out.rglob('*'))}"
    return line


# -- N3V -------------------------------------------------------------------------------------------
@pytest.fixture
def n3v(tmp_path):
    """raw/toy: 3 cameras x 2 frames; returns (scene folder, output folder)."""
    write_n3v_scene(tmp_path / "raw" / "toy", cams=3, frames=2)
    return tmp_path / "raw" / "toy", tmp_path / "out"


def _edit_poses(scene, edit):
    arr = np.load(scene / "poses_bounds.npy")
    edit(arr)
    np.save(scene / "poses_bounds.npy", arr)


def test_n3v_missing_poses_bounds(n3v):
    scene, out = n3v
    (scene / "poses_bounds.npy").unlink()
    fails_before_writing(prepare("n3v", scene, out), out, "poses_bounds.npy", "file is missing")


def test_n3v_garbled_poses_bounds(n3v):
    scene, out = n3v
    (scene / "poses_bounds.npy").write_bytes(b"\x93NUMPY garbage, not an array")
    fails_before_writing(prepare("n3v", scene, out), out, "poses_bounds.npy", "unreadable numpy file")


def test_n3v_poses_of_the_wrong_shape(n3v):
    scene, out = n3v
    np.save(scene / "poses_bounds.npy", np.load(scene / "poses_bounds.npy")[:, :15])
    fails_before_writing(prepare("n3v", scene, out), out, "poses_bounds.npy", "[N,17]", "[3, 15]")


def test_n3v_nan_pose_names_the_camera(n3v):
    scene, out = n3v

    def edit(arr):
        arr[1, 3] = np.nan

    _edit_poses(scene, edit)
    fails_before_writing(prepare("n3v", scene, out), out, "poses_bounds.npy", "row 1 (cam01)", "non-finite")


def test_n3v_reflected_rotation_is_rejected_at_prepare(n3v):
    scene, out = n3v

    def edit(arr):
        pose = arr[2, :15].reshape(3, 5)
        pose[:, 0] *= -1  # still orthonormal, determinant -1
        arr[2, :15] = pose.reshape(-1)

    _edit_poses(scene, edit)
    line = fails_before_writing(prepare("n3v", scene, out), out, "poses_bounds.npy", "row 2 (cam02)", "reflection")
    assert "determinant -1" in line


def test_n3v_rotation_that_is_not_orthonormal(n3v):
    scene, out = n3v

    def edit(arr):
        pose = arr[0, :15].reshape(3, 5)
        pose[:, :3] *= 1.1
        arr[0, :15] = pose.reshape(-1)

    _edit_poses(scene, edit)
    fails_before_writing(prepare("n3v", scene, out), out, "poses_bounds.npy", "row 0 (cam00)", "not orthonormal")


def test_n3v_zero_focal_length(n3v):
    scene, out = n3v

    def edit(arr):
        arr[1, 14] = 0.0  # hwf focal of row 1

    _edit_poses(scene, edit)
    fails_before_writing(prepare("n3v", scene, out), out, "poses_bounds.npy", "row 1 (cam01)", "focal")


def test_n3v_missing_video(n3v):
    scene, out = n3v
    (scene / "cam02.mp4").unlink()
    fails_before_writing(prepare("n3v", scene, out), out, "poses_bounds.npy", "3 poses", "2 cam*.mp4 videos")


def test_n3v_unreadable_video(n3v):
    scene, out = n3v
    (scene / "cam01.mp4").write_bytes(b"not a video at all")
    fails_before_writing(prepare("n3v", scene, out), out, "cam01.mp4", "unreadable video")


def test_n3v_truncated_video(n3v):
    scene, out = n3v
    data = (scene / "cam01.mp4").read_bytes()
    (scene / "cam01.mp4").write_bytes(data[: len(data) // 2])
    fails_before_writing(prepare("n3v", scene, out), out, "cam01.mp4")


def test_n3v_mismatched_frame_counts(n3v):
    scene, out = n3v
    cam = n3v_rig(3)[1]
    encode_video(scene / "cam01.mp4", [textured(cam)])  # 1 frame, the others 2
    fails_before_writing(prepare("n3v", scene, out), out, str(scene), "inconsistent frame counts", "cam01: 1")


def test_n3v_frames_beyond_the_videos(n3v):
    scene, out = n3v
    fails_before_writing(prepare("n3v", scene, out, "--frames", "0:5"), out, "cam00.mp4", "video has 2 frames")


def test_n3v_video_of_another_aspect_ratio(n3v):
    scene, out = n3v
    encode_video(scene / "cam01.mp4", [np.zeros((72, 72, 3), np.uint8)] * 2)
    fails_before_writing(prepare("n3v", scene, out), out, "cam01.mp4", "different aspect ratio")


def test_n3v_scene_too_small_for_colmap(tmp_path):
    """Two cameras (one of them the test camera) and one frame: one training view cannot be
    triangulated; found before anything is written, not after the frames are extracted."""
    write_n3v_scene(tmp_path / "raw" / "toy", cams=2, frames=1)
    out = tmp_path / "out"
    outcome = cli("prepare", "n3v", "--src", tmp_path / "raw", "--out", out, "--resolution", "full")
    fails_before_writing(outcome, out, "toy: 1 training view(s)", "triangulation needs 2", "--no-colmap")


# -- Technicolor ----------------------------------------------------------------------------------
@pytest.fixture
def tech(tmp_path):
    """raw/Toy (not a published name: all frames): 16 cameras x frames 51-53, 16x12."""
    write_technicolor_scene(tmp_path / "raw" / "Toy")
    return tmp_path / "raw" / "Toy", tmp_path / "out"


def _params_lines(scene):
    return (scene / "cameras_parameters.txt").read_text().splitlines()


def _write_params(scene, lines):
    (scene / "cameras_parameters.txt").write_text("\n".join(lines) + "\n")


def test_technicolor_missing_parameters(tech):
    scene, out = tech
    (scene / "cameras_parameters.txt").unlink()
    fails_before_writing(prepare("technicolor", scene, out), out, "cameras_parameters.txt", "file is missing")


def test_technicolor_row_with_a_missing_column(tech):
    scene, out = tech
    lines = _params_lines(scene)
    lines[3] = " ".join(lines[3].split()[:11])
    _write_params(scene, lines)
    fails_before_writing(prepare("technicolor", scene, out), out, "cameras_parameters.txt: line 4",
                         "expected 12 columns")


def test_technicolor_row_that_is_not_numbers(tech):
    scene, out = tech
    lines = _params_lines(scene)
    lines[2] = "abc " + " ".join(lines[2].split()[1:])
    _write_params(scene, lines)
    fails_before_writing(prepare("technicolor", scene, out), out, "cameras_parameters.txt: line 3",
                         "expected numbers")


def test_technicolor_zero_quaternion_names_the_camera(tech):
    scene, out = tech
    lines = _params_lines(scene)
    fields = lines[2].split()
    fields[5:9] = ["0", "0", "0", "0"]
    lines[2] = " ".join(fields)
    _write_params(scene, lines)
    fails_before_writing(prepare("technicolor", scene, out), out, "cameras_parameters.txt",
                         "line 3 (cam01)", "quaternion")


def test_technicolor_images_of_a_camera_without_parameters(tech):
    scene, out = tech
    _write_params(scene, _params_lines(scene)[:16])  # 15 camera rows, images of 16 cameras
    fails_before_writing(prepare("technicolor", scene, out), out, "cameras_parameters.txt",
                         "15 camera rows", "camera 15")


def test_technicolor_missing_image(tech):
    scene, out = tech
    (scene / "Toy_undist_00052_03.png").unlink()
    fails_before_writing(prepare("technicolor", scene, out), out, "Toy_undist_00052_03.png", "file is missing")


def test_technicolor_image_of_another_size(tech):
    scene, out = tech
    from moegs_bench.io import save_png

    save_png(scene / "Toy_undist_00053_05.png", np.zeros((10, 16, 3), np.uint8))
    fails_before_writing(prepare("technicolor", scene, out), out, "Toy_undist_00053_05.png", "16x10", "16x12")


def test_technicolor_undecodable_image_leaves_no_scene_and_rerun_completes(tech):
    """A PNG whose header reads but whose pixels do not: found while extracting, so earlier
    images exist, but the scene has no scene.json until a re-run with the file fixed."""
    scene, out = tech
    broken = scene / "Toy_undist_00052_07.png"
    good = broken.read_bytes()
    broken.write_bytes(good[: len(good) // 2])
    outcome = prepare("technicolor", scene, out, "--workers", "1")
    assert_one_line_error(outcome, "Toy_undist_00052_07.png", "unreadable image")
    root = out / "Toy"
    assert (root / "frames").is_dir() and not (root / "scene.json").exists()
    with pytest.raises(SceneFormatError, match="scene.json is missing"):
        read_scene(root)
    broken.write_bytes(good)
    again = prepare("technicolor", scene, out, "--workers", "1")
    assert again.code == 0, again.err
    assert "resume" in again.out
    prepared = read_scene(root)
    from moegs_bench.data.images import read_image

    for ci in range(16):
        for row, number in enumerate((51, 52, 53)):
            assert np.array_equal(read_image(prepared.image_path(f"cam{ci:02d}", row)), technicolor_image(ci, number))


# -- HyperNeRF ------------------------------------------------------------------------------------
@pytest.fixture
def hyper(tmp_path):
    """raw/toy: 8 views of one moving camera, val_ids given."""
    write_hypernerf_scene(tmp_path / "raw" / "toy")
    return tmp_path / "raw" / "toy", tmp_path / "out"


def _edit_json(path, edit):
    obj = json.loads(path.read_text())
    edit(obj)
    path.write_text(json.dumps(obj))


def test_hypernerf_missing_dataset_json(hyper):
    scene, out = hyper
    (scene / "dataset.json").unlink()
    fails_before_writing(prepare("hypernerf", scene, out), out, "dataset.json", "file is missing")


def test_hypernerf_garbled_metadata_json(hyper):
    scene, out = hyper
    (scene / "metadata.json").write_text('{"000000": {"warp_id": 0,')
    fails_before_writing(prepare("hypernerf", scene, out), out, "metadata.json", "invalid JSON at line 1")


def test_hypernerf_camera_without_position(hyper):
    scene, out = hyper
    _edit_json(scene / "camera" / "000004.json", lambda c: c.pop("position"))
    fails_before_writing(prepare("hypernerf", scene, out), out, "000004.json: position", "missing field")


def test_hypernerf_reflected_orientation_names_the_camera(hyper):
    scene, out = hyper

    def edit(c):
        c["orientation"][2] = [-v for v in c["orientation"][2]]

    _edit_json(scene / "camera" / "000004.json", edit)
    fails_before_writing(prepare("hypernerf", scene, out), out, "000004.json: orientation",
                         "camera 000004", "reflection")


def test_hypernerf_nan_focal_length(hyper):
    scene, out = hyper
    path = scene / "camera" / "000002.json"
    path.write_text(path.read_text().replace('"focal_length": 22.0', '"focal_length": NaN'))
    fails_before_writing(prepare("hypernerf", scene, out), out, "000002.json: focal_length", "finite")


def test_hypernerf_missing_image(hyper):
    scene, out = hyper
    (scene / "rgb" / "1x" / "000002.png").unlink()
    fails_before_writing(prepare("hypernerf", scene, out), out, "1x/000002.png", "file is missing")


def test_hypernerf_image_that_disagrees_with_its_camera(hyper):
    scene, out = hyper
    _edit_json(scene / "camera" / "000004.json", lambda c: c.update(image_size=[48, 16]))
    fails_before_writing(prepare("hypernerf", scene, out), out, "000004.png", "000004.json", "48x16")


def test_hypernerf_warp_id_that_is_not_a_number(hyper):
    scene, out = hyper
    _edit_json(scene / "metadata.json", lambda m: m["000000"].update(warp_id="zero"))
    fails_before_writing(prepare("hypernerf", scene, out), out, "metadata.json: 000000.warp_id")


def test_hypernerf_missing_image_folders(hyper):
    """Without rgb/2x the half-size default reads rgb/1x and resizes; without rgb/ at all it fails."""
    scene, out = hyper
    shutil.rmtree(scene / "rgb")
    fails_before_writing(cli("prepare", "hypernerf", "--src", scene, "--out", out, "--no-colmap"), out,
                         "rgb/1x", "image folder is missing")


# -- options and the output folder --------------------------------------------------------------------
def test_missing_source_folder(tmp_path):
    fails_before_writing(prepare("n3v", tmp_path / "nowhere", tmp_path / "out"), tmp_path / "out",
                         "--src", "nowhere")


def test_output_that_is_a_file(n3v, tmp_path):
    scene, _ = n3v
    out = tmp_path / "taken"
    out.write_text("a file")
    assert_one_line_error(prepare("n3v", scene, out), "--out", str(out))
    assert out.read_text() == "a file"


def test_output_below_a_file_is_an_os_error_in_one_line(n3v, tmp_path):
    scene, _ = n3v
    (tmp_path / "file").write_text("x")
    outcome = prepare("n3v", scene, tmp_path / "file" / "out")
    assert_one_line_error(outcome, str(tmp_path / "file"), "Not a directory")
    assert outcome.code == 2


def test_two_folders_of_one_published_scene(tmp_path):
    """banana and vrig-peel-banana are one published scene: both would go to OUT/banana."""
    write_hypernerf_scene(tmp_path / "raw" / "banana")
    write_hypernerf_scene(tmp_path / "raw" / "vrig-peel-banana")
    fails_before_writing(prepare("hypernerf", tmp_path / "raw", tmp_path / "out"), tmp_path / "out",
                         "vrig-peel-banana", "would both be prepared into", "--scenes")


def test_a_bad_scene_stops_all_before_anything_is_written(tmp_path):
    """Every selected scene is read and checked first: a fault in the second scene leaves the
    first unprepared (no half-prepared dataset)."""
    write_n3v_scene(tmp_path / "raw" / "a", cams=3, frames=2)
    write_n3v_scene(tmp_path / "raw" / "b", cams=3, frames=2)
    (tmp_path / "raw" / "b" / "cam01.mp4").write_bytes(b"junk")
    fails_before_writing(prepare("n3v", tmp_path / "raw", tmp_path / "out"), tmp_path / "out",
                         "b/cam01.mp4", "unreadable video")
