"""Workers sharing a run store (docs/results.md, "Many workers"): a run is claimed by one
worker at a time, the others wait and reuse it; a dead worker's claim is taken over; a live
one's is waited for, up to a limit; results.csv is rebuilt whole while others rebuild it."""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import platform
import threading
import time
from pathlib import Path

import pandas as pd
import pytest

from moegs_bench.bench.claims import hold
from moegs_bench.bench.store import (
    CLAIM_FILE,
    TABLE_CLAIM,
    RunClaimed,
    RunId,
    RunStore,
    read_results_table,
    results,
    write_results_table,
)
from moegs_bench.errors import ConfigError

RID = RunId("d", "s", "m")
FORK = mp.get_context("fork")  # the fake workers use no torch: forking is safe and quick


def train_or_reuse(root: str, log: str, seconds: float, ttl_s: float = 30.0) -> None:
    """A worker as the harness runs one: reuse, else claim, look again, else 'train' (append to
    the log, sleep) and store the run complete."""
    st = RunStore(root, claim_ttl_s=ttl_s)
    if st.find(RID, "k") is None:
        with st.claim(RID, "k", poll_s=0.02):
            if st.find(RID, "k") is None:
                with open(log, "a") as f:
                    f.write(f"train {os.getpid()}\n")
                time.sleep(seconds)
                run = st.begin(RID, "k", {}, host={"device": "cpu"})
                assert (run.dir / CLAIM_FILE).is_file()  # begin clears the run, not its claim
                run.save_timings({"train": seconds})
                run.save_summary({"psnr": 20.0})
                run.complete()
                return
    with open(log, "a") as f:
        f.write(f"reuse {os.getpid()}\n")


def _start(target, *args, ctx=FORK):
    proc = ctx.Process(target=target, args=args)
    proc.start()
    return proc


def _hold_for(path: str, seconds: float, ttl_s: float, ready) -> None:
    with hold(path, "test claim", ttl_s=ttl_s):
        ready.set()
        time.sleep(seconds)


def _wait_for_file(path: Path, timeout: float = 20.0) -> None:
    end = time.monotonic() + timeout
    while not path.is_file():
        assert time.monotonic() < end, f"{path} never appeared"
        time.sleep(0.01)


def test_two_workers_one_run_trains_once(tmp_path):
    """Catches a store without claims (both train) and a claim without the second look (the
    waiting worker trains again once it gets the claim)."""
    log = tmp_path / "log.txt"
    procs = [_start(train_or_reuse, str(tmp_path), str(log), 0.5) for _ in range(2)]
    for p in procs:
        p.join(30)
        assert p.exitcode == 0
    lines = sorted(line.split()[0] for line in log.read_text().splitlines())
    assert lines == ["reuse", "train"]
    assert RunStore(tmp_path).find(RID, "k") is not None
    assert not (RunStore(tmp_path).run_dir(RID) / CLAIM_FILE).exists()  # released


def test_a_dead_workers_claim_is_taken_over(tmp_path):
    """Catches a claim never reclaimed while its heartbeat is fresh though its pid is dead."""
    dead = _start(time.sleep, 0)
    dead.join()
    st = RunStore(tmp_path)
    claim_file = st.run_dir(RID) / CLAIM_FILE
    claim_file.parent.mkdir(parents=True)
    claim_file.write_text(json.dumps({"host": platform.node(), "pid": dead.pid, "since": "then",
                                      "heartbeat": time.time(), "ttl_s": 600.0, "token": "old"}))
    assert st.holder(RID) is None  # stale: no live holder to report
    with st.claim(RID, "k", wait_s=0) as claim:
        assert json.loads(claim_file.read_text())["token"] == claim.token != "old"
    assert not claim_file.exists()


def test_a_claim_from_another_host_expires_with_its_heartbeat(tmp_path):
    st = RunStore(tmp_path)
    claim_file = st.run_dir(RID) / CLAIM_FILE
    claim_file.parent.mkdir(parents=True)
    holder = {"host": "elsewhere", "pid": 1, "since": "then", "ttl_s": 5.0, "token": "other"}
    claim_file.write_text(json.dumps({**holder, "heartbeat": time.time()}))
    with pytest.raises(RunClaimed, match="pid 1 on host elsewhere"):  # fresh: its pid is not ours to check
        with st.claim(RID, "k", wait_s=0):
            pass
    claim_file.write_text(json.dumps({**holder, "heartbeat": time.time() - 6.0}))  # silent past its ttl
    with st.claim(RID, "k", wait_s=0):
        assert st.holder(RID)["pid"] == os.getpid()


def test_a_live_claim_is_waited_for_then_one_clear_error(tmp_path):
    """Catches a worker that runs a claimed run anyway, or fails without waiting, or whose
    error does not name the run and its holder."""
    st = RunStore(tmp_path)
    ready = FORK.Event()
    holder = _start(_hold_for, str(st.run_dir(RID) / CLAIM_FILE), 3.0, 30.0, ready)
    assert ready.wait(20)
    try:
        assert st.holder(RID)["pid"] == holder.pid
        t0 = time.monotonic()
        with pytest.raises(RunClaimed) as err:
            with st.claim(RID, "k", wait_s=0.5, poll_s=0.05):
                pytest.fail("claimed a run another worker holds")
        waited = time.monotonic() - t0
        assert 0.5 <= waited < 2.5
        message = str(err.value)
        assert "run d/s/m/default/seed0" in message and f"pid {holder.pid} on host {platform.node()}" in message
        assert "since" in message and "\n" not in message
    finally:
        holder.join(20)
    with st.claim(RID, "k", wait_s=5):  # released: free again
        pass


def test_the_heartbeat_keeps_a_long_run_claimed_past_its_ttl(tmp_path):
    """Catches a claim without a heartbeat: its ttl would pass and another worker take it."""
    st = RunStore(tmp_path, claim_ttl_s=0.6)
    with st.claim(RID, "k") as claim:
        first = claim.holder["heartbeat"]
        time.sleep(1.5)  # 2.5 ttl
        assert json.loads((st.run_dir(RID) / CLAIM_FILE).read_text())["heartbeat"] > first + 0.5
        with pytest.raises(RunClaimed):
            with st.claim(RID, "k", wait_s=0):
                pass
        assert claim.owned()
    assert st.holder(RID) is None


def test_a_claim_is_released_on_error_and_leaves_no_folder(tmp_path):
    st = RunStore(tmp_path)
    with pytest.raises(RuntimeError):
        with st.claim(RID, "k"):
            assert st.state(RID, "k") == "incomplete"
            raise RuntimeError("training failed")
    assert st.state(RID, "k") == "missing"  # a claim that began nothing leaves nothing
    with st.claim(RID, "k"):
        st.begin(RID, "k", {}, host={})
    assert sorted(p.name for p in st.run_dir(RID).iterdir()) == ["config.json"]
    with pytest.raises(ConfigError, match="claim ttl"):
        with st.claim(RID, "k", ttl_s=0):
            pass


def _rebuild(root: str, times: int) -> None:
    for _ in range(times):
        write_results_table(root)


def _fill(root: Path, n: int) -> None:
    st = RunStore(root)
    for i in range(n):
        run = st.begin(RunId("d", "s", f"m{i}"), "k", {}, host={"device": "cpu"})
        run.save_timings({"train": 1.0})
        run.save_summary({"psnr": float(i), "ssim": 0.5})
        run.complete()


def test_results_table_rebuilt_by_two_workers_is_never_cut(tmp_path):
    """Catches a table written in place (a reader sees a part of it) and leftovers of the
    temporary files."""
    _fill(tmp_path, 30)
    write_results_table(tmp_path)
    procs = [_start(_rebuild, str(tmp_path), 25) for _ in range(2)]
    seen = 0
    while any(p.is_alive() for p in procs) or seen == 0:
        df, _ = read_results_table(tmp_path)  # raises on a cut or damaged table
        assert len(df) == 30 * 3
        seen += 1
    for p in procs:
        p.join(30)
        assert p.exitcode == 0
    pd.testing.assert_frame_equal(read_results_table(tmp_path)[0][["method", "metric", "value"]],
                                  results(tmp_path)[["method", "metric", "value"]], check_dtype=False)
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp") or p.name == TABLE_CLAIM]


def test_results_table_rebuilds_take_turns(tmp_path):
    """Catches rebuilds that do not take turns: a slower rebuild's older scan could land last."""
    _fill(tmp_path, 1)
    ready = FORK.Event()
    holder = _start(_hold_for, str(tmp_path / TABLE_CLAIM), 2.0, 30.0, ready)
    assert ready.wait(20)
    try:
        with pytest.raises(RunClaimed, match="results table"):
            write_results_table(tmp_path, wait_s=0.2)
        t0 = time.monotonic()
        write_results_table(tmp_path)  # waits for the other rebuild, then writes
        assert time.monotonic() - t0 > 0.5
    finally:
        holder.join(20)
    assert len(read_results_table(tmp_path)[0]) == 3


def test_the_claim_holder_thread_stops(tmp_path):
    before = {t.name for t in threading.enumerate()}
    with RunStore(tmp_path).claim(RID, "k"):
        assert any(t.name.startswith("claim ") for t in threading.enumerate())
    assert {t.name for t in threading.enumerate()} <= before


class SpyStore(RunStore):
    """A store that records how long each claim of it waited (the spy of the harness test)."""

    waited: list[float] = []

    def claim(self, *args, **kw):
        outer = super().claim(*args, **kw)
        waited = self.waited

        class Spy:
            def __enter__(self):
                claim = outer.__enter__()
                waited.append(claim.waited_s)
                return claim

            def __exit__(self, *exc):
                return outer.__exit__(*exc)

        return Spy()


def _harness_worker(scene_dir: str, root: str, out: str, start) -> None:
    """`run_expert` as a `moegs-bench` process runs it: the tiny scene, the static expert, seed 0;
    both workers call it at once (`start`, a barrier)."""
    import torch

    from moegs_bench.bench.harness import run_expert
    from moegs_bench.data.load import load_scene

    torch.set_num_threads(1)
    data = load_scene(scene_dir, torch.device("cpu"))
    store = SpyStore(root, claim_ttl_s=10.0)
    start.wait(60)
    run = run_expert("static", data, store, preset="tiny", save_renders=False,
                     overrides={"train": {"iterations": 6}, "max_init_points": 200})
    Path(out).write_text(json.dumps({"reused": run.reused, "dir": str(run.run.dir), "waited": store.waited}))


def test_two_processes_running_one_expert_train_it_once(tiny_scene_dir, tmp_path):
    """Catches a harness that trains without the run's claim, or that does not look for the
    finished run again after waiting for it."""
    spawn = mp.get_context("spawn")  # torch in a forked child of a process that used it can hang
    outs = [tmp_path / f"out{i}.json" for i in range(2)]
    start = spawn.Barrier(2)
    procs = [_start(_harness_worker, str(tiny_scene_dir), str(tmp_path / "runs"), str(o), start, ctx=spawn)
             for o in outs]
    for p in procs:
        p.join(120)
        assert p.exitcode == 0
    done = [json.loads(o.read_text()) for o in outs]
    assert sorted(d["reused"] for d in done) == [False, True]
    trained, reused = sorted(done, key=lambda d: d["reused"])
    assert len(trained["waited"]) == 1 and len(reused["waited"]) == 1  # both asked for the claim at once,
    assert reused["waited"][0] > 0.2  # and one waited while the other trained, then reused its run
    assert done[0]["dir"] == done[1]["dir"]
    config = json.loads((Path(done[0]["dir"]) / "config.json").read_text())
    from moegs_bench.bench.code_keys import expert_code

    assert config["code"] == expert_code("static")  # the key covers the expert's code, recorded
    assert not (Path(done[0]["dir"]) / CLAIM_FILE).exists()
