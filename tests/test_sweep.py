"""`moegs-bench sweep`: spec parsing, expansion into tasks, the scheduler, the local and Ray
backends, resuming a killed sweep, `--dry-run` (docs/sweeps.md)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from moegs_bench.errors import ConfigError
from moegs_bench.sweep.backends import LocalBackend, RayBackend, gpu_slots, run_task
from moegs_bench.sweep.driver import plan_sweep, run_sweep
from moegs_bench.sweep.plan import CACHED, RUN, Task, expand
from moegs_bench.sweep.schedule import eta_seconds, run_tasks
from moegs_bench.sweep.spec import load_spec

# tiny trainings: a few iterations of the static expert on the tiny scene, a few router steps
FAST = ('overrides = ["train.iterations=4", "max_init_points=150"]\n'
        'router_overrides = ["iterations=2"]\n')


def write_spec(tmp_path: Path, body: str, name: str = "spec.toml") -> Path:
    path = tmp_path / name
    path.write_text(f'[sweep]\nruns_dir = "{tmp_path / "runs"}"\n{body}')
    return path


# -- spec and expansion ------------------------------------------------------------------------
def test_expand_gives_the_exact_tasks_in_dependency_order(tmp_path):
    """Catches: a shared expert planned twice (two sets holding static@tiny), a mixture not
    waiting for its experts, a seed or a scene task missing, overrides scoped to one label
    leaking into another's run."""
    spec = load_spec(write_spec(tmp_path, 'scenes = ["mixed"]\nsize = "tiny"\nseeds = 2\n'
                                          'experts = [["static@tiny", "static@small"], "static@tiny,static@fast"]\n'
                                          'overrides = ["static@tiny:max_init_points=100", "train.iterations=4"]\n'))
    tasks = expand(spec)
    ids = [t.id for t in tasks]
    expected = []
    for s in (0, 1):
        expected += [f"scene:mixed-n3v-tiny-seed{s}", f"expert:mixed/static@tiny/seed{s}",
                     f"expert:mixed/static@small/seed{s}", f"mixture:mixed/static@small+static@tiny/seed{s}",
                     f"expert:mixed/static@fast/seed{s}", f"mixture:mixed/static@fast+static@tiny/seed{s}"]
    assert ids == expected
    by_id = {t.id: t for t in tasks}
    assert by_id["mixture:mixed/static@fast+static@tiny/seed1"].deps == (
        "expert:mixed/static@tiny/seed1", "expert:mixed/static@fast/seed1")
    assert by_id["expert:mixed/static@small/seed0"].deps == ("scene:mixed-n3v-tiny-seed0",)
    for t in tasks:  # every dependency comes first
        assert all(ids.index(d) < ids.index(t.id) for d in t.deps)
    tiny, small = by_id["expert:mixed/static@tiny/seed0"].experiment, by_id["expert:mixed/static@small/seed0"].experiment
    assert (tiny.experts, tiny.routers, tiny.seed) == ("static@tiny", "none", 0)
    assert tiny.overrides == ("static@tiny:max_init_points=100", "train.iterations=4")
    assert small.overrides == ("train.iterations=4",)
    mix = by_id["mixture:mixed/static@small+static@tiny/seed1"].experiment
    assert (mix.experts, mix.routers, mix.seed) == ("static@tiny,static@small", "vapr", 1)


def test_presets_budgets_and_distillation_expand_to_their_own_tasks(tmp_path):
    """Catches: two presets of one expert sharing a run folder (`static` under one variant),
    distillation not waiting for its pseudo-labels, or pseudo-labels for their router."""
    spec = load_spec(write_spec(tmp_path, 'scenes = ["mixed"]\nsize = "tiny"\npresets = ["tiny", "small"]\n'
                                          'experts = ["static"]\nrouters = "none"\n'))
    assert [t.id for t in expand(spec)] == ["scene:mixed-n3v-tiny-seed0", "expert:mixed/static@tiny/seed0",
                                            "expert:mixed/static@small/seed0"]
    spec = load_spec(write_spec(tmp_path, 'scenes = ["mixed"]\nsize = "tiny"\nexperts = ["static@tiny,static@small"]\n'
                                          'steps = ["distill"]\n[sweep.distill]\nseeds = 1\n'))
    tasks = {t.id: t for t in expand(spec)}
    pseudo = "pseudo:mixed/static@small+static@tiny/seed0/vapr"
    assert tasks[pseudo].deps == ("mixture:mixed/static@small+static@tiny/seed0",)
    distill = [t for t in tasks.values() if t.kind == "distill"]
    assert sorted(t.id for t in distill) == [
        "distill:mixed/static@small+static@tiny/static@small-distilled/seed1",
        "distill:mixed/static@small+static@tiny/static@tiny-distilled/seed1",
        "distill:mixed/static@small-retrained/from-seed0/seed1",
        "distill:mixed/static@tiny-retrained/from-seed0/seed1"]
    assert all(t.deps == (pseudo,) and len(t.experiment.distill_only) == 1 for t in distill)


@pytest.mark.parametrize("body, field", [
    ('scenes = ["mixed"]\nsize = "tiny"\nexperts = ["static"]\nworkers = 3\n', "sweep.workers: unknown field"),
    ('scenes = ["mixed"]\nsize = "tiny"\nexperts = ["static"]\nseeds = 0\n', "sweep.seeds:"),
    ('scenes = ["mixed"]\nsize = "tiny"\nexperts = ["static"]\nbudgets = [1.5]\n', "sweep.budgets:"),
    ('scenes = ["mixed"]\nsize = "tiny"\nexperts = ["static"]\nrouters = ["nope"]\n', "sweep.routers:"),
    ('scenes = ["mixed"]\nsize = "tiny"\n', "sweep.experts: missing"),
    ('scenes = ["mixed"]\nexperts = ["static"]\n', "sweep.size: missing"),
    ('scenes = ["nowhere"]\nsize = "tiny"\nexperts = ["static"]\n', "sweep.scenes:"),
    ('scenes = ["mixed"]\nsize = "tiny"\nexperts = ["static"]\ntables = ["nope"]\n', "sweep.tables:"),
    ('scenes = ["mixed"]\nsize = "tiny"\nexperts = ["static"]\nsteps = ["fusion"]\nfuse_router = "pixel"\n',
     "sweep.fuse_router:"),
    ('scenes = ["mixed"]\nsize = "tiny"\nexperts = [3]\n', "sweep.experts[0]:"),
    ('scenes = ["mixed"]\nsize = "tiny"\nexperts = ["static"]\ngpus_per_task = 1.5\n', "sweep.gpus_per_task:"),
    ('scenes = ["mixed"]\nsize = "tiny"\nexperts = ["nosuch"]\n', "sweep.experts[0]:"),
])
def test_bad_spec_is_one_error_naming_file_and_field(tmp_path, body, field):
    """Catches: a typo'd field ignored, a bad value accepted until a worker fails hours later,
    an error that does not say which file and field."""
    path = write_spec(tmp_path, body)
    with pytest.raises(ConfigError) as err:
        expand(load_spec(path))
    assert str(path) in str(err.value) and field in str(err.value)


# -- the scheduler, on a backend that runs tasks in this process --------------------------------
class InlineBackend:
    """Runs each task when submitted (fake outcomes from `fail`); records the submissions."""

    capacity = 2

    def __init__(self, fail=()):
        self.fail, self.submitted, self.closed, self.outcomes = set(fail), [], False, {}

    def submit(self, task):
        self.submitted.append(task.id)
        status = "failed" if task.id in self.fail else "done"
        self.outcomes[task.id] = {"id": task.id, "status": status, "error": "boom" if status == "failed" else None,
                                  "seconds": 2.0, "runs": [], "trained": []}
        return task.id

    def wait(self, handles):
        return [(h, self.outcomes[h]) for h in handles]

    def close(self):
        self.closed = True


def test_scheduler_dispatches_once_skips_dependants_of_failures_and_cached_tasks():
    """Catches: a task dispatched twice, a task started before its dependency, a failed
    task's dependants still run, a cached task dispatched, a backend left open."""
    from moegs_bench.bench.experiment import Experiment

    def t(i, *deps):
        return Task(i, "expert", Experiment(), deps)

    tasks = [t("a"), t("b", "a"), t("c"), t("d", "c"), t("e", "d"), t("f")]
    backend = InlineBackend(fail={"c"})
    seen = []
    out = run_tasks(tasks, backend, {"f": CACHED}, on_result=lambda o: seen.append(o["id"]))
    assert sorted(backend.submitted) == ["a", "b", "c"] and backend.closed
    assert backend.submitted.index("a") < backend.submitted.index("b")
    assert {i: o["status"] for i, o in out.outcomes.items()} == {
        "a": "done", "b": "done", "c": "failed", "d": "skipped", "e": "skipped", "f": "cached"}
    assert "c" in out.outcomes["d"]["error"] and not out.ok and sorted(seen) == sorted("abcdef")


def test_eta_from_finished_durations(monkeypatch):
    """Catches: an ETA ignoring the parallel slots or shown before any task finished; GPU slots
    numbered 0..N-1 of the machine instead of the driver's own visible devices."""
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    assert eta_seconds([], 4, 2) is None
    assert eta_seconds([10.0, 30.0], 5, 2) == pytest.approx(60.0)
    assert eta_seconds([10.0], 3, None) == pytest.approx(10.0)
    assert gpu_slots(3, 2, 1.0) == ["0", "1", "0"] and gpu_slots(2, 0, 1.0) == [None, None]
    assert gpu_slots(2, 4, 2) == ["0,1", "2,3"]
    # a driver limited to some GPUs hands out those (not 0..N-1 of the whole machine)
    assert gpu_slots(2, 2, 1.0, visible="2,3") == ["2", "3"]
    assert gpu_slots(3, 1, 0.5, visible="5") == ["5", "5", "5"]
    assert gpu_slots(1, 4, 2, visible="4,5,6,7") == ["4,5"]
    assert gpu_slots(2, 2, 1.0, visible="") == ["0", "1"]
    with pytest.raises(ConfigError, match="CUDA_VISIBLE_DEVICES"):
        gpu_slots(2, 3, 1.0, visible="0,1")
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "1,3")
    assert gpu_slots(2, 2, 1.0) == ["1", "3"]


# -- real runs on the tiny scene -------------------------------------------------------------------
SPY = "MOEGS_SWEEP_SPY"


def spy_runner(task):
    """run_task, logging every expert training (its run folder) to the file $MOEGS_SWEEP_SPY."""
    from moegs_bench.bench import harness

    if not getattr(harness, "_spied", False):
        real = harness._train_model

        def train(name, cfg, data, seed, run, *args, **kw):
            with open(os.environ[SPY], "a") as log:
                log.write(f"{run.dir}\n")
            return real(name, cfg, data, seed, run, *args, **kw)

        harness._train_model, harness._spied = train, True
    return run_task(task)


def trainings(path: Path) -> list[str]:
    return path.read_text().split() if path.exists() else []


@pytest.fixture
def spy(tmp_path, monkeypatch):
    path = tmp_path / "trainings.log"
    monkeypatch.setenv(SPY, str(path))
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    return path


def test_two_local_workers_never_train_the_same_run(tiny_scene_dir, tmp_path, spy):
    """Two mixtures sharing static@tiny dispatched at once, without expert tasks before them,
    so both workers need that expert together. Catches: a store without claims (static@tiny
    trained twice, one run overwriting the other) or a worker that does not reuse the run the
    other stored."""
    from moegs_bench.bench.experiment import Experiment

    common = dict(scene=str(tiny_scene_dir), runs_dir=tmp_path / "runs", device="cpu", routers="none",
                  overrides=("train.iterations=4", "max_init_points=150"))
    tasks = [Task("one", "expert", Experiment(experts="static@tiny,static@small", **common)),
             Task("two", "expert", Experiment(experts="static@tiny,static@fast", **common))]
    out = run_tasks(tasks, LocalBackend(gpu_slots(2, 0, 1.0), runner=spy_runner))
    assert out.ok, out.outcomes
    runs = trainings(spy)
    assert sorted(Path(r).parent.name for r in runs) == ["fast", "small", "tiny"], runs
    assert len(set(runs)) == len(runs)


def test_sweep_then_dry_run_lists_cached_and_changed_runs(tiny_scene_dir, tmp_path, spy):
    """Runs a 2-expert + mixture spec on two local workers, then plans it again. Catches: a
    dry run that calls stored runs missing (keys computed unlike the harness), one that calls a
    run with changed settings cached, a rerun that trains anything again."""
    body = f'scenes = ["{tiny_scene_dir}"]\nexperts = ["static@tiny,static@small"]\ndevice = "cpu"\n' + FAST
    spec = load_spec(write_spec(tmp_path, body + 'tables = ["experts"]\n'))
    plan = plan_sweep(spec)
    assert set(plan.statuses.values()) == {RUN}
    out = run_sweep(plan, LocalBackend(gpu_slots(2, 0, 1.0), runner=spy_runner))
    assert out.ok and len(trainings(spy)) == 2
    again = plan_sweep(spec)
    assert set(again.statuses.values()) == {CACHED}, again.statuses
    out = run_sweep(again, LocalBackend(gpu_slots(1, 0, 1.0), runner=spy_runner))
    assert set(out.ids("cached")) == set(again.statuses) and len(trainings(spy)) == 2
    changed = load_spec(write_spec(tmp_path, body.replace('"max_init_points=150"',
                                                          '"max_init_points=150", "static@small:max_init_points=90"'),
                                   "changed.toml"))
    statuses = plan_sweep(changed).statuses
    assert statuses == {"expert:" + str(tiny_scene_dir) + "/static@tiny/seed0": CACHED,
                        "expert:" + str(tiny_scene_dir) + "/static@small/seed0": RUN,
                        "mixture:" + str(tiny_scene_dir) + "/static@small+static@tiny/seed0": RUN}
    shown = subprocess.run([sys.executable, "-m", "moegs_bench", "sweep", str(spec.path), "--dry-run"],
                           capture_output=True, text=True, env={**os.environ})
    assert shown.returncode == 0, shown.stderr
    assert "3 tasks, 3 cached, 0 to run" in shown.stdout
    assert f"cached  mixture:{tiny_scene_dir}/static@small+static@tiny/seed0" in shown.stdout


def test_killed_sweep_run_again_runs_only_what_is_missing(tiny_scene_dir, tmp_path):
    """SIGKILLs the `sweep` command once its first run is stored, then runs it again. Catches:
    a completed run trained again after the restart (its config.json rewritten), an
    unfinished one left unfinished, worker processes outliving their killed driver."""
    sets = ", ".join(f'"static@tiny,static@{p}"' for p in ("small", "fast"))
    spec = write_spec(tmp_path, f'scenes = ["{tiny_scene_dir}"]\nexperts = [{sets}]\ndevice = "cpu"\n' + FAST)
    cmd = [sys.executable, "-m", "moegs_bench", "sweep", str(spec), "--workers", "1"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    root = tmp_path / "runs" / "synthetic" / "mixed"
    driver = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    deadline = time.monotonic() + 120
    while not list(root.glob("static/*/seed0/DONE")) and time.monotonic() < deadline:
        time.sleep(0.05)
    driver.send_signal(signal.SIGKILL)
    driver.wait()
    first = {p.parent: p.parent.joinpath("config.json").stat().st_mtime_ns for p in root.glob("*/*/seed0/DONE")}
    assert first and len(first) < 11  # killed mid-way: some runs stored, not all
    time.sleep(0.5)
    again = subprocess.run(cmd, capture_output=True, text=True, env=env)
    assert again.returncode == 0, again.stdout + again.stderr
    done = {p.parent for p in root.glob("*/*/seed0/DONE")}
    assert {d.parent.name for d in done if d.parent.parent.name == "static"} == {"tiny", "small", "fast"}
    assert len([d for d in done if d.parent.parent.name == "moe-vapr"]) == 2
    for run, mtime in first.items():
        assert run.joinpath("config.json").stat().st_mtime_ns == mtime, f"{run} trained again"
    assert "cached" in again.stdout and "0 failed, 0 skipped" in again.stdout


def test_ray_backend_runs_a_two_run_spec(tiny_scene_dir, tmp_path, monkeypatch):
    """Two expert runs as Ray tasks on a local Ray instance. Catches: tasks that cannot be
    shipped to Ray workers, GPUs asked for on a machine without any, outcomes lost."""
    pytest.importorskip("ray")
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    spec = load_spec(write_spec(tmp_path, f'scenes = ["{tiny_scene_dir}"]\nexperts = ["static@tiny,static@small"]\n'
                                          f'routers = "none"\ndevice = "cpu"\n' + FAST))
    out = run_sweep(plan_sweep(spec), RayBackend(cpus=2, gpus=0))
    assert out.ok and sorted(out.ids("done")) == sorted(t.id for t in expand(spec)), out.outcomes
    for outcome in out.outcomes.values():
        (run,) = outcome["trained"]
        assert Path(run, "DONE").is_file()


@pytest.mark.parametrize("name, count", [("example", 24), ("smoke", 12), ("budget", 17), ("seeds", 21)])
def test_committed_specs_expand(name, count):
    """Catches: a committed spec that no longer loads, or one whose axes expand to other runs
    than its comments promise (smoke: 8 expert runs for the two-GPU timing)."""
    tasks = expand(load_spec(Path(__file__).resolve().parents[1] / "experiments" / f"{name}.toml"))
    assert len(tasks) == count
    if name == "smoke":
        assert sum(t.kind == "expert" for t in tasks) == 8
    if name == "seeds":  # one scene for every seed, five paired mixtures
        assert sum(t.kind == "scene" for t in tasks) == 1 and sum(t.kind == "mixture" for t in tasks) == 5
