"""A sweep spec expanded into tasks with dependencies, and which of them are already stored.

Tasks, in dependency order (docs/sweeps.md):
    scene       a synthetic scene generated once, before the runs that read it
    expert      one expert label on one scene, seed, budget (its run trained or reused)
    mixture     the baselines and routers over one expert set (its experts reused from the
                store by content key), with the fusion / MDC / trajectory analyses
    pseudo      the mixture's pseudo-labels of every training view (distillation's input)
    distill     one retrained or distilled expert of a mixture (one label, seed and weighting)

Each task is one `run_experiment(Experiment(...))` with narrowed options, so a task reuses
what is stored exactly as `moegs-bench run` would. `task_status` asks the harness itself for
a task's run ids and content keys, without training: it calls the harness with a store that
stops at the first run the harness asks for (`_ProbeStore`).
"""

from __future__ import annotations

import dataclasses
import inspect
from dataclasses import dataclass, field
from pathlib import Path

from ..bench.experiment import Experiment, resolve_experts, router_configs
from ..bench.harness import (
    MixtureInputs,
    StoredRun,
    run_baselines,
    run_expert,
    run_fusion,
    run_labeled_expert,
    run_router,
)
from ..bench.store import RunId, RunStore
from ..config import has_setting, scoped_overrides
from ..data.load import SceneData
from ..data.scene import is_prepared_scene, read_scene
from ..data.synthetic import SCENES, synthetic_scene_dir
from ..errors import ConfigError, MoegsError
from ..experts.registry import get_expert, split_label
from ..moe.baselines import BASELINES
from ..moe.routers import get_router
from .spec import SweepSpec

KINDS = ("scene", "expert", "mixture", "pseudo", "distill")
CACHED, RUN, CHECK = "cached", "to run", "check"  # CHECK: dispatched, the harness reuses what it can


@dataclass
class Task:
    """One unit of work: `id` (unique in a plan), `kind` (KINDS), the Experiment that does it,
    the ids of the tasks it needs finished first, and the scene it belongs to."""

    id: str
    kind: str
    experiment: Experiment
    deps: tuple[str, ...] = ()
    labels: tuple[str, ...] = field(default_factory=tuple)  # the expert labels it covers


def _budget_suffix(budget: float) -> str:
    return "" if budget == 1.0 else f"/budget{budget:g}"


def _labels(spec: SweepSpec, expert_set: str, dataset: str, preset: str | None, index: int) -> list[str]:
    """A set's labels; with a preset, `name` becomes `name@preset` so that each preset's run
    is stored under its own variant (two presets never share a run folder)."""
    try:
        labels = resolve_experts(expert_set, dataset)
    except ConfigError as exc:
        raise ConfigError(f"{spec.path}: sweep.experts[{index}]: {exc}") from None
    if preset is not None:
        labels = [label if split_label(label)[1] else f"{label}@{preset}" for label in labels]
    return list(dict.fromkeys(labels))


def _scope(item: str, labels: list[str]) -> str | None:
    """An override's scope among `labels` (a `name:` scope matches a `name@preset` label
    made from it), "" for an unscoped item, None for a scope outside them."""
    key = item.split("=", 1)[0]
    if ":" not in key:
        return ""
    scope = key.split(":", 1)[0]
    if scope in labels:
        return scope
    made = [label for label in labels if split_label(label)[0] == scope and "@" not in scope]
    return made[0] if len(made) == 1 else None


def overrides_for(items: tuple[str, ...], labels: list[str]) -> tuple[str, ...]:
    """The `--set` items that concern `labels`: unscoped ones that one of their configs has,
    and those scoped to one of them (rewritten to the label's full name)."""
    out = []
    for item in items:
        scope = _scope(item, labels)
        if scope is None:
            continue
        if scope:
            out.append(f"{scope}:{item.split(':', 1)[1]}")
            continue
        key = item.split("=", 1)[0].strip()
        if any(has_setting(get_expert(split_label(label)[0]).Config, key) for label in labels):
            out.append(item)
    return tuple(out)


def _experiment(spec: SweepSpec, scene: str, seed: int, budget: float, **kw) -> Experiment:
    base = dict(scene=scene, rig=spec.rig, size=spec.size, seed=seed, runs_dir=spec.runs_dir,
                data_dir=spec.data_dir, device=spec.device)
    if budget != 1.0:  # the field exists: load_spec checked it
        base["budget"] = budget
    if spec.scene_seed is not None:
        base["scene_seed"] = spec.scene_seed
    return Experiment(**base, **kw)


def expand(spec: SweepSpec) -> list[Task]:
    """The spec's tasks, each after every task it depends on (ConfigError naming the spec's
    field for a set, an override or a weighting that cannot apply)."""
    tasks: dict[str, Task] = {}

    def add(task: Task) -> str:
        tasks.setdefault(task.id, task)
        return task.id

    for scene in spec.scenes:
        synthetic = not Path(scene).exists() and scene in SCENES
        dataset = "synthetic" if synthetic else read_scene(scene, check_files=False).dataset
        for seed in spec.seeds:
            scene_deps: tuple[str, ...] = ()
            if synthetic:  # generated once, not by every worker that needs it
                scene_seed = seed if spec.scene_seed is None else spec.scene_seed
                scene_deps = (add(Task(f"scene:{scene}-{spec.rig}-{spec.size}-seed{scene_seed}", "scene",
                                       _experiment(spec, scene, seed, 1.0, experts="none", routers="none"))),)
            for budget, preset in ((b, p) for b in spec.budgets for p in spec.presets):
                for index, expert_set in enumerate(spec.expert_sets):
                    _expand_set(spec, add, scene, dataset, seed, budget, preset, index, expert_set, scene_deps)
    return list(tasks.values())


def _expand_set(spec: SweepSpec, add, scene: str, dataset: str, seed: int, budget: float, preset: str | None,
                index: int, expert_set: str, scene_deps: tuple[str, ...]) -> None:
    labels = _labels(spec, expert_set, dataset, preset, index)
    sets = overrides_for(spec.overrides, labels)
    try:  # every override checked against the set's configs before anything runs
        scoped_overrides(list(sets), labels, {lb: get_expert(split_label(lb)[0]).Config for lb in labels},
                         f"{spec.path}: sweep.overrides")
    except ConfigError as exc:
        raise ConfigError(str(exc)) from None
    where = f"{scene}/{{}}/seed{seed}{_budget_suffix(budget)}"
    mixture = bool(spec.routers) and len(labels) >= 2
    expert_analyses = [s for s in spec.steps if s in ("mdc", "trajectories")] if not mixture else []
    expert_ids = tuple(
        add(Task(f"expert:{where.format(label)}", "expert",
                 _experiment(spec, scene, seed, budget, experts=label, routers="none",
                             overrides=overrides_for(sets, [label]),
                             analyses=",".join(expert_analyses) or "none"), scene_deps, (label,)))
        for label in labels)
    if not mixture:
        return
    variant = "+".join(sorted(labels))
    common = dict(experts=",".join(labels), overrides=sets, router_preset=spec.router_preset,
                  router_overrides=spec.router_overrides)
    analyses = [s for s in spec.steps if s in ("fusion", "mdc", "trajectories")]
    mixture_id = add(Task(f"mixture:{where.format(variant)}", "mixture",
                          _experiment(spec, scene, seed, budget, routers=",".join(spec.routers),
                                      analyses=",".join(analyses) or "none", fuse_router=spec.fuse_router,
                                      **common), expert_ids, tuple(labels)))
    if "distill" not in spec.steps or budget != 1.0:  # the distillation study retrains at full budget
        return
    d = spec.distill
    distill = dict(distill=True, distill_router=d.router, distill_weighting=d.weighting, distill_seeds=d.seeds,
                   distill_lambda=d.lam)
    pseudo_id = add(Task(f"pseudo:{where.format(variant)}/{d.router}", "pseudo",
                         _experiment(spec, scene, seed, budget, routers=d.router, distill_only=(), **distill,
                                     **common), (mixture_id,), tuple(labels)))
    from ..bench.distill import SUFFIXES, distill_seeds, weighting_plan

    try:
        plan = weighting_plan(d.weighting, labels)
    except ConfigError as exc:
        raise ConfigError(f"{spec.path}: sweep.distill.weighting: {exc}") from None
    for label in sorted(labels):
        for s in distill_seeds(seed, d.seeds):
            jobs = [("retrained", f"{label}-retrained/from-seed{seed}")]
            jobs += [(kind, f"{variant}/{label}{SUFFIXES[kind]}") for kind in plan[label]]
            for kind, name in jobs:  # a retraining needs only its expert: shared by every set holding it
                add(Task(f"distill:{scene}/{name}/seed{s}{_budget_suffix(budget)}", "distill",
                         _experiment(spec, scene, seed, budget, routers=d.router, distill_only=((label, s, kind),),
                                     **distill, **common), (pseudo_id,), (label,)))


# -- what is stored: the harness's own run ids and keys ----------------------------------------
class _Probed(Exception):
    def __init__(self, run_id: RunId, key: str):
        super().__init__(f"{run_id} {key}")
        self.run_id, self.key = run_id, key


class _ProbeStore(RunStore):
    """A store that stops the harness at the first run it looks up (or would claim or start),
    with that run's id and content key: the harness computes them as it does for training."""

    def _stop(self, run_id, key, *args, **kw):
        raise _Probed(run_id, key)

    reuse = find = resume = begin = claim = _stop


class SceneInfo:
    """What the harness reads of a scene before it trains (dataset, name, root, frame times,
    synthetic size), without loading its images."""

    def __init__(self, root: Path):
        self.scene = read_scene(root, check_files=False)
        self.times = list(self.scene.times)

    synthetic_size = property(SceneData.synthetic_size.fget)


def _probe(call) -> tuple[RunId, str]:
    try:
        call()
    except _Probed as probed:
        return probed.run_id, probed.key
    raise ConfigError("the harness stored nothing to look up")  # a harness change: reported as unknown


def scene_root(exp: Experiment) -> Path | None:
    """A task's scene folder, or None for a synthetic scene not generated yet."""
    path = Path(exp.scene)
    if path.exists():
        return path
    scene_seed = exp.seed if getattr(exp, "scene_seed", None) is None else exp.scene_seed
    out = synthetic_scene_dir(exp.data_dir or Path(exp.runs_dir) / "scenes", exp.scene, exp.rig, exp.size, scene_seed)
    return out if is_prepared_scene(out) else None


def _expert_run(store: RunStore, info: SceneInfo, exp: Experiment, label: str) -> StoredRun | None:
    """The stored run that `exp` would reuse for expert `label`, or None if it would train."""
    configs = {label: get_expert(split_label(label)[0]).Config}
    own = scoped_overrides(list(overrides_for(exp.overrides, [label])), [label], configs)[label]
    kw = {}
    if getattr(exp, "budget", 1.0) != 1.0:
        if "budget" not in inspect.signature(run_expert).parameters:
            raise ConfigError("the harness takes no budget")
        kw["budget"] = exp.budget
    run_id, key = _probe(lambda: run_labeled_expert(label, info, _ProbeStore(store.root), seed=exp.seed,
                                                    preset=exp.preset, overrides=own, **kw))
    run = store.find(run_id, key)
    return StoredRun.load(label, run) if run is not None else None


def task_status(task: Task, store: RunStore | None = None) -> tuple[str, list[Path]]:
    """(CACHED, RUN or CHECK, the stored run folders found) of a task without training: CACHED
    when every run it makes is complete with the key the harness computes now, RUN when one is
    not, CHECK when only the harness can tell (analyses, distillation)."""
    exp = task.experiment
    store = store or RunStore(exp.runs_dir)
    root = scene_root(exp)
    if task.kind == "scene":
        return (CACHED, [root]) if root is not None else (RUN, [])
    if root is None:
        return RUN, []
    if task.kind in ("pseudo", "distill"):
        return CHECK, []
    try:
        info = SceneInfo(root)
        experts = [_expert_run(store, info, exp, label) for label in task.labels]
        if any(r is None for r in experts):
            return RUN, [r.run.dir for r in experts if r is not None]
        found = [r.run.dir for r in experts]
        if task.kind == "expert":
            return (CHECK if exp.analyses != "none" else CACHED), found
        inputs = MixtureInputs(experts, info)
        base_id, base_key = _probe(lambda: run_baselines(inputs, _ProbeStore(store.root), seed=exp.seed))
        runs = [store.find(dataclasses.replace(base_id, method=m), base_key) for m in BASELINES]
        names = [r.strip() for r in (exp.routers or "").split(",") if r.strip()]
        cfgs = router_configs(names, exp.router_preset, exp.router_overrides, info)
        routers = {}
        for name, cfg in cfgs.items():
            rid, key = _probe(lambda name=name, cfg=cfg: run_router(name, inputs, _ProbeStore(store.root), cfg,
                                                                    seed=exp.seed))
            routers[name] = store.find(rid, key)
        runs += list(routers.values())
        if "fusion" in exp.analyses and (router := routers.get(exp.fuse_router)) is not None:
            router_run = StoredRun.load(get_router(exp.fuse_router).method(), router)
            rid, key = _probe(lambda: run_fusion(inputs, _ProbeStore(store.root), router_run, seed=exp.seed))
            runs.append(store.find(rid, key))
        if any(r is None for r in runs):
            return RUN, found + [r.dir for r in runs if r is not None]
        found += [r.dir for r in runs]
        extra = {a.strip() for a in exp.analyses.split(",")} & {"mdc", "trajectories"}
        return (CHECK if extra else CACHED), found
    except (MoegsError, OSError, AttributeError, TypeError, KeyError):  # a harness this cannot read ahead
        return CHECK, []


__all__ = ["CACHED", "CHECK", "KINDS", "RUN", "SceneInfo", "Task", "expand", "overrides_for", "scene_root",
           "task_status"]
