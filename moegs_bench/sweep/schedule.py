"""The scheduler: tasks in dependency order on a backend, each dispatched once, a failed
task's dependants skipped, progress reported as `progress(done, total, info)` (info: running,
failed, cached, skipped, ETA from the finished tasks' durations).

    outcome = run_tasks(tasks, backend, statuses, progress=..., log=...)
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ..progress import Progress
from .backends import Outcome
from .plan import CACHED, Task


@dataclass
class SweepOutcome:
    """Every task's outcome by id (status done, cached, failed or skipped) and the wall time."""

    outcomes: dict[str, Outcome] = field(default_factory=dict)
    seconds: float = 0.0

    def ids(self, status: str) -> list[str]:
        return [i for i, o in self.outcomes.items() if o["status"] == status]

    @property
    def ok(self) -> bool:
        return not self.ids("failed") and not self.ids("skipped")


def eta_seconds(durations: list[float], remaining: int, slots: int | None) -> float | None:
    """Time left: the mean finished task's duration per round of `slots` parallel tasks (all
    remaining at once without a limit); None before any task finished."""
    if not durations or remaining <= 0:
        return None if remaining > 0 else 0.0
    rounds = math.ceil(remaining / slots) if slots else 1
    return sum(durations) / len(durations) * rounds


def _eta_text(seconds: float | None) -> str:
    if seconds is None:
        return "?"
    return f"{seconds / 60:.0f} min" if seconds >= 90 else f"{seconds:.0f} s"


def run_tasks(tasks: list[Task], backend: Any, statuses: dict[str, str] | None = None, *,
              progress: Progress | None = None, log: Callable[[str], None] = lambda _: None,
              on_result: Callable[[Outcome], None] | None = None) -> SweepOutcome:
    """Run `tasks` (dependencies first) on `backend`: a task starts when all its dependencies
    finished (done or cached); one whose status is CACHED in `statuses` is not dispatched;
    a failed task's dependants are skipped. on_result(outcome) is called for every finished
    task (as it arrives). The backend is closed at the end, also on an exception."""
    t0 = time.perf_counter()
    statuses = statuses or {}
    by_id = {t.id: t for t in tasks}
    dependants: dict[str, list[str]] = {t.id: [] for t in tasks}
    for t in tasks:
        for dep in t.deps:
            if dep not in by_id:
                raise ValueError(f"task {t.id} depends on {dep}, which is not in the plan")
            dependants[dep].append(t.id)
    result = SweepOutcome()
    waiting = {t.id for t in tasks}
    running: dict[Any, str] = {}
    durations: list[float] = []
    total = len(tasks)

    def report() -> None:
        if progress is None:
            return
        remaining = len(waiting) + len(running)
        info = {"running": len(running), "failed": len(result.ids("failed")), "cached": len(result.ids("cached")),
                "skipped": len(result.ids("skipped")), "eta": _eta_text(eta_seconds(durations, remaining,
                                                                                   backend.capacity))}
        progress(len(result.outcomes), total, info)

    def finish(outcome: Outcome) -> None:
        result.outcomes[outcome["id"]] = outcome
        if outcome["status"] == "done":
            durations.append(outcome.get("seconds", 0.0))
        if outcome["status"] == "failed":
            log(f"failed {outcome['id']}: {outcome['error']}")
            _skip(outcome["id"])
        elif outcome["status"] != "skipped":
            log(f"{outcome['status']:6s} {outcome['id']} ({outcome.get('seconds', 0.0):.1f} s)")
        if on_result is not None:
            on_result(outcome)

    def _skip(failed_id: str) -> None:
        for child in dependants[failed_id]:
            if child in waiting:
                waiting.discard(child)
                finish({"id": child, "status": "skipped", "error": f"needs {failed_id}, which failed",
                        "runs": [], "trained": [], "seconds": 0.0})

    try:
        report()
        while waiting or running:
            ready = [t for t in tasks if t.id in waiting
                     and all(result.outcomes.get(d, {}).get("status") in ("done", "cached") for d in t.deps)]
            for task in ready:
                if statuses.get(task.id) == CACHED:
                    waiting.discard(task.id)
                    finish({"id": task.id, "status": "cached", "runs": [], "trained": [], "seconds": 0.0,
                            "error": None})
                    continue
                if backend.capacity is not None and len(running) >= backend.capacity:
                    break
                waiting.discard(task.id)  # dispatched once: never submitted again
                running[backend.submit(task)] = task.id
            if any(statuses.get(t.id) == CACHED for t in ready):
                report()
                continue  # cached tasks may have released others
            if not running:
                break  # nothing runnable: the rest waits on tasks that can never finish
            report()
            for handle, outcome in backend.wait(list(running)):
                outcome = {**outcome, "id": running.pop(handle)}
                finish(outcome)
            report()
    finally:
        backend.close()
    for task_id in sorted(waiting):  # only left with a dependency cycle, which expand never makes
        finish({"id": task_id, "status": "skipped", "error": "its dependencies never finished", "runs": [],
                "trained": [], "seconds": 0.0})
    result.seconds = time.perf_counter() - t0
    report()
    return result


__all__ = ["SweepOutcome", "eta_seconds", "run_tasks"]
