"""Reliability of prepared scenes: faults in a prepared scene (named in one line by `run`,
mended by a re-run of `prepare`), stale inputs (a re-run redoes exactly the steps whose inputs
changed, and nothing else), and kill -9 during frame extraction, COLMAP and the final write
(a re-run completes the scene; nothing half-written is ever taken as valid).

Scenes are tiny N3V replicas (4 cameras x 2 frames, 96x72, textured so COLMAP finds points).
"""

from __future__ import annotations

import json
import os
import shutil

import numpy as np
import pytest

from moegs_bench.data.images import read_image
from moegs_bench.data.scene import read_scene
from moegs_bench.errors import SceneFormatError

from .conftest import assert_one_line_error, cli
from .kill import assert_killed, cli_process_killed
from .raw_replicas import n3v_rig, rewrite_video, textured, write_n3v_scene

FRAMES = 2


def prepare_args(root, *extra):
    return ("prepare", "n3v", "--src", root / "raw", "--out", root / "out", "--resolution", "full",
            "--workers", "1", "--colmap-workers", "1", *extra)


def prepare(root, *extra):
    outcome = cli(*prepare_args(root, *extra))
    assert outcome.code == 0, outcome.err
    return outcome


def run_on(scene, runs):
    """`moegs-bench run` on a prepared scene (fails at loading for every fault here)."""
    return cli("run", "--scene", scene, "--device", "cpu", "--runs", runs, "--experts", "static")


def assert_no_run_stored(runs):
    assert not list(runs.rglob("summary.json")) if runs.exists() else True


MARK_NS = 946_684_800_000_000_000  # 2000-01-01: no file written by a run carries this mtime


def mark(folder) -> dict[str, int]:
    """Set every file's mtime to MARK_NS; returns the stamps. A file written afterwards (to a
    temporary file, renamed into place) has a current mtime, so it shows in `changed`."""
    for p in folder.rglob("*"):
        if p.is_file():
            os.utime(p, ns=(MARK_NS, MARK_NS))
    return stamps(folder)


def stamps(folder) -> dict[str, int]:
    return {str(p.relative_to(folder)): p.stat().st_mtime_ns for p in sorted(folder.rglob("*")) if p.is_file()}


def changed(before, after, prefix="") -> set[str]:
    """Files under `prefix` written, made or removed between two stamps."""
    return {k for k in set(before) | set(after) if k.startswith(prefix) and before.get(k) != after.get(k)}


def psnr(a, b) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float("inf") if mse == 0 else 10 * np.log10(255.0**2 / mse)


def assert_complete(scene_root, tint: dict | None = None):
    """A valid scene whose every image is its camera's frame (tint per camera, default 0) and
    whose merged cloud is the union of its frame clouds."""
    scene = read_scene(scene_root)
    rig = {c.name: c for c in n3v_rig(4)}
    for cam in scene.cameras:
        for f in range(scene.num_frames):
            want = textured(rig[cam.name], 0.15 * f, (tint or {}).get(cam.name, 0))
            assert psnr(read_image(scene.image_path(cam.name, f)), want) >= 35
    if scene.points:
        merged = scene.load_points("merged")["xyz"]
        assert len(merged) == sum(len(scene.load_points(f"frame:{f}")["xyz"]) for f in range(scene.num_frames))
        assert len(merged) > 20
    return scene


def steps(scene_root) -> dict:
    return json.loads((scene_root / "prepare.json").read_text())["steps"]


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    """raw/toy and out/toy, prepared with COLMAP (read-only: tests copy it)."""
    root = tmp_path_factory.mktemp("prepared")
    write_n3v_scene(root / "raw" / "toy", cams=4, frames=FRAMES)
    prepare(root)
    return root


@pytest.fixture
def work(prepared, tmp_path):
    """A private copy of `prepared` (mtimes kept), re-run once at its new place."""
    dst = tmp_path / "w"
    shutil.copytree(prepared, dst)
    prepare(dst)
    return dst


@pytest.fixture
def fresh(tmp_path):
    """raw/toy only, nothing prepared yet."""
    write_n3v_scene(tmp_path / "raw" / "toy", cams=4, frames=FRAMES)
    return tmp_path


# -- faults in a prepared scene -------------------------------------------------------------------------
def test_missing_frame_is_named_by_run_and_refilled_by_prepare(work):
    root = work / "out" / "toy"
    (root / "frames" / "cam01" / "00001.png").unlink()
    assert_one_line_error(run_on(root, work / "runs"), "frames/cam01/00001.png", "file is missing",
                          "images.cam01[1]")
    assert_no_run_stored(work / "runs")
    before = mark(root)
    outcome = prepare(work)
    assert "frames cam01: complete" in outcome.out
    after = stamps(root)
    # only the lost image (and scene.json, prepare.json) were written; the points were reused
    assert changed(before, after, "frames/") == {"frames/cam01/00001.png"}
    assert not changed(before, after, "points/")
    assert_complete(root)


def test_truncated_frame_is_named_by_run_and_made_again(work):
    root = work / "out" / "toy"
    victim = root / "frames" / "cam02" / "00000.png"
    good = victim.read_bytes()
    victim.write_bytes(good[: len(good) // 2])
    assert_one_line_error(run_on(root, work / "runs"), "frames/cam02/00000.png", "unreadable image")
    assert_no_run_stored(work / "runs")
    outcome = prepare(work)
    assert "frames cam02: complete" in outcome.out and "changed on disk" in outcome.out
    assert victim.read_bytes() == good
    assert_complete(root)


def test_bad_scene_json_field_is_named_and_rewritten_by_prepare(work):
    root = work / "out" / "toy"
    obj = json.loads((root / "scene.json").read_text())
    obj["cameras"][1]["K"] = [[1.0, 2.0], [3.0, 4.0]]
    (root / "scene.json").write_text(json.dumps(obj))
    assert_one_line_error(run_on(root, work / "runs"), "scene.json", "cameras[1].K", "3x3")
    before = mark(root)
    prepare(work)
    after = stamps(root)
    assert changed(before, after) == {"scene.json"}
    assert_complete(root)


def test_reflected_camera_in_scene_json_is_named(work):
    root = work / "out" / "toy"
    obj = json.loads((root / "scene.json").read_text())
    obj["cameras"][2]["w2c"][0][:3] = [-v for v in obj["cameras"][2]["w2c"][0][:3]]
    (root / "scene.json").write_text(json.dumps(obj))
    assert_one_line_error(run_on(root, work / "runs"), "scene.json", "cameras[2].w2c", "camera cam02",
                          "reflection")
    assert_no_run_stored(work / "runs")


def test_garbled_scene_json_is_named(work):
    root = work / "out" / "toy"
    (root / "scene.json").write_text('{"format": "moegs-scene", ')
    assert_one_line_error(run_on(root, work / "runs"), "scene.json", "invalid JSON")
    prepare(work)
    assert_complete(root)


def test_missing_point_cloud_is_named_and_remade(work):
    root = work / "out" / "toy"
    (root / "points" / "merged.npz").unlink()
    assert_one_line_error(run_on(root, work / "runs"), "points/merged.npz", "file is missing",
                          "points.merged")
    before = mark(root)
    outcome = prepare(work)
    assert "points: update" in outcome.out
    after = stamps(root)
    assert not changed(before, after, "points/frame_") and not changed(before, after, "frames/")
    assert_complete(root)


def test_folder_without_scene_json_is_not_a_scene(work):
    root = work / "out" / "toy"
    (root / "scene.json").unlink()
    assert_one_line_error(run_on(root, work / "runs"), "--scene", "no scene.json")
    before = mark(root)
    prepare(work)
    assert changed(before, stamps(root)) == {"scene.json"}


def test_a_scene_prepare_did_not_make_is_left_alone(fresh):
    root = fresh / "out" / "toy"
    root.mkdir(parents=True)
    (root / "scene.json").write_text("{}")
    outcome = cli(*prepare_args(fresh))
    assert_one_line_error(outcome, str(root), "did not make", "--out")
    assert (root / "scene.json").read_text() == "{}" and sorted(root.iterdir()) == [root / "scene.json"]


@pytest.mark.parametrize("record, reason", [
    ("not json at all", "prepare.json is unreadable"),
    ('{"version": 1, "dataset": "n3v", "frames": [0, 1]}', "prepare.json has no step fingerprints"),
])
def test_unusable_prepare_json_redoes_every_step(work, record, reason):
    """An unreadable record, or one of an older prepare without fingerprints, cannot vouch for
    anything: every step is made again."""
    root = work / "out" / "toy"
    (root / "prepare.json").write_text(record)
    before = mark(root)
    outcome = prepare(work)
    assert f"frames of 4 cameras (cam00, ...): redo ({reason}" in outcome.out
    assert f"points: redo ({reason}" in outcome.out
    after = stamps(root)
    assert changed(before, after, "frames/") == {k for k in before if k.startswith("frames/")}
    assert all(s["state"] == "done" for s in steps(root).values())
    assert_complete(root)


# -- stale inputs ----------------------------------------------------------------------------------------
def test_unchanged_inputs_redo_nothing(work):
    root = work / "out" / "toy"
    before = mark(root)
    outcome = prepare(work)
    assert "toy: up to date (reused frames of 4 camera(s), points)" in outcome.out
    assert stamps(root) == before  # not even scene.json or prepare.json is rewritten


def test_moved_raw_folder_redoes_nothing(prepared, tmp_path):
    """Inputs are named relative to the raw scene and compared by content: a copy elsewhere
    (mtimes kept) is the same input; only scene.json's recorded source changes."""
    dst = tmp_path / "moved"
    shutil.copytree(prepared, dst)
    root = dst / "out" / "toy"
    before = mark(root)
    outcome = prepare(dst)
    assert "toy: scene.json written; reused frames of 4 camera(s), points" in outcome.out
    assert changed(before, stamps(root)) == {"scene.json", "prepare.json"}  # the new source
    assert read_scene(root).meta["source"] == str((dst / "raw" / "toy").resolve())


def test_replaced_video_redoes_its_frames_and_the_points(work):
    root = work / "out" / "toy"
    rewrite_video(work / "raw" / "toy" / "cam01.mp4", n3v_rig(4)[1], FRAMES, tint=40)
    before = mark(root)
    outcome = prepare(work)
    assert "frames cam01: redo (cam01.mp4 changed" in outcome.out
    assert "points: redo (frames/cam01 changed)" in outcome.out
    after = stamps(root)
    assert changed(before, after, "frames/") == {f"frames/cam01/{f:05d}.png" for f in range(FRAMES)}
    assert changed(before, after, "points/frame_") == {f"points/frame_{f:05d}.npz" for f in range(FRAMES)}
    assert_complete(root, tint={"cam01": 40})


def test_corrected_poses_redo_the_points_not_the_frames(fresh):
    """Poses first shifted by 0.5 along world x, then corrected: the frames stay, the points are
    triangulated again with the corrected poses (they move back by the shift)."""
    poses = fresh / "raw" / "toy" / "poses_bounds.npy"
    good = np.load(poses)
    wrong = good.copy()
    wrong[:, 3] += 0.5  # row-major 3x5: element 3 is the x of the camera centre
    np.save(poses, wrong)
    prepare(fresh)
    root = fresh / "out" / "toy"
    old = read_scene(root).load_points("merged")["xyz"]
    np.save(poses, good)
    before = mark(root)
    outcome = prepare(fresh)
    assert "cameras: update (poses_bounds.npy changed" in outcome.out
    assert "points: redo (cameras changed)" in outcome.out
    after = stamps(root)
    assert not changed(before, after, "frames/")
    assert changed(before, after, "points/frame_") == {f"points/frame_{f:05d}.npz" for f in range(FRAMES)}
    scene = assert_complete(root)
    new = scene.load_points("merged")["xyz"]
    assert abs(float(np.median(old[:, 0]) - np.median(new[:, 0])) - 0.5) < 0.02
    for got, want in zip(scene.cameras, n3v_rig(4), strict=True):
        assert np.allclose(got.center, want.center, atol=1e-5)


def test_touched_video_redoes_its_frames_but_not_the_points(work):
    """A new modification time alone is a change for a video (its cheap hash does not see the
    middle), but the frames come out identical, so the points are kept."""
    video = work / "raw" / "toy" / "cam02.mp4"
    st = video.stat()
    os.utime(video, ns=(st.st_atime_ns, st.st_mtime_ns + 5_000_000_000))
    root = work / "out" / "toy"
    before = mark(root)
    outcome = prepare(work)
    assert "frames cam02: redo (cam02.mp4 changed (modification time))" in outcome.out
    assert "reused frames of 3 camera(s), points" in outcome.out and "points: redo" not in outcome.out
    after = stamps(root)
    assert changed(before, after, "frames/") == {f"frames/cam02/{f:05d}.png" for f in range(FRAMES)}
    assert not changed(before, after, "points/")


def test_new_resolution_redoes_every_frames_step(work):
    root = work / "out" / "toy"
    outcome = prepare(work, "--resolution", "48x36", "--no-colmap")
    assert "frames of 4 cameras (cam00, ...): redo (settings changed: size [96, 72] -> [48, 36])" in outcome.out
    scene = read_scene(root)
    assert read_image(scene.image_path("cam03", 1)).shape == (36, 48, 3) and scene.points == {}


def test_more_colmap_frames_keep_the_clouds_already_made(fresh):
    prepare(fresh, "--colmap-frames", "0:1")
    root = fresh / "out" / "toy"
    assert sorted(read_scene(root).points["frames"]) == ["0"]
    before = mark(root)
    outcome = prepare(fresh)
    assert "points: update (other frames selected (--colmap-frames))" in outcome.out
    after = stamps(root)
    assert "points/frame_00000.npz" not in changed(before, after) and "points/frame_00001.npz" in after
    assert_complete(root)


# -- kill -9 --------------------------------------------------------------------------------------------
def test_kill_during_frame_extraction_then_rerun_resumes(fresh):
    root = fresh / "out" / "toy"
    assert_killed(cli_process_killed(*prepare_args(fresh), at="moegs_bench.data.extract:save_png", calls=3,
                                     after=True))
    assert not (root / "scene.json").exists()
    with pytest.raises(SceneFormatError, match="scene.json is missing"):
        read_scene(root)
    assert_one_line_error(run_on(root, fresh / "runs"), "no scene.json")
    assert all(s["state"] == "started" for s in steps(root).values())
    written = mark(root / "frames")
    assert len(written) == 3
    outcome = prepare(fresh)
    assert "resume (interrupted earlier" in outcome.out
    assert {k: v for k, v in stamps(root / "frames").items() if k in written} == written  # kept
    assert_complete(root)


def test_kill_during_extraction_then_a_new_video_redoes_that_camera(fresh):
    """cam01's first frame was written from the old video when the process died; the video is
    then replaced. The half-made step is not resumed: all of cam01 comes from the new video."""
    root = fresh / "out" / "toy"
    assert_killed(cli_process_killed(*prepare_args(fresh), at="moegs_bench.data.extract:save_png", calls=3,
                                     after=True))
    assert (root / "frames" / "cam01" / "00000.png").is_file()
    rewrite_video(fresh / "raw" / "toy" / "cam01.mp4", n3v_rig(4)[1], FRAMES, tint=40)
    outcome = prepare(fresh)
    assert "frames cam01: redo (cam01.mp4 changed" in outcome.out
    assert_complete(root, tint={"cam01": 40})


def test_kill_while_redoing_a_prepared_scene_leaves_it_invalid_until_rerun(work):
    """A complete scene whose video changed is being redone when the process dies: its old
    scene.json is gone (it listed images now half replaced), so `run` refuses the folder."""
    root = work / "out" / "toy"
    rewrite_video(work / "raw" / "toy" / "cam01.mp4", n3v_rig(4)[1], FRAMES, tint=40)
    assert_killed(cli_process_killed(*prepare_args(work), at="moegs_bench.data.extract:save_png", calls=1,
                                     after=True))
    assert not (root / "scene.json").exists()
    assert steps(root)["frames/cam01"]["state"] == "started"
    assert_one_line_error(run_on(root, work / "runs"), "no scene.json")
    assert_no_run_stored(work / "runs")
    outcome = prepare(work)
    assert "frames cam01: resume" in outcome.out and "points: redo (frames/cam01 changed)" in outcome.out
    assert_complete(root, tint={"cam01": 40})


def test_kill_inside_an_image_write_leaves_only_a_temp_file(fresh):
    """Killed between writing an image's bytes and renaming it into place: the half-written
    file is a hidden temp file, never an image of the scene; the re-run removes it."""
    root = fresh / "out" / "toy"
    assert_killed(cli_process_killed(*prepare_args(fresh), at="os:fsync", calls=5))
    temps = list((root / "frames").rglob(".*.tmp"))
    assert temps, sorted(root.rglob("*"))
    prepare(fresh)
    assert not list(root.rglob("*.tmp"))
    assert_complete(root)


def test_kill_during_colmap_then_rerun_keeps_the_finished_clouds(fresh):
    root = fresh / "out" / "toy"
    assert_killed(cli_process_killed(*prepare_args(fresh), at="moegs_bench.data.colmap_init:save_npz",
                                     calls=1, after=True))
    assert not (root / "scene.json").exists()
    assert steps(root)["points"]["state"] == "started"
    assert all(s["state"] == "done" for name, s in steps(root).items() if name.startswith("frames/"))
    first = mark(root / "points")["frame_00000.npz"]
    outcome = prepare(fresh)
    assert "points: resume" in outcome.out
    assert stamps(root / "points")["frame_00000.npz"] == first
    assert_complete(root)


def test_kill_at_the_start_of_a_triangulation_then_rerun_cleans_up(fresh):
    root = fresh / "out" / "toy"
    assert_killed(cli_process_killed(*prepare_args(fresh), at="moegs_bench.data.colmap_init:triangulate_views",
                                     calls=2))
    assert list(root.glob(".colmap-*")), "the killed run's COLMAP work folder"
    prepare(fresh)
    assert not list(root.glob(".colmap-*"))
    assert_complete(root)


def test_kill_before_scene_json_then_rerun_only_writes_it(fresh):
    root = fresh / "out" / "toy"
    assert_killed(cli_process_killed(*prepare_args(fresh), at="moegs_bench.data.prepare_steps:write_scene"))
    assert not (root / "scene.json").exists()
    before = mark(root)
    outcome = prepare(fresh)
    assert "scene.json written; reused frames of 4 camera(s), points" in outcome.out
    assert changed(before, stamps(root)) <= {"scene.json", "prepare.json"}
    assert_complete(root)


def test_kill_during_colmap_then_corrected_poses_redo_every_cloud(fresh, tmp_path):
    """The cloud of frame 0 was triangulated with wrong poses before the kill; after the poses
    are corrected none of it is kept: the result equals a clean preparation."""
    poses = fresh / "raw" / "toy" / "poses_bounds.npy"
    good = np.load(poses)
    wrong = good.copy()
    wrong[:, 3] += 0.5
    np.save(poses, wrong)
    assert_killed(cli_process_killed(*prepare_args(fresh), at="moegs_bench.data.colmap_init:save_npz",
                                     calls=1, after=True))
    np.save(poses, good)
    outcome = prepare(fresh)
    assert "points: redo (cameras changed)" in outcome.out
    clean = tmp_path / "clean"
    shutil.copytree(fresh / "raw", clean / "raw")
    prepare(clean)
    for f in range(FRAMES):
        a = read_scene(fresh / "out" / "toy").load_points(f"frame:{f}")["xyz"]
        b = read_scene(clean / "out" / "toy").load_points(f"frame:{f}")["xyz"]
        # COLMAP numbers points in no fixed order and varies by ~1e-3: nearest neighbours; a
        # cloud kept from the wrong poses would lie 0.5 away
        dist = np.linalg.norm(a[:, None] - b[None], axis=-1)
        assert abs(len(a) - len(b)) <= 0.1 * len(b)
        assert dist.min(1).max() < 0.05 and dist.min(0).max() < 0.05
