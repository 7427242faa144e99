"""Run store: content keys, resume rules, tidy results table, atomic writes."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from moegs_bench.bench import store
from moegs_bench.bench.store import (
    RESULT_COLUMNS,
    RunId,
    RunStore,
    RunStoreError,
    code_fingerprint,
    code_version,
    content_key,
    notes,
    read_results_table,
    results,
    scene_fingerprint,
    write_results_table,
)
from moegs_bench.data.scene import (
    Camera,
    PreparedScene,
    frame_times,
    intrinsics,
    look_at,
    write_scene,
)
from moegs_bench.errors import ConfigError, SceneFormatError

HOST = {"python": "3.x", "torch": "n/a", "device": "cpu"}


def _scene(root: Path, frames: int = 2) -> Path:
    """A tiny prepared scene with two cameras and fake image bytes (never decoded)."""
    cams = [
        Camera(f"cam{i}", intrinsics(8, 6, 60.0), look_at([i, 0, -3], [0, 0, 0]), 8, 6)
        for i in range(2)
    ]
    images = {}
    for cam in cams:
        images[cam.name] = []
        for f in range(frames):
            rel = f"frames/{cam.name}/{f:04d}.png"
            (root / rel).parent.mkdir(parents=True, exist_ok=True)
            (root / rel).write_bytes(b"x" * (10 + f))
            images[cam.name].append(rel)
    scene = PreparedScene(
        root=root,
        name="toy",
        dataset="synthetic",
        cameras=cams,
        times=frame_times(frames),
        frame_ids=list(range(frames)),
        train_cameras=["cam0"],
        test_cameras=["cam1"],
        images=images,
    )
    write_scene(scene)
    return root


def _finish(
    store_: RunStore,
    rid: RunId,
    key: str,
    metrics: dict,
    note: dict | None = None,
    timings: dict | None = None,
):
    run = store_.begin(rid, key, {"lr": 1e-3}, host=HOST)
    run.save_timings(timings or {"train": 12.5, "eval": 1.0})
    run.save_summary(metrics, note or {})
    run.complete()
    return run


# -- keys --------------------------------------------------------------------------------------
def test_content_key_changes_only_with_inputs():
    cfg = {"expert": {"lr": 1e-3, "iters": 100}, "seed": 0}
    k = content_key(cfg, "data1", "code1")
    assert len(k) == 16 and int(k, 16) >= 0
    reordered = {"seed": 0, "expert": {"iters": 100, "lr": 1e-3}}
    assert content_key(reordered, "data1", "code1") == k
    assert content_key({**cfg, "seed": 1}, "data1", "code1") != k
    assert content_key({"expert": {"lr": 2e-3, "iters": 100}, "seed": 0}, "data1", "code1") != k
    assert content_key(cfg, "data2", "code1") != k
    assert content_key(cfg, "data1", "code2") != k


def test_content_key_accepts_paths_numpy_and_rejects_objects():
    k1 = content_key({"root": Path("/a/b"), "n": np.int64(3), "w": np.array([1.0, 2.0])}, "d", "c")
    k2 = content_key({"root": "/a/b", "n": 3, "w": [1.0, 2.0]}, "d", "c")
    assert k1 == k2
    with pytest.raises(ConfigError, match="not JSON-serialisable"):
        content_key({"f": object()}, "d", "c")


def test_code_version_tracks_source(tmp_path):
    pkg = tmp_path / "pkg"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "a.py").write_text("x = 1\n")
    (pkg / "sub" / "b.py").write_text("y = 2\n")
    (pkg / "README.md").write_text("docs")
    v1 = code_fingerprint(root=pkg)  # no modules named: the whole package
    assert v1.startswith(store.__version__ + "+src.")
    assert code_version(pkg).startswith(v1)  # outside git: no failure
    (pkg / "README.md").write_text("other docs")  # not code: same fingerprint
    assert code_fingerprint(root=pkg) == v1 and code_version(pkg).startswith(v1)
    (pkg / "sub" / "b.py").write_text("y = 3\n")
    assert code_fingerprint(root=pkg) != v1
    assert code_version(pkg).startswith(code_fingerprint(root=pkg))
    assert code_version().startswith(store.__version__)


def test_scene_fingerprint(tmp_path):
    root = _scene(tmp_path / "scene")
    fp = scene_fingerprint(root)
    assert fp == scene_fingerprint(root) and len(fp) == 16
    (root / "frames/cam1/0001.png").write_bytes(b"y" * 11)  # same size: not detected (by design)
    assert scene_fingerprint(root) == fp
    (root / "frames/cam1/0001.png").write_bytes(b"y" * 99)
    fp2 = scene_fingerprint(root)
    assert fp2 != fp
    meta = json.loads((root / "scene.json").read_text())
    meta["meta"] = {"note": "changed"}
    (root / "scene.json").write_text(json.dumps(meta))
    assert scene_fingerprint(root) != fp2
    (root / "frames/cam0/0000.png").unlink()
    with pytest.raises(SceneFormatError, match="0000.png"):
        scene_fingerprint(root)
    with pytest.raises(SceneFormatError, match="scene.json"):
        scene_fingerprint(tmp_path / "nowhere")


# -- runs and resume ---------------------------------------------------------------------------
def test_run_layout_and_files(tmp_path):
    st = RunStore(tmp_path / "runs")
    rid = RunId("n3v", "coffee_martini", "stg", "default", 2)
    run = st.begin(rid, "k1", {"lr": 1e-3, "out": Path("x")})
    assert run.dir == tmp_path / "runs/n3v/coffee_martini/stg/default/seed2"
    cfg = run.load_config()
    assert cfg["key"] == "k1" and cfg["seed"] == 2 and cfg["config"] == {"lr": 1e-3, "out": "x"}
    assert cfg["code_version"].startswith(store.__version__)
    assert {"python", "torch", "device"} <= set(cfg["host"]) and cfg["created_at"]
    run.save_timings({"train": 3.0})
    run.save_per_image(
        [
            {"camera": "cam00", "frame": 0, "psnr": 30.0},
            {"camera": "cam00", "frame": 1, "psnr": 31.0, "ssim": 0.9},
        ]
    )
    per = run.load_per_image()
    assert list(per.columns) == ["camera", "frame", "psnr", "ssim"] and len(per) == 2
    assert np.isnan(per["ssim"][0]) and per["psnr"].tolist() == [30.0, 31.0]
    run.save_summary({"psnr": 30.5, "num_gaussians": 1000}, {"lpips": "unavailable: offline"})
    assert run.load_summary() == {
        "metrics": {"psnr": 30.5, "num_gaussians": 1000.0},
        "notes": {"lpips": "unavailable: offline"},
    }
    ckpt = run.checkpoint_path("experts/stg.pt")
    assert ckpt == run.dir / "checkpoints/experts/stg.pt" and ckpt.parent.is_dir()
    with pytest.raises(ValueError):
        run.checkpoint_path("../escape.pt")
    assert not run.is_complete
    run.complete()
    assert run.is_complete and run.completed_at()


def test_bad_values_are_rejected(tmp_path):
    run = RunStore(tmp_path).begin(RunId("d", "s", "m"), "k", {}, host=HOST)
    with pytest.raises(ValueError, match="psnr"):
        run.save_summary({"psnr": float("nan")})
    with pytest.raises(ValueError, match="negative"):
        run.save_timings({"train": -1.0})
    with pytest.raises(ValueError, match="camera"):
        run.save_per_image([{"frame": 0, "psnr": 1.0}])
    with pytest.raises(ValueError, match="summary.json"):
        run.complete()
    for bad in [dict(dataset="a/b"), dict(scene=""), dict(method=".."), dict(seed=-1)]:
        args = {"dataset": "d", "scene": "s", "method": "m", **bad}
        with pytest.raises(ConfigError):
            RunId(**args)


def test_find_reuses_only_completed_runs_with_same_key(tmp_path):
    st = RunStore(tmp_path)
    rid = RunId("d", "s", "m")
    assert st.find(rid, "k1") is None and st.state(rid, "k1") == "missing"
    run = st.begin(rid, "k1", {"a": 1}, host=HOST)
    run.save_summary({"psnr": 20.0})
    assert st.find(rid, "k1") is None and st.state(rid, "k1") == "incomplete"  # never completed
    run.complete()
    found = st.find(rid, "k1")
    assert (
        found is not None
        and found.dir == run.dir
        and found.load_summary()["metrics"]["psnr"] == 20.0
    )
    assert st.find(rid, "k2") is None and st.state(rid, "k2") == "stale"  # other key
    assert st.find(RunId("d", "s", "m", seed=1), "k1") is None  # other seed


def test_begin_starts_fresh(tmp_path):
    st = RunStore(tmp_path)
    rid = RunId("d", "s", "m")
    old = _finish(st, rid, "k1", {"psnr": 20.0})
    old.checkpoint_path("model.pt").write_bytes(b"old")
    new = st.begin(rid, "k1", {"a": 2}, host=HOST)  # --force: same key, still fresh
    assert new.dir == old.dir
    assert sorted(p.name for p in new.dir.iterdir()) == ["config.json"]
    assert st.find(rid, "k1") is None


def test_corrupt_config_is_not_reused(tmp_path):
    st = RunStore(tmp_path)
    rid = RunId("d", "s", "m")
    run = _finish(st, rid, "k1", {"psnr": 20.0})
    (run.dir / "config.json").write_text("{broken")
    assert st.find(rid, "k1") is None


# -- tidy results ------------------------------------------------------------------------------
def test_results_table(tmp_path):
    st = RunStore(tmp_path)
    for seed in (0, 1):
        _finish(
            st,
            RunId("tech", "birthday", "stg", "default", seed),
            "k",
            {"psnr": 30.0 + seed, "ssim": 0.9, "num_gaussians": 5e4},
            {"lpips": "unavailable: no weights"},
        )
    _finish(
        st,
        RunId("tech", "birthday", "moe", "n3", 0),
        "k",
        {"psnr": 33.0},
        timings={"train_seconds": 7.0},
    )
    st.begin(RunId("tech", "train", "stg", "default", 0), "k", {}, host=HOST)  # unfinished
    df = results(tmp_path)
    assert list(df.columns) == RESULT_COLUMNS
    # stg: 3 metrics + train/eval timings, two seeds; moe: psnr + one timing
    assert len(df) == 2 * 5 + 2
    assert set(df["scene"]) == {"birthday"}
    stg0 = df[(df.method == "stg") & (df.seed == 0)].set_index("metric")["value"]
    assert stg0.to_dict() == {
        "eval_seconds": 1.0,
        "num_gaussians": 5e4,
        "psnr": 30.0,
        "ssim": 0.9,
        "train_seconds": 12.5,
    }
    moe = df[df.method == "moe"]
    assert set(moe.metric) == {"psnr", "train_seconds"} and set(moe.variant) == {"n3"}
    assert df["seed"].dtype == np.int64 and df["value"].dtype == np.float64
    assert (df["key"] == "k").all() and df["completed_at"].notna().all()
    nt = notes(tmp_path)
    assert len(nt) == 2 and set(nt["note"]) == {"unavailable: no weights"}


def test_results_empty_and_corrupt(tmp_path):
    df = results(tmp_path / "none")
    assert list(df.columns) == RESULT_COLUMNS and len(df) == 0
    st = RunStore(tmp_path)
    good = _finish(st, RunId("d", "s", "good"), "k", {"psnr": 2.0})
    run = _finish(st, RunId("d", "s", "m"), "k", {"psnr": 1.0})
    for name, text in [("summary.json", "[]"), ("summary.json", '{"metrics": {"psnr": "x"}}'),
                       ("timings.json", "[1, 2]"), ("config.json", "{broken"), ("config.json", "[]")]:
        run.save_summary({"psnr": 1.0})
        run.save_timings({"train": 1.0})
        (run.dir / "config.json").write_text(json.dumps({"key": "k"}))
        (run.dir / name).write_text(text)
        with pytest.warns(store.StateWarning, match=f"skipped run {run.dir}: .*{name}"):
            df = results(tmp_path)
        assert set(df["run_dir"]) == {str(good.dir)}, name  # the rest is still reported
        with pytest.warns(store.StateWarning, match=name):
            assert set(notes(tmp_path)["run_dir"]) <= {str(good.dir)}
        assert st.state(run.run_id, "k") == "unreadable" and st.find(run.run_id, "k") is None, name
        assert run.problem() is not None and name in run.problem()
    assert good.problem() is None and st.state(good.run_id, "k") == "done"


def test_a_folder_that_names_no_run_is_skipped(tmp_path):
    _finish(RunStore(tmp_path), RunId("d", "s", "m"), "k", {"psnr": 1.0})
    odd = tmp_path / "d" / "s" / "m" / "default" / "seedx"
    odd.mkdir()
    (odd / "DONE").write_text("now\n")
    with pytest.warns(store.StateWarning, match="seedx"):
        assert len(results(tmp_path)) == 3  # psnr and two timings of the one real run


def test_unreadable_analysis_is_left_out_and_measured_again(tmp_path):
    run = _finish(RunStore(tmp_path), RunId("d", "s", "m"), "k", {"psnr": 1.0})
    run.save_analysis("mdc", {"mdc": 0.5}, {"frames": 2})
    run.save_analysis("tracks", {"speed": 1.5}, {})
    assert run.load_analysis("mdc", {"frames": 2})["metrics"] == {"mdc": 0.5}
    (run.dir / "analysis" / "mdc.json").write_text('{"settings": {"frames": 2}, "metrics": {"mdc": "x"}')
    with pytest.warns(store.StateWarning, match="mdc.json"):
        assert run.load_analysis("mdc", {"frames": 2}) is None  # so the analysis runs again
    with pytest.warns(store.StateWarning, match="mdc.json"):
        df = results(tmp_path)
    assert "speed" in set(df["metric"]) and "mdc" not in set(df["metric"])  # the run stays


def test_write_results_table_is_atomic_and_roundtrips(tmp_path):
    st = RunStore(tmp_path)
    _finish(st, RunId("d", "NA", "m"), "k", {"psnr": 25.0}, {"lpips": "unavailable: x"})
    path = write_results_table(tmp_path)
    assert path == tmp_path / "results.csv"
    back, nt = read_results_table(tmp_path)
    pd.testing.assert_frame_equal(
        back[["scene", "metric", "value"]],
        results(tmp_path)[["scene", "metric", "value"]],
        check_dtype=False,
    )
    assert back["scene"].tolist()[0] == "NA" and nt["note"].tolist() == ["unavailable: x"]
    leftovers = [p for p in tmp_path.rglob("*") if p.name.endswith(".tmp")]
    assert leftovers == []
    with pytest.raises(RunStoreError, match="results.csv"):
        read_results_table(tmp_path / "elsewhere")


def test_a_truncated_results_table_is_refused_and_rebuilt(tmp_path):
    st = RunStore(tmp_path)
    for m in ("a", "b"):
        _finish(st, RunId("d", "s", m), "k", {"psnr": 25.0, "ssim": 0.9})
    path = write_results_table(tmp_path)
    whole = path.read_text()
    for cut in (len(whole) - 1, whole.index("\n", len(whole) // 2) + 20, len(whole) // 3):
        path.write_text(whole[:cut])
        with pytest.raises(RunStoreError, match="results.csv"):
            read_results_table(tmp_path)
    lines = whole.splitlines(keepends=True)
    path.write_text(lines[0] + lines[1].split(",")[0] + ",s,a,default,0,psnr,,x\n")  # row lost its value
    with pytest.raises(RunStoreError, match=r"results.csv:2: incomplete row"):
        read_results_table(tmp_path)
    write_results_table(tmp_path)  # rebuilt from the runs
    assert path.read_text() == whole and len(read_results_table(tmp_path)[0]) == 8
