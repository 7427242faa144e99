"""kill -9 at each phase of `run` (training, router training, evaluation, between the summary
and the DONE marker, while the results table is written): nothing half-done is reported, and
the next run resumes or redoes it and ends with complete, valid runs.

The command runs as a child process (`python -m moegs_bench` semantics) with one library
function wrapped so that its N-th call signals the test and waits: the kill then lands at a
known point, however fast or slow the machine is."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from moegs_bench.bench.store import DONE_FILE, read_results_table, results
from moegs_bench.io import torch_file_problem

from .conftest import Outcome, assert_one_line_error, cli, run_status

ITERS = 8
CHECKPOINT = 2  # the kill during training lands in step 5: the state of step 4 is on disk
ROUTER_ITERS = 12

# runs `moegs-bench ARGS` with TARGET (module:attribute) wrapped: in "pause" mode its N-th call
# (WHEN = N) or its first call with an argument ending in SUFFIX (WHEN = @SUFFIX) writes FLAG and
# sleeps (the test kills the process there); in "count" mode the number of calls is written to
# FLAG when the process exits
BOOTSTRAP = """
import atexit, importlib, os, sys, time
target, mode, when, flag = os.environ["MOEGS_TEST_WRAP"].split("|")
module, _, attr = target.partition(":")
owner = importlib.import_module(module)
*path, name = attr.split(".")
for part in path:
    owner = getattr(owner, part)
real, calls = getattr(owner, name), [0]
def reached(args):
    if when.startswith("@"):
        return any(str(a).endswith(when[1:]) for a in args)
    return calls[0] == int(when)
def wrapped(*args, **kwargs):
    calls[0] += 1
    if mode == "pause" and reached(args):
        open(flag, "w").write("reached")
        time.sleep(3600)
    return real(*args, **kwargs)
setattr(owner, name, wrapped)
if mode == "count":
    atexit.register(lambda: open(flag, "w").write(str(calls[0])))
from moegs_bench.cli import main
sys.argv = ["moegs-bench", *sys.argv[1:]]
main()
"""


def start(args, target: str, mode: str, when: int | str, flag: Path, log: Path) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MOEGS_TEST_WRAP": f"{target}|{mode}|{when}|{flag}"}
    with open(log, "w") as f:
        return subprocess.Popen([sys.executable, "-c", BOOTSTRAP, *map(str, args)], stdout=f,
                                stderr=subprocess.STDOUT, env=env)


def kill_at(args, target: str, when: int | str, tmp_path: Path, timeout: float = 240) -> None:
    """Run `moegs-bench ARGS` until the call of `target` that `when` names (the N-th, or the
    first with an argument ending in SUFFIX for "@SUFFIX"), then kill -9 it there."""
    flag, log = tmp_path / "reached", tmp_path / "killed.log"
    proc = start(args, target, "pause", when, flag, log)
    t0 = time.monotonic()
    try:
        while not flag.exists():
            if proc.poll() is not None:
                pytest.fail(f"finished before {target} was called ({when}):\n{log.read_text()}")
            if time.monotonic() - t0 > timeout:
                pytest.fail(f"{target} not reached in {timeout} s:\n{log.read_text()}")
            time.sleep(0.05)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
    assert proc.returncode == -signal.SIGKILL


def run_counting(args, target: str, tmp_path: Path) -> tuple[Outcome, int]:
    """Run `moegs-bench ARGS` to the end; (its outcome, how many times `target` was called)."""
    flag, log = tmp_path / "count", tmp_path / "again.log"
    proc = start(args, target, "count", 0, flag, log)
    proc.wait(timeout=300)
    text = log.read_text()
    return Outcome(proc.returncode, text, ""), int(flag.read_text())


def expert_args(scene: Path, runs: Path, *extra: str) -> list:
    return ["run", "--scene", scene, "--experts", "static", "--set", f"train.iterations={ITERS}",
            "--set", f"train.checkpoint_every={CHECKPOINT}", "--runs", runs, *extra]


def static_dir(runs: Path) -> Path:
    return runs / "synthetic" / "mixed" / "static" / "default" / "seed0"


def nothing_reported(runs: Path) -> None:
    assert results(runs).empty and not list(runs.rglob(DONE_FILE))
    assert_one_line_error(cli("report", "--runs", runs), "no completed runs")


def complete_and_valid(runs: Path, method_dir: Path, iterations: int | None = ITERS) -> None:
    assert (method_dir / DONE_FILE).is_file()
    assert [p.name for p in method_dir.rglob("*.tmp")] == []
    for model in (method_dir / "checkpoints").glob("*.pt"):
        assert torch_file_problem(model) is None
    rows = results(runs)
    mine = rows[rows["run_dir"] == str(method_dir)].set_index("metric")["value"]
    assert "psnr" in mine
    if iterations is not None:
        assert mine["iterations"] == iterations


def test_kill_during_training_resumes_from_the_last_checkpoint(tiny_scene_dir, tmp_path):
    runs = tmp_path / "runs"
    kill_at(expert_args(tiny_scene_dir, runs), "moegs_bench.train.loop:step_optimizers", 5, tmp_path)
    state = static_dir(runs) / "checkpoints" / "train_state.pt"
    assert torch.load(state, weights_only=False)["step"] == 4
    nothing_reported(runs)
    out, steps = run_counting(expert_args(tiny_scene_dir, runs), "moegs_bench.train.loop:step_optimizers", tmp_path)
    assert out.code == 0, out.out
    assert steps == ITERS - 4  # resumed at step 4, not started again
    assert not state.exists()  # the trained model supersedes it
    complete_and_valid(runs, static_dir(runs))


def test_kill_during_evaluation_redoes_the_run(tiny_scene_dir, tmp_path):
    runs = tmp_path / "runs"
    kill_at(expert_args(tiny_scene_dir, runs), "moegs_bench.eval.evaluate:save_png", 3, tmp_path)
    d = static_dir(runs)
    assert (d / "checkpoints" / "model.pt").is_file() and not (d / "summary.json").exists()
    nothing_reported(runs)
    out = cli(*expert_args(tiny_scene_dir, runs))
    assert out.code == 0 and out.err == "", out.err
    complete_and_valid(runs, d)
    assert len(list((d / "renders").rglob("*.png"))) == len(read_per_image(d))


def read_per_image(d: Path) -> list[str]:
    return (d / "per_image.csv").read_text().splitlines()[1:]


def test_kill_between_the_summary_and_the_marker_is_not_a_result(tiny_scene_dir, tmp_path):
    runs = tmp_path / "runs"
    kill_at(expert_args(tiny_scene_dir, runs), "moegs_bench.bench.store:Run.complete", 1, tmp_path)
    d = static_dir(runs)
    assert (d / "summary.json").is_file() and not (d / DONE_FILE).exists()  # half-valid
    nothing_reported(runs)
    out = cli(*expert_args(tiny_scene_dir, runs))
    assert out.code == 0 and out.err == "" and run_status(out, "static") == "trained"
    complete_and_valid(runs, d)


def test_kill_while_writing_the_results_table_keeps_the_runs(tiny_scene_dir, tmp_path):
    runs = tmp_path / "runs"
    kill_at(expert_args(tiny_scene_dir, runs), "os:replace", "@results.csv", tmp_path)
    assert not (runs / "results.csv").exists()  # killed before the table was renamed into place
    assert [p.name.split(".")[1] for p in runs.glob(".*.tmp")] == ["results"]  # only its temporary
    assert len(list(runs.rglob(DONE_FILE))) == 1  # the run itself was complete
    out = cli("report", "--runs", runs)
    assert out.code == 0 and out.err == "" and "static" in out.out
    out = cli(*expert_args(tiny_scene_dir, runs))
    assert out.code == 0 and out.err == "" and run_status(out, "static") == "reused"
    assert len(read_results_table(runs)[0]) == len(results(runs))


def test_kill_during_router_training_redoes_only_the_router(tiny_scene_dir, tmp_path):
    runs = tmp_path / "runs"
    args = ["run", "--scene", tiny_scene_dir, "--experts", "static,stg", "--set", "train.iterations=3",
            "--router", "vapr", "--router-set", f"iterations={ROUTER_ITERS}", "--runs", runs]
    kill_at(args, "moegs_bench.moe.train_router:photometric", 4, tmp_path)
    router = runs / "synthetic" / "mixed" / "moe-vapr" / "static+stg" / "seed0"
    assert (router / "config.json").is_file() and not (router / DONE_FILE).exists()
    reported = set(results(runs)["method"])
    assert "moe-vapr" not in reported and {"static", "stg", "uniform-average"} <= reported
    out, steps = run_counting(args, "moegs_bench.moe.train_router:photometric", tmp_path)
    assert out.code == 0, out.out
    assert steps == ROUTER_ITERS  # the router trained from the start; the experts were reused
    assert run_status(out, "static") == "reused" and run_status(out, "moe-vapr") == "trained"
    complete_and_valid(runs, router, iterations=ROUTER_ITERS)
