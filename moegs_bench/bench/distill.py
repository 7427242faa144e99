"""Distillation (MoE-GS §3.4, §4.3, App. G): every expert of a trained mixture retrained from
scratch on the mixture's pseudo-labels (Eq. 11), beside a retrained baseline that sees the
ground truth only, so that a gain is not a seed effect (paper Tables 7, 11, 13).

For an expert label L of the mixture's set, on the mixture's scene (docs/moe.md, Distillation):

    L-retrained          variant "default"   ground truth only (the ordinary loss)
    L-distilled          variant <mixture>   Eq. 11 with the router's gates G'_k
    L-distilled-noweight variant <mixture>   Eq. 11 without masks (the paper's "w/o weight")

<mixture> = "<router method>.seed<k>.<expert set>", e.g. "moe-vapr.seed0.ed3dgs+ex4dgs+stg".
All of them train with the stored expert's config (preset, budget, densification, schedules,
regularisers), at seeds seed+1, ..., seed+N (the mixture's experts have `seed`): a retrained
and a distilled run of one seed share initialisation and view order, so they differ in
supervision only, and neither shares its initialisation with the expert the mixture was
built from.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass

import torch

from ..config import from_dict, to_dict
from ..data.load import SceneData
from ..errors import ConfigError
from ..eval.evaluate import evaluate_views
from ..eval.metrics import LPIPSMetric, metric_notes
from ..eval.perf import storage_mb
from ..experts.registry import get_expert, split_label
from ..experts.segments import SegmentedExpert, segment_ranges
from ..experts.views import expert_view_renderer
from ..moe.distill import DistillConfig, PseudoLabels, pseudo_labels
from ..moe.train_router import load_router
from ..progress import ProgressFactory, task
from ..train.losses import DistillTargets
from . import efficiency as eff
from .code_keys import distill_code
from .harness import MixtureInputs, StoredRun, _finish, _train_model, _train_segments
from .store import Run, RunId, RunStore, content_key, scene_fingerprint

RETRAINED, DISTILLED, NOWEIGHT = "-retrained", "-distilled", "-distilled-noweight"
SUFFIXES = {"routing": DISTILLED, "none": NOWEIGHT}  # weighting -> method suffix
PSEUDO_DIR = "pseudo-labels"  # inside the router's run folder: removed when it is retrained
WEIGHTING_CHOICES = {"routing": ("routing",), "none": ("none",), "both": ("routing", "none")}


def weighting_plan(spec: str, labels: Sequence[str] | None = None) -> dict[str, tuple[str, ...]]:
    """--distill-weighting: comma-separated `KIND` (every expert) or `LABEL:KIND` (one expert),
    KIND routing (G' masks), none (the paper's "w/o weight") or both; unnamed experts get the
    unscoped KIND, else routing. Returns label -> weightings for `labels` ({"": default}
    without labels: the syntax check). ConfigError naming the option for a bad kind or label."""
    default, scoped = "routing", {}
    for item in (x.strip() for x in spec.split(",") if x.strip()):
        label, _, kind = item.rpartition(":")
        if kind not in WEIGHTING_CHOICES:
            raise ConfigError(f"--distill-weighting {spec}: {kind!r} is not routing, none or both")
        if label:
            scoped[label] = kind
        else:
            default = kind
    if labels is None:
        return {"": WEIGHTING_CHOICES[default]}
    unknown = [label for label in scoped if label not in labels]
    if unknown:
        raise ConfigError(f"--distill-weighting {spec}: {', '.join(unknown)} not in the expert set "
                          f"({', '.join(labels)})")
    return {label: WEIGHTING_CHOICES[scoped.get(label, default)] for label in labels}


def distill_seeds(seed: int, count: int) -> list[int]:
    """The seeds of the retrained and distilled trainings: seed+1 .. seed+count."""
    if count < 1:
        raise ConfigError(f"--distill-seeds {count}: needs at least one seed")
    return [seed + 1 + i for i in range(count)]


def mixture_variant(router_run: StoredRun) -> str:
    """The variant of a distilled run: the mixture it learned from ("moe-vapr.seed0.a+b")."""
    rid = router_run.run.run_id
    return f"{rid.method}.seed{rid.seed}.{rid.variant}"


@dataclass
class ExpertRecipe:
    """How a stored expert was trained: its label, expert name, preset, config (dataclass) and
    frames per temporal segment (0: one model); read back from the run's config.json."""

    label: str
    name: str
    preset: str | None
    config: object
    segment_frames: int

    @classmethod
    def from_run(cls, run: StoredRun) -> ExpertRecipe:
        stored = run.run.load_config().get("config", {})
        name = stored.get("expert") or split_label(run.label)[0]
        cfg = from_dict(get_expert(name).Config, stored.get("config", {}), f"{run.run.dir}/config.json")
        return cls(run.label, name, stored.get("preset"), cfg, int(stored.get("segment_frames", 0)))

    def run_config(self, stage: str, seed: int) -> dict:
        out = {"stage": stage, "expert": self.name, "preset": self.preset, "seed": seed, "config": to_dict(self.config)}
        if self.segment_frames:
            out["segment_frames"] = self.segment_frames
        return out


# keep [V] bool over the training views (None: all) -> Eq. 11 targets of those views
TargetsFor = Callable[[torch.Tensor | None], DistillTargets]


def _train(recipe: ExpertRecipe, data: SceneData, seed: int, run: Run, targets_for: TargetsFor | None,
           progress: ProgressFactory | None, label: str) -> tuple:
    """One model, or one per temporal segment as the stored expert had (each segment with the
    pseudo-labels of its own views), trained as the harness trains experts; returns
    (expert, TrainResult)."""
    ranges = segment_ranges(len(data.times), recipe.segment_frames)
    if len(ranges) == 1:
        return _train_model(recipe.name, recipe.config, data, seed, run, "train_state.pt", task(progress, label),
                            targets_for(None) if targets_for else None)
    return _train_segments(recipe.name, recipe.config, data, ranges, seed, run, progress, label, targets_for)


def run_variant(recipe: ExpertRecipe, data: SceneData, store: RunStore, run_id: RunId, run_config: dict, *,
                targets_for: TargetsFor | None = None, force: bool = False, lpips: LPIPSMetric | None = None,
                progress: ProgressFactory | None = None, save_images: bool = True,
                notes: dict | None = None, timings: dict | None = None) -> StoredRun:
    """Train (or reuse) one retraining of a stored expert, evaluate it like any expert and store
    it under `run_id`. run_config: what its content key covers (with the scene and code);
    targets_for: Eq. 11 targets (None: the ordinary loss against ground truth); notes,
    timings: added to the run's own."""
    code = distill_code(recipe.name)
    key = content_key(run_config, scene_fingerprint(data.scene.root), code)
    if not force and (run := store.find(run_id, key)) is not None:
        return StoredRun.load(run_id.method, run)
    with store.claim(run_id, key):  # another worker training it: wait, then reuse what it stored
        if not force and (run := store.find(run_id, key)) is not None:
            return StoredRun.load(run_id.method, run)
        run = None if force else store.resume(run_id, key)
        run = run or store.begin(run_id, key, run_config, code=code)
        return _variant_run(recipe, data, run, targets_for, lpips, progress, save_images, notes, timings)


def _variant_run(recipe: ExpertRecipe, data: SceneData, run: Run, targets_for: TargetsFor | None,
                 lpips: LPIPSMetric | None, progress: ProgressFactory | None, save_images: bool,
                 notes: dict | None, timings: dict | None) -> StoredRun:
    """Train the retraining in the begun or resumed `run` of the caller's claim, evaluate it
    and store it complete."""
    run_id = run.run_id
    expert, result = _train(recipe, data, run_id.seed, run, targets_for, progress, run_id.method)
    model_path = expert.save(run.checkpoint_path("model.pt"))
    renderer = expert_view_renderer(expert, data, background=recipe.config.train.background)
    evaluation = evaluate_views(renderer, data, "test", lpips, save_dir=run.dir if save_images else None)
    metrics = dict(evaluation.summary)
    metrics.update({"num_gaussians": float(result.num_gaussians), "iters_per_second": result.iters_per_second,
                    "iterations": float(result.steps), "model_mb": storage_mb(model_path)})
    if isinstance(expert, SegmentedExpert):
        metrics["segments"] = float(len(expert.models))
    if result.peak_memory_mb is not None:
        metrics["train_peak_memory_mb"] = result.peak_memory_mb
    speed, speed_notes = eff.expert_efficiency(expert, data, recipe.config.train.background)
    metrics.update(speed)
    return _finish(run, run_id.method, evaluation, metrics, {**metric_notes(lpips), **speed_notes, **(notes or {})},
                   {"train": result.seconds, "eval": evaluation.seconds, **(timings or {})})


def mixture_pseudo_labels(expert_runs: Sequence[StoredRun], router_run: StoredRun, data: SceneData, *,
                          force: bool = False, progress: ProgressFactory | None = None) -> PseudoLabels:
    """The pseudo-labels of `router_run`'s mixture over every training view, from the cache in
    its run folder (`pseudo-labels/<key>`, key: the router run's key + scene + code), rendered
    there on first use."""
    inputs = MixtureInputs(expert_runs, data)
    stored = router_run.run.load_config()
    trained_on = sorted(stored.get("config", {}).get("experts", {}))
    if trained_on != sorted(inputs.expert_keys):
        raise ConfigError(f"--distill: router {router_run.label} was trained on {', '.join(trained_on)}, "
                          f"not on {', '.join(sorted(inputs.expert_keys))}")
    key = content_key({"stage": "pseudo-labels", "router_key": stored["key"], "split": "train"},
                      inputs.scene_fp, inputs.code)
    folder = router_run.run.dir / PSEUDO_DIR
    if force and (folder / key).exists():
        shutil.rmtree(folder / key)

    def source():
        return load_router(router_run.run.checkpoint_path("router.pt"), data.device), inputs.pool

    return pseudo_labels(folder, key, data, [r.label for r in inputs.expert_runs], source,
                         progress=task(progress, f"pseudo-labels of {router_run.label}"))


def run_distillation(expert_runs: Sequence[StoredRun], router_run: StoredRun, data: SceneData, store: RunStore,
                     *, seed: int = 0, seeds: int = 1, weighting: str = "routing",
                     cfg: DistillConfig | None = None, force: bool = False, lpips: LPIPSMetric | None = None,
                     progress: ProgressFactory | None = None, save_images: bool = True,
                     only: Collection[tuple[str, int, str]] | None = None) -> list[StoredRun]:
    """For each expert of the mixture `router_run` (over `expert_runs`, trained with `seed`):
    its retrained baseline and its distilled retraining(s), at seeds seed+1 .. seed+`seeds`.
    weighting: routing (G'_k masks), none (the "w/o weight" ablation) or both, for every expert
    or per label (`weighting_plan`: "routing,ed3dgs:both"). Every run is
    reused while its content key (expert config, seed, pseudo-labels' key, λ, weighting, scene,
    code) is unchanged, unless `force`. only: train just these (label, seed, kind) jobs, kind
    "retrained" or a weighting (lets several processes share the work of one study).
    Returns the stored runs: per expert and seed, the retrained one then the distilled one(s)."""
    cfg = cfg or DistillConfig()
    plan = weighting_plan(weighting, [r.label for r in expert_runs])
    seed_list = distill_seeds(seed, seeds)
    labels = mixture_pseudo_labels(expert_runs, router_run, data, force=force, progress=progress)
    variant = mixture_variant(router_run)
    pseudo_key = labels.folder.name
    out: list[StoredRun] = []
    for expert_run in sorted(expert_runs, key=lambda r: r.label):
        recipe = ExpertRecipe.from_run(expert_run)
        for s in seed_list:
            rid = RunId(data.scene.dataset, data.scene.name, recipe.label + RETRAINED, "default", s)
            if only is None or (recipe.label, s, "retrained") in only:
                out.append(run_variant(
                    recipe, data, store, rid, recipe.run_config("retrained", s), force=force, lpips=lpips,
                    progress=progress, save_images=save_images,
                    notes={"training": "retrained from scratch on the ground truth only "
                                       "(baseline of the distilled runs)"}))
            for kind in plan[recipe.label]:
                if only is not None and (recipe.label, s, kind) not in only:
                    continue
                config = {**recipe.run_config("distilled", s), "pseudo_labels": pseudo_key, "mixture": variant,
                          "lambda": cfg.lam, "weighting": kind}
                rid = RunId(data.scene.dataset, data.scene.name, recipe.label + SUFFIXES[kind], variant, s)

                def targets_for(keep, kind=kind, label=recipe.label):
                    return labels.targets(label, kind, data.device, cfg.lam, keep, cfg.device_mb)

                what = "its gates G'" if kind == "routing" else "no masks (w/o weight)"
                out.append(run_variant(
                    recipe, data, store, rid, config, targets_for=targets_for, force=force, lpips=lpips,
                    progress=progress, save_images=save_images,
                    notes={"training": f"distilled (Eq. 11, lambda {cfg.lam}) from {router_run.label}'s mixture "
                                       f"({router_run.run.run_id.variant}, seed {router_run.run.run_id.seed}) "
                                       f"with {what}",
                           "pseudo_labels_seconds": "rendering the mixture's pseudo-labels, once for every "
                                                    "distilled run of this mixture"},
                    timings={"pseudo_labels": labels.seconds}))
    return out


__all__ = ["DISTILLED", "NOWEIGHT", "RETRAINED", "ExpertRecipe", "distill_seeds", "mixture_pseudo_labels",
           "mixture_variant", "run_distillation", "run_variant", "weighting_plan"]
