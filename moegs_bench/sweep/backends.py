"""Where tasks run: `run_task` (one task in a worker, its outcome as a small dict) and the two
backends the scheduler drives through `submit` / `wait` / `close`:

    LocalBackend(workers, gpus)       N worker processes, each pinned to its GPU(s) through
                                      CUDA_VISIBLE_DEVICES (none pinned without GPUs)
    RayBackend(address, gpus, ...)    one Ray task per run with `num_gpus` (a fraction packs
                                      small scenes); a local Ray instance unless `address`

Workers write to the spec's run store, so it must be on a filesystem every worker sees.
Nothing here imports torch at module level: a worker pins its GPU before torch loads.
"""

from __future__ import annotations

import concurrent.futures as cf
import ctypes
import multiprocessing as mp
import os
import platform
import signal
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ..errors import ConfigError, MoegsError

if TYPE_CHECKING:
    from .plan import Task

Outcome = dict[str, Any]  # id, status (done, cached, failed), seconds, runs, trained, error, host, pid
Runner = Callable[["Task"], Outcome]


def run_task(task: Task) -> Outcome:
    """Run one task: generate its scene, or `run_experiment` with its narrowed options.
    status: "cached" when every run it covers was reused, "done" when one was trained,
    "failed" with `error` (one line) when it raised. runs / trained: run folders."""
    t0 = time.perf_counter()
    out: Outcome = {"id": task.id, "status": "done", "runs": [], "trained": [], "error": None,
                    "host": platform.node(), "pid": os.getpid()}
    try:
        from ..bench.experiment import resolve_scene, run_experiment
        from ..device import resolve_device
        from .plan import scene_root

        if task.kind == "scene":
            existed = scene_root(task.experiment) is not None
            root = resolve_scene(task.experiment, resolve_device(task.experiment.device))
            out.update(status="cached" if existed else "done", runs=[str(root)])
        else:
            result = run_experiment(task.experiment)
            stored = {"expert": result.experts, "mixture": result.mixtures,
                      "pseudo": result.mixtures, "distill": result.distilled}[task.kind]
            trained = [str(r.run.dir) for r in stored if not r.reused]
            out.update(runs=[str(r.run.dir) for r in stored], trained=trained,
                       status="done" if trained or task.kind == "pseudo" else "cached")
    except MoegsError as exc:
        out.update(status="failed", error=str(exc))
    except Exception as exc:  # reported with the task; the sweep goes on with the others
        out.update(status="failed", error=f"{type(exc).__name__}: {' '.join(str(exc).split())}")
    out["seconds"] = time.perf_counter() - t0
    return out


def failed(task: Task, why: str) -> Outcome:
    """The outcome of a task whose worker never returned."""
    return {"id": task.id, "status": "failed", "runs": [], "trained": [], "error": why, "seconds": 0.0,
            "host": platform.node(), "pid": None}


# -- local processes -------------------------------------------------------------------------------
def _init_worker(slots) -> None:
    """A fresh worker: take a GPU slot (before torch loads) and die with the driver."""
    gpus = slots.get()
    if gpus is not None:
        os.environ["CUDA_VISIBLE_DEVICES"] = gpus
    if platform.system() == "Linux":  # a killed driver must not leave workers training unseen
        try:
            ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
        except OSError:
            pass


def gpu_slots(workers: int, gpus: int, gpus_per_task: float,
              visible: str | None = None) -> list[str | None]:
    """CUDA_VISIBLE_DEVICES of each local worker: `gpus_per_task` >= 1 gives each worker that
    many whole GPUs, a fraction places workers round-robin on the GPUs; None without GPUs.
    The GPUs are the first `gpus` of the driver's own CUDA_VISIBLE_DEVICES (`visible`,
    default the environment's), so a driver limited to GPUs 2,3 gives its workers 2 and 3."""
    if gpus <= 0:
        return [None] * workers
    visible = os.environ.get("CUDA_VISIBLE_DEVICES") if visible is None else visible
    names = [v.strip() for v in visible.split(",") if v.strip()] if visible else []
    if names and len(names) < gpus:
        raise ConfigError(f"{gpus} GPU(s) asked for but CUDA_VISIBLE_DEVICES={visible!r} names {len(names)}")
    names = names[:gpus] if names else [str(g) for g in range(gpus)]
    if gpus_per_task >= 1:
        per = int(gpus_per_task)
        if per > gpus:
            raise ConfigError(f"gpus_per_task {per}: more than the {gpus} GPU(s) here")
        groups = [",".join(names[i:i + per]) for i in range(0, gpus - per + 1, per)]
    else:
        groups = names
    return [groups[i % len(groups)] for i in range(workers)]


class LocalBackend:
    """`workers` processes on this machine (spawned: no state shared with the driver), worker
    i pinned to `slots[i]`; runner: what a worker runs for a task (default `run_task`)."""

    def __init__(self, slots: list[str | None], runner: Runner = run_task):
        ctx = mp.get_context("spawn")
        queue = ctx.Queue()
        for slot in slots:
            queue.put(slot)
        self.capacity = len(slots)
        self.runner = runner
        self.pool = cf.ProcessPoolExecutor(len(slots), mp_context=ctx, initializer=_init_worker, initargs=(queue,))
        self._tasks: dict[cf.Future, Task] = {}

    def submit(self, task: Task) -> cf.Future:
        try:
            future = self.pool.submit(self.runner, task)
        except (cf.process.BrokenProcessPool, RuntimeError) as exc:
            future = cf.Future()
            future.set_result(failed(task, f"worker pool unusable: {exc}"))
        self._tasks[future] = task
        return future

    def wait(self, handles: list) -> list[tuple[Any, Outcome]]:
        """Block until at least one handle finishes; (handle, outcome) of every finished one."""
        done, _ = cf.wait(handles, return_when=cf.FIRST_COMPLETED)
        out = []
        for future in done:
            task = self._tasks.pop(future)
            try:
                out.append((future, future.result()))
            except cf.process.BrokenProcessPool:
                out.append((future, failed(task, "its worker process died (killed or out of memory)")))
            except Exception as exc:  # the runner itself raised in the worker
                out.append((future, failed(task, f"{type(exc).__name__}: {exc}")))
        return out

    def close(self) -> None:
        self.pool.shutdown(wait=True, cancel_futures=True)


# -- Ray -------------------------------------------------------------------------------------------
class RayBackend:
    """Ray tasks, one per sweep task: `num_gpus=gpus_per_task` where the cluster has GPUs,
    else `num_cpus=1`. address: an existing cluster ("auto", "ray://host:10001"), or None
    for a local instance with `gpus` GPUs and `cpus` CPUs (None: Ray's count)."""

    capacity = None  # every ready task is submitted; Ray queues them by their resources

    def __init__(self, address: str | None = None, gpus: int | None = None, cpus: int | None = None,
                 gpus_per_task: float = 1.0, runner: Runner = run_task):
        try:
            import ray
        except ImportError:
            raise ConfigError("--backend ray: Ray is not installed (pip install ray)") from None
        self.ray = ray
        self.started = not ray.is_initialized()
        if self.started:
            kw = {} if address is not None else {"num_gpus": gpus, "num_cpus": cpus}
            ray.init(address=address, include_dashboard=False, log_to_driver=False, **kw)
        has_gpus = ray.cluster_resources().get("GPU", 0) > 0
        opts = {"num_gpus": gpus_per_task, "num_cpus": 1} if has_gpus else {"num_gpus": 0, "num_cpus": 1}
        self.remote = ray.remote(**opts)(runner)
        self._tasks: dict[Any, Task] = {}

    def submit(self, task: Task):
        ref = self.remote.remote(task)
        self._tasks[ref] = task
        return ref

    def wait(self, handles: list) -> list[tuple[Any, Outcome]]:
        done, _ = self.ray.wait(handles, num_returns=1)
        out = []
        for ref in done:
            task = self._tasks.pop(ref)
            try:
                out.append((ref, self.ray.get(ref)))
            except Exception as exc:  # a worker that died or a task Ray could not run
                out.append((ref, failed(task, f"Ray: {type(exc).__name__}: {' '.join(str(exc).split())[:300]}")))
        return out

    def close(self) -> None:
        for ref in list(self._tasks):
            self.ray.cancel(ref, force=True)
        if self.started:
            self.ray.shutdown()


__all__ = ["LocalBackend", "Outcome", "RayBackend", "Runner", "failed", "gpu_slots", "run_task"]
