"""What `moegs-bench sweep` calls: plan a spec, tell what is stored, run the rest on a backend,
then rebuild the store's results table and build the tables the spec names.

    plan = plan_sweep(load_spec("experiments/smoke.toml"))       # tasks and their status
    outcome = run_sweep(plan, LocalBackend(gpu_slots(2, 2, 1.0)))
    for name, dataset, table in sweep_tables(plan.spec): ...
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

import pandas as pd

from ..bench.store import RunStore, notes, results, write_results_table
from ..errors import MoegsError
from ..progress import Progress
from ..report.tables import build_table
from .backends import Outcome
from .plan import Task, expand, task_status
from .schedule import SweepOutcome, run_tasks
from .spec import SweepSpec


@dataclass
class SweepPlan:
    """A spec's tasks in dependency order and each one's status (plan.CACHED, RUN, CHECK)."""

    spec: SweepSpec
    tasks: list[Task]
    statuses: dict[str, str]

    def count(self, status: str) -> int:
        return sum(1 for s in self.statuses.values() if s == status)


def plan_sweep(spec: SweepSpec) -> SweepPlan:
    """Expand `spec` and look up what the store already holds (nothing is trained)."""
    tasks = expand(spec)
    store = RunStore(spec.runs_dir)
    return SweepPlan(spec, tasks, {t.id: task_status(t, store)[0] for t in tasks})


def plan_lines(plan: SweepPlan) -> list[str]:
    """The plan as text: a header with the counts, then one line per task (status, id, what it
    waits for)."""
    out = [f"sweep {plan.spec.name}: {len(plan.tasks)} tasks, {plan.count('cached')} cached, "
           f"{plan.count('to run')} to run, {plan.count('check')} to check; run store {plan.spec.runs_dir}"]
    for t in plan.tasks:
        after = f"  after {', '.join(t.deps)}" if t.deps else ""
        out.append(f"  {plan.statuses[t.id]:7s} {t.id}{after}")
    return out


def run_sweep(plan: SweepPlan, backend, *, progress: Progress | None = None,
              log: Callable[[str], None] = lambda _: None,
              on_result: Callable[[Outcome], None] | None = None) -> SweepOutcome:
    """Run the plan's tasks that are not cached on `backend` (closed at the end), then
    rewrite the store's results table from its completed runs."""
    outcome = run_tasks(plan.tasks, backend, plan.statuses, progress=progress, log=log, on_result=on_result)
    if plan.spec.runs_dir.is_dir():
        write_results_table(plan.spec.runs_dir)
    return outcome


def sweep_tables(spec: SweepSpec) -> Iterator[tuple[str, str, pd.DataFrame | str]]:
    """(table name, dataset, the table or the one-line reason it cannot be built) for each
    table the spec names and each dataset in its store."""
    if not spec.tables or not spec.runs_dir.is_dir():
        return
    df, nt = results(spec.runs_dir), notes(spec.runs_dir)
    for name in spec.tables:
        for dataset in sorted(df["dataset"].unique()):
            try:
                yield name, dataset, build_table(name, df[df["dataset"] == dataset], notes=nt, dataset=dataset)
            except MoegsError as exc:
                yield name, dataset, str(exc)


__all__ = ["SweepPlan", "plan_lines", "plan_sweep", "run_sweep", "sweep_tables"]
