"""One experiment on one scene, as `moegs-bench run` does it and a notebook can call it:
resolve the scene (a prepared folder, or a synthetic scene generated on first use), train or
reuse every expert (stage 1), then the baselines and routers over them (stage 2), and keep
the results table of the store current.

    result = run_experiment(Experiment(experts="2", routers="all", size="tiny"))
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..config import ROUTER_SIZE_PRESETS, choose_preset, scoped_overrides
from ..data.datasets import dataset_default_experts, dataset_expert_sets, dataset_router_preset
from ..data.load import SceneData, load_scene
from ..data.scene import is_prepared_scene
from ..data.synthetic import SCENES, generate_synthetic, synthetic_scene_dir
from ..device import resolve_device
from ..errors import ConfigError
from ..eval.metrics import LPIPSMetric
from ..experts.budget import check_budget
from ..experts.registry import available_experts, check_labels, get_expert, split_label
from ..moe.distill import DistillConfig
from ..moe.routers import RouterConfig, get_router, router_config, router_names
from ..progress import ProgressFactory, task
from ..render.multi_expert import RENDER_MODES
from .analysis import ANALYSES, AnalysisSettings, run_mdc, run_trajectories
from .distill import distill_seeds, run_distillation, weighting_plan
from .harness import StoredRun, lpips_metric, run_labeled_expert, run_moe
from .prune import PRUNE_ROUTER, prune_settings, run_pruning
from .store import RunStore, write_results_table

DEFAULT_ROUTER = "vapr"  # the paper's Volume-aware Pixel Router: what `run` mixes by default


@dataclass
class Experiment:
    """What `run` does: the command line's options, with the same defaults.

    scene: a prepared scene folder or a synthetic scene name (rig, size, seed choose which);
    experts: comma-separated labels (`name` or `name@preset`), a paper set size "2"/"3"/"4"
    (the scene's dataset file names the set), "all" (every available expert), or None for the
    dataset file's `default_experts` set (every available expert without one);
    overrides: `KEY=VALUE` or `LABEL:KEY=VALUE` expert settings; routers: names, "all" or
    "none" (comma-separated), or None: the VAPR over the default expert set, none when
    `experts` is given (`router_spec`); router_overrides likewise for the routers (scoped by
    router name). With routers, the baselines (uniform average, oracles) run too.
    """

    scene: str = "mixed"
    rig: str = "n3v"
    size: str | None = None  # default: tiny on CPU, full with CUDA
    seed: int = 0
    experts: str | None = None
    # fraction of each expert's iterations, every step setting scaled with them (experts/budget.py;
    # MoE-GS Table 6); runs at a budget are stored under variant "b50", their mixtures "<set>.b50"
    budget: float = 1.0
    # seed of a synthetic scene (None: `seed`); a seed study fixes it so every seed sees one scene
    scene_seed: int | None = None
    preset: str | None = None
    overrides: tuple[str, ...] = ()
    routers: str | None = None  # None: DEFAULT_ROUTER when `experts` is None, else none
    router_preset: str | None = None
    router_overrides: tuple[str, ...] = ()
    force: bool = False
    runs_dir: Path = Path("runs")
    data_dir: Path | None = None  # where synthetic scenes are generated (default: RUNS/scenes)
    device: str = "auto"
    lpips_net: str = "alex"
    lpips_weights: Path | None = None
    analyses: str = "none"  # after the runs: fusion, mdc, trajectories, all or none (comma-separated)
    fuse_router: str = "vapr"  # whose gates the fused model lifts
    # how mixtures render their experts (render.multi_expert.render_experts): auto (single-pass
    # for frozen experts), single-pass or multi-pass; the efficiency rows time both regardless
    render_mode: str = "auto"
    mdc_frames: int | None = None  # MDC over this many evenly spaced frames (None: every frame)
    mdc_pairs: int | None = None  # at most this many ordered camera pairs per frame (None: all)
    trajectory_gaussians: int = 2000  # Gaussians tracked per expert
    # distillation (MoE-GS Eq. 11; bench/distill.py): retrain every expert on the mixture of
    # `distill_router`, beside a ground-truth retraining, at seeds seed+1 .. seed+distill_seeds
    distill: bool = False
    distill_router: str = "vapr"
    distill_weighting: str = "routing"  # routing (G' masks), none ("w/o weight"), both; LABEL:KIND for one
    distill_seeds: int = 1
    distill_lambda: float | None = None  # Eq. 11's λ (None: moe.distill.DistillConfig's)
    # only these (label, seed, kind) retrainings, kind "retrained"/"routing"/"none": lets
    # several processes share one study's work (None: all of them)
    distill_only: tuple[tuple[str, int, str], ...] | None = None
    # gate-aware pruning of the VAPR mixture (MoE-GS Eq. 10; bench/prune.py): "none", or targets
    # "55,75" (percent of all its Gaussians removed, methods moe-vapr-p55, ...) or "t0.02" (a
    # threshold); rule importance (Eq. 10), importance-max (its max over views) or sigmoid (keep
    # sigmoid(w) >= threshold); rounds
    # (None: moe.prune.PruneConfig's); --prune-set KEY=VALUE items for the other settings
    prune: str = "none"
    prune_rule: str = "importance"
    prune_steps: int | None = None
    prune_overrides: tuple[str, ...] = ()


@dataclass
class ExperimentResult:
    """The scene, the store, each expert's stored run (stage 1), every stage-2 method's
    (baselines, routers, then pruned mixtures; empty without routers) and the LPIPS metric used."""

    data: SceneData
    store: RunStore
    experts: list[StoredRun]
    mixtures: list[StoredRun] = field(default_factory=list)
    lpips: LPIPSMetric | None = None
    distilled: list[StoredRun] = field(default_factory=list)  # retrained and distilled experts


def default_size(device: torch.device) -> str:
    """`full` with CUDA; `tiny` on CPU, where every expert and router must train in minutes."""
    return "full" if device.type == "cuda" else "tiny"


def resolve_scene(exp: Experiment, device: torch.device, progress: ProgressFactory | None = None,
                  log: Callable[[str], None] = lambda _: None) -> Path:
    """A prepared scene folder, or a synthetic scene name generated (once) under the data folder."""
    path = Path(exp.scene)
    if path.exists():
        if not is_prepared_scene(path):
            raise ConfigError(f"--scene {exp.scene}: folder has no scene.json (run `moegs-bench prepare` first)")
        return path
    if exp.scene not in SCENES:
        raise ConfigError(f"--scene {exp.scene!r}: neither a prepared scene folder nor a synthetic scene "
                          f"({', '.join(SCENES)})")
    size = exp.size or default_size(device)
    scene_seed = exp.seed if exp.scene_seed is None else exp.scene_seed
    out = synthetic_scene_dir(exp.data_dir or Path(exp.runs_dir) / "scenes", exp.scene, exp.rig, size, scene_seed)
    if not is_prepared_scene(out):
        log(f"preparing synthetic scene {exp.scene} ({exp.rig} rig, {size}) in {out}")
    generate_synthetic(out, scene=exp.scene, rig=exp.rig, size=size, seed=scene_seed, device=device,
                       progress=task(progress, f"render {exp.scene}"))
    return out


def resolve_experts(spec: str | None, dataset: str) -> list[str]:
    """Expert labels from --experts: None (the dataset file's `default_experts` set; every
    available expert without one), "all", a set size N (the dataset's `[expert_sets]` in
    moegs_bench/datasets/<dataset>.toml), or comma-separated labels."""
    if spec is None:
        default = dataset_default_experts(dataset)
        return available_experts() if default is None else resolve_experts(str(default), dataset)
    spec = spec.strip()
    if spec == "all":
        return available_experts()
    if spec.isdigit():
        sets = dataset_expert_sets(dataset)
        if int(spec) not in sets:
            have = ", ".join(str(n) for n in sorted(sets)) or "none"
            raise ConfigError(f"--experts {spec}: dataset {dataset!r} names no expert set of that size "
                              f"(moegs_bench/datasets/{dataset}.toml [expert_sets]: {have})")
        return check_labels(list(sets[int(spec)]), f"--experts {spec}")
    return check_labels([s.strip() for s in spec.split(",") if s.strip()], f"--experts {spec}")


def router_spec(exp: Experiment) -> str:
    """--router as given; without it the VAPR when the experts are the default set (the
    no-argument run shows a mixture), none when --experts names them (stage 1 only)."""
    if exp.routers is not None:
        return exp.routers
    return DEFAULT_ROUTER if exp.experts is None else "none"


def resolve_routers(spec: str) -> list[str]:
    """--router NAMES|all|none (comma-separated) -> registered router names."""
    items = [s.strip() for s in spec.split(",") if s.strip()]
    known = router_names()
    if items == ["none"]:
        return []
    if items == ["all"]:
        return known
    bad = [s for s in items if s not in known]
    if bad or not items:
        raise ConfigError(f"--router {spec}: expected {', '.join(known)}, all or none")
    return list(dict.fromkeys(items))


def router_configs(names: list[str], preset: str | None, overrides: tuple[str, ...] | list[str],
                   data: SceneData | None = None) -> dict[str, RouterConfig]:
    """Each router's settings: a preset (default: the one for a synthetic scene's size, else
    the dataset file's `router_preset`, else paper), then --router-set items (scoped by
    router name)."""
    size = data.synthetic_size if data is not None else None
    named = dataset_router_preset(data.scene.dataset) if data is not None else None
    scoped = scoped_overrides(list(overrides), names, {n: get_router(n).Config for n in names}, "--router-set")
    return {n: router_config(n, preset or choose_preset(get_router(n).presets, size, named, ROUTER_SIZE_PRESETS),
                             scoped[n]) for n in names}


def resolve_analyses(spec: str) -> list[str]:
    """--analysis fusion,mdc,trajectories|all|none -> analysis names."""
    items = [s.strip() for s in spec.split(",") if s.strip()]
    if items == ["none"]:
        return []
    if items == ["all"]:
        return list(ANALYSES)
    bad = [s for s in items if s not in ANALYSES]
    if bad or not items:
        raise ConfigError(f"--analysis {spec}: expected {', '.join(ANALYSES)}, all or none")
    return list(dict.fromkeys(items))


def run_experiment(exp: Experiment, progress: ProgressFactory | None = None,
                   log: Callable[[str], None] = lambda _: None) -> ExperimentResult:
    """Run `exp`: scene, experts, then (with routers) baselines, routers and the fused model;
    then the analyses; store everything and rewrite the store's results table. progress: one
    task per training; log: one-line messages (what is being prepared)."""
    routers = resolve_routers(router_spec(exp))  # a bad --router fails before any training
    analyses = resolve_analyses(exp.analyses)
    budget = check_budget(exp.budget)
    if budget != 1.0 and exp.distill:
        raise ConfigError("--budget: the distillation study retrains at the full budget (leave out --budget)")
    if exp.render_mode not in RENDER_MODES:
        raise ConfigError(f"--render {exp.render_mode}: expected {', '.join(RENDER_MODES)}")
    if "fusion" in analyses and exp.fuse_router not in routers:
        raise ConfigError(f"--analysis fusion: needs the router whose gates it lifts (--router {exp.fuse_router})")
    distill = _distill_settings(exp, routers) if exp.distill else None
    prune_targets, prune_cfg = prune_settings(exp.prune, exp.prune_rule, exp.prune_steps, exp.prune_overrides, routers)
    device = resolve_device(exp.device)
    root = resolve_scene(exp, device, progress, log)
    data = load_scene(root, device, with_gt=True)
    labels = resolve_experts(exp.experts, data.scene.dataset)
    if distill is not None:
        weighting_plan(exp.distill_weighting, labels)  # a label outside the set fails before training
    configs = {label: get_expert(split_label(label)[0]).Config for label in labels}
    expert_sets = scoped_overrides(list(exp.overrides), labels, configs, "--set")
    router_cfgs = router_configs(routers, exp.router_preset, exp.router_overrides, data) if routers else {}
    store = RunStore(exp.runs_dir)
    lpips = lpips_metric(exp.lpips_net, exp.lpips_weights, device)
    experts = [run_labeled_expert(label, data, store, seed=exp.seed, preset=exp.preset, overrides=expert_sets[label],
                                  force=exp.force, lpips=lpips, progress=progress, budget=budget)
               for label in labels]
    write_results_table(exp.runs_dir)
    mixtures = []
    if routers:
        mixtures = run_moe(experts, data, store, router_cfgs, seed=exp.seed, force=exp.force, lpips=lpips,
                           progress=progress, fuse=exp.fuse_router if "fusion" in analyses else None,
                           render_mode=exp.render_mode)
        write_results_table(exp.runs_dir)
    pruned = []  # kept apart from `mixtures` until the end: analyses render those over the unpruned experts
    if prune_targets:
        router_run = next(m for m in mixtures if m.label == get_router(PRUNE_ROUTER).method())
        pruned = run_pruning(experts, router_run, data, store, prune_targets, prune_cfg, seed=exp.seed,
                             force=exp.force, lpips=lpips, progress=progress, render_mode=exp.render_mode)
        write_results_table(exp.runs_dir)
    distilled = []
    if distill is not None:
        router_run = next(m for m in mixtures if m.label == get_router(exp.distill_router).method())
        distilled = run_distillation(experts, router_run, data, store, seed=exp.seed, seeds=exp.distill_seeds,
                                     weighting=exp.distill_weighting, cfg=distill, force=exp.force, lpips=lpips,
                                     progress=progress, only=exp.distill_only)
        write_results_table(exp.runs_dir)
    settings = AnalysisSettings(exp.mdc_frames, exp.mdc_pairs, exp.trajectory_gaussians, exp.seed)
    if "mdc" in analyses:
        run_mdc(experts, mixtures, data, settings, progress=progress)
    if "trajectories" in analyses:
        run_trajectories(experts, data, settings, progress=progress)
    if {"mdc", "trajectories"} & set(analyses):
        write_results_table(exp.runs_dir)
    return ExperimentResult(data, store, experts, mixtures + pruned, lpips, distilled)


def _distill_settings(exp: Experiment, routers: list[str]) -> DistillConfig:
    """--distill's settings, checked before any training (ConfigError naming the option)."""
    if exp.distill_router not in routers:
        raise ConfigError(f"--distill: learns from router {exp.distill_router}'s mixture, which is not trained "
                          f"here (--router {exp.distill_router})")
    weighting_plan(exp.distill_weighting)
    distill_seeds(exp.seed, exp.distill_seeds)
    return DistillConfig() if exp.distill_lambda is None else DistillConfig(lam=exp.distill_lambda)


__all__ = ["DEFAULT_ROUTER", "Experiment", "ExperimentResult", "default_size", "resolve_scene",
           "resolve_experts", "router_spec", "resolve_routers", "resolve_analyses", "router_configs", "run_experiment"]
