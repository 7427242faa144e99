"""Unreadable stored state: a damaged summary, config, model, router, training state or results
table is named in one line and skipped (`report`) or rebuilt (`run`), never a traceback, and a
run without its DONE marker is never reported."""

from __future__ import annotations

import shutil
import zipfile
from pathlib import Path

import pytest
import torch

from moegs_bench.bench.store import DONE_FILE, read_results_table, results
from moegs_bench.io import torch_file_problem

from .conftest import Outcome, assert_one_line_error, cli, run_status

pytestmark = pytest.mark.usefixtures("one_thread")

ITERS = 3
RUN = ["--experts", "static,stg", "--set", f"train.iterations={ITERS}", "--router", "vapr",
       "--router-set", "iterations=3"]


def run_dir(runs: Path, method: str) -> Path:
    variant = "static+stg" if method.startswith("moe-") else "default"
    return runs / "synthetic" / "mixed" / method / variant / "seed0"


def rerun(scene: Path, runs: Path) -> Outcome:
    return cli("run", "--scene", scene, *RUN, "--runs", runs)


def one_warning(out: Outcome, *must_contain: str) -> str:
    """Exit 0 and exactly one stderr line, a warning containing every string given."""
    assert out.code == 0, out.err
    assert "Traceback" not in out.err and len(out.error_lines) == 1, out.err
    line = out.error_lines[0]
    assert line.startswith("warning: "), line
    for text in must_contain:
        assert str(text) in line, f"{text!r} not in {line!r}"
    return line


def assert_valid(runs: Path, method: str) -> None:
    """The run is complete and everything `report` and the router stage read is readable."""
    d = run_dir(runs, method)
    assert (d / DONE_FILE).is_file()
    rows = results(runs)
    assert (rows[rows["run_dir"] == str(d)]["metric"] == "psnr").sum() == 1
    for model in (d / "checkpoints").glob("*.pt"):
        assert torch_file_problem(model) is None, model


@pytest.fixture(scope="module")
def trained(tiny_scene_dir, tmp_path_factory) -> Path:
    """A store with both experts, the baselines and the router trained (copied by each test)."""
    runs = tmp_path_factory.mktemp("trained") / "runs"
    out = rerun(tiny_scene_dir, runs)
    assert out.code == 0 and out.err == "", out.err
    return runs


@pytest.fixture
def runs(trained, tmp_path) -> Path:
    dst = tmp_path / "runs"
    shutil.copytree(trained, dst)
    return dst


def damaged_zip(src: Path) -> bytes:
    """`src` (a torch archive) with one byte of its largest record flipped: it still unpickles,
    only the record's checksum tells."""
    data = bytearray(src.read_bytes())
    with zipfile.ZipFile(src) as z:
        info = max(z.infolist(), key=lambda i: i.file_size)
    name_len = int.from_bytes(data[info.header_offset + 26:info.header_offset + 28], "little")
    extra_len = int.from_bytes(data[info.header_offset + 28:info.header_offset + 30], "little")
    data[info.header_offset + 30 + name_len + extra_len + info.file_size // 2] ^= 0xFF
    return bytes(data)


def damage(path: Path, how: str) -> None:
    whole = path.read_bytes()
    path.write_bytes({"garbage": b"not a checkpoint\n" * 8, "truncated": whole[:len(whole) // 2],
                      "flipped": damaged_zip(path) if how == "flipped" else b""}[how])


# -- report ------------------------------------------------------------------------------------
@pytest.mark.parametrize("name, text", [("summary.json", "{\"metrics\": {\"psnr\": 1"),
                                        ("config.json", ""), ("timings.json", "[1, 2]")])
def test_report_names_an_unreadable_run_and_shows_the_rest(runs, name, text):
    bad = run_dir(runs, "stg")
    (bad / name).write_text(text)
    out = cli("report", "--runs", runs, "--format", "csv")
    one_warning(out, "skipped run", bad, name)
    methods = [line.split(",")[0].split(" [")[0] for line in out.out.splitlines()[1:] if line]
    assert "static" in methods and "stg" not in methods and "moe-vapr (static+stg)" in methods


def test_report_of_a_store_with_no_readable_run_fails_naming_each(runs):
    for d in {p.parent for p in runs.rglob("summary.json")}:
        (d / "summary.json").write_text("oops")
    out = cli("report", "--runs", runs)
    assert out.code == 2 and "Traceback" not in out.err
    warnings = [line for line in out.error_lines if line.startswith("warning: skipped run")]
    assert len(warnings) == 6 and out.error_lines[-1].startswith("error: ") and len(out.error_lines) == 7


# -- run ---------------------------------------------------------------------------------------
def test_run_trains_again_an_expert_whose_summary_is_unreadable(tiny_scene_dir, runs):
    bad = run_dir(runs, "stg")
    (bad / "summary.json").write_text("{")
    out = rerun(tiny_scene_dir, runs)
    one_warning(out, "stored run", bad, "summary.json", "running it again")
    assert run_status(out, "stg") == "trained" and run_status(out, "static") == "reused"
    assert_valid(runs, "stg")


@pytest.mark.parametrize("how", ["garbage", "truncated", "flipped"])
def test_an_unreadable_expert_model_is_trained_again_before_the_router_stage(tiny_scene_dir, runs, how):
    model = run_dir(runs, "static") / "checkpoints" / "model.pt"
    damage(model, how)
    out = rerun(tiny_scene_dir, runs)
    one_warning(out, "stored run", model, "running it again")
    assert run_status(out, "static") == "trained" and run_status(out, "stg") == "reused"
    assert run_status(out, "moe-vapr") == "reused"  # same expert keys: the mixture is still valid
    for method in ("static", "stg", "moe-vapr"):
        assert_valid(runs, method)


def test_an_unreadable_router_is_trained_again(tiny_scene_dir, runs):
    router = run_dir(runs, "moe-vapr") / "checkpoints" / "router.pt"
    damage(router, "truncated")
    out = rerun(tiny_scene_dir, runs)
    one_warning(out, "stored run", router)
    assert run_status(out, "moe-vapr") == "trained"
    assert_valid(runs, "moe-vapr")


def real_train_state(scene: Path, path: Path) -> None:
    """A genuine resumable state of the static expert after one of ITERS steps."""
    from moegs_bench.data.load import load_scene
    from moegs_bench.experts.registry import expert_config, get_expert
    from moegs_bench.train.loop import train_expert

    data = load_scene(scene, torch.device("cpu"))
    cfg = expert_config("static", "tiny", {"train": {"iterations": ITERS}})
    expert = get_expert("static").from_scene(data, cfg, torch.Generator().manual_seed(0))
    train_expert(expert, data, state_path=path, max_steps=1)


@pytest.mark.parametrize("how", ["garbage", "truncated", "flipped"])
def test_an_unreadable_training_state_is_set_aside_and_training_restarts(tiny_scene_dir, runs, tmp_path, how):
    d = run_dir(runs, "static")
    (d / DONE_FILE).unlink()  # interrupted: the next run resumes it from its training state
    state = d / "checkpoints" / "train_state.pt"
    real_train_state(tiny_scene_dir, state)
    assert torch.load(state, weights_only=False)["step"] == 1
    damage(state, how)
    bad = state.read_bytes()
    if how == "flipped":  # unpickling alone would take it: only the checksums tell
        assert torch.load(state, weights_only=False)["step"] == 1
    out = rerun(tiny_scene_dir, runs)
    one_warning(out, state, "train_state.pt.unreadable", "step 0")
    assert run_status(out, "static") == "trained"
    assert not state.exists() and state.with_name("train_state.pt.unreadable").read_bytes() == bad
    assert_valid(runs, "static")
    assert results(runs).query("method == 'static' and metric == 'iterations'")["value"].tolist() == [ITERS]


def test_a_truncated_results_table_is_not_read_and_is_rebuilt(tiny_scene_dir, runs):
    table = runs / "results.csv"
    whole = table.read_text()
    table.write_text(whole[: len(whole) // 2])
    with pytest.raises(Exception, match="results.csv"):
        read_results_table(runs)
    out = cli("report", "--runs", runs)  # built from the runs, not from the table
    assert out.code == 0 and out.err == "" and "moe-vapr" in out.out
    out = rerun(tiny_scene_dir, runs)
    assert out.code == 0 and out.err == "" and run_status(out, "static") == "reused"
    back, _ = read_results_table(runs)
    assert len(back) == len(results(runs)) and set(back["method"]) == set(results(runs)["method"])


def test_a_run_without_its_marker_is_never_reported_and_is_done_again(tiny_scene_dir, runs):
    d = run_dir(runs, "stg")
    (d / DONE_FILE).unlink()  # everything else is there: a half-valid run
    (d / ".summary.json.x1y2.tmp").write_text("{\"metrics\": {")  # an interrupted write
    out = cli("report", "--runs", runs, "--format", "csv")
    assert out.code == 0 and out.err == ""
    assert not any(line.startswith("stg") for line in out.out.splitlines())
    out = rerun(tiny_scene_dir, runs)
    assert out.code == 0 and out.err == "" and run_status(out, "stg") == "trained"
    assert_valid(runs, "stg")


def test_an_unknown_table_or_no_store_is_one_line(tmp_path, runs):
    assert_one_line_error(cli("report", "--runs", runs, "--table", "nope"), "nope")
    assert_one_line_error(cli("report", "--runs", tmp_path / "none"), "--runs", "none")


def test_an_unreadable_finished_segment_is_trained_again(tiny_scene_dir, tmp_path):
    """A segmented expert interrupted after its segments were trained keeps the readable ones
    and trains a damaged one again (library path: the dataset file chooses segments)."""
    import warnings

    from moegs_bench.bench.harness import run_expert
    from moegs_bench.bench.store import RunStore
    from moegs_bench.data.load import load_scene
    from moegs_bench.errors import StateWarning

    data = load_scene(tiny_scene_dir, torch.device("cpu"), with_gt=True)
    store = RunStore(tmp_path / "runs")
    kw = {"overrides": {"train": {"iterations": 2}}, "segment_frames": len(data.times) // 2, "save_renders": False}
    first = run_expert("static", data, store, **kw)
    segments = first.run.dir / "checkpoints" / "segments"
    assert first.metrics["segments"] == 2 and (segments / "00.pt").is_file() and (segments / "01.pt").is_file()
    (first.run.dir / DONE_FILE).unlink()
    damage(segments / "01.pt", "truncated")
    kept = (segments / "00.pt").stat().st_mtime_ns
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        again = run_expert("static", data, store, **kw)
    msgs = [str(w.message) for w in caught if issubclass(w.category, StateWarning)]
    assert len(msgs) == 1 and "01.pt" in msgs[0] and "training the segment again" in msgs[0]
    assert (segments / "00.pt").stat().st_mtime_ns == kept  # the readable segment was reused
    assert torch_file_problem(segments / "01.pt") is None and again.run.is_complete
