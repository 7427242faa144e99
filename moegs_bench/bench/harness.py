"""Train-or-reuse, evaluate and store one method on one scene: an expert (stage 1), the
baselines of an expert set, a router over it (stage 2). Every method is evaluated by the one
evaluation path (`eval.evaluate`) and stored the same way (docs/results.md, docs/moe.md)."""

from __future__ import annotations

import json
import time
import warnings
from collections.abc import Sequence
from contextlib import ExitStack
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from ..config import choose_preset, to_dict
from ..data.datasets import dataset_presets, dataset_segment_frames
from ..data.load import SceneData
from ..errors import ConfigError, StateWarning
from ..eval.evaluate import Evaluation, evaluate_methods, evaluate_views
from ..eval.metrics import LPIPSMetric, metric_notes
from ..eval.perf import storage_mb
from ..experts.budget import apply_budget, split_budget, with_budget
from ..experts.registry import expert_config, get_expert, split_label
from ..experts.segments import SegmentedExpert, load_expert, segment_ranges
from ..experts.views import expert_view_renderer
from ..io import atomic_write_json, save_torch, torch_file_problem
from ..moe.baselines import BASELINES, baseline_renderers, oracle_gain_share
from ..moe.distill import segment_views
from ..moe.pool import ExpertPool
from ..moe.responsibility import METHOD as FUSED
from ..moe.responsibility import (
    accumulate_responsibilities,
    fused_renderer,
    gate_shares,
    responsibility_by_regime,
    responsibility_stats,
)
from ..moe.routers import RouterConfig, build_router, get_router
from ..moe.train_router import load_router, router_renderer, save_router, train_router
from ..progress import ProgressFactory, task
from ..train.loop import TrainResult, train_expert
from . import efficiency as eff
from .code_keys import KEY_MODULES, expert_code, router_code
from .store import Run, RunId, RunStore, code_fingerprint, content_key, scene_fingerprint


@dataclass
class StoredRun:
    """One method on one scene, as stored: its label (an expert label, a baseline or
    `moe-<router>`), the run, whether it was reused, its metrics and notes."""

    label: str
    run: Run
    reused: bool
    metrics: dict[str, float]
    notes: dict[str, str]

    @property
    def train_seconds(self) -> float:
        return self.run.load_timings().get("train", 0.0)

    @classmethod
    def load(cls, label: str, run: Run) -> StoredRun:
        """A completed run read back from the store."""
        summary = run.load_summary()
        return cls(label, run, True, summary["metrics"], summary["notes"])


def default_preset(expert: str, data: SceneData) -> str | None:
    """Preset for an expert on a scene: by synthetic size, else the one the dataset's
    moegs_bench/datasets/<name>.toml names, else `paper` (config.choose_preset)."""
    available = getattr(get_expert(expert), "presets", {})
    return choose_preset(available, data.synthetic_size, dataset_presets(data.scene.dataset).get(expert))


def _finish(run: Run, label: str, evaluation: Evaluation, metrics: dict, notes: dict, timings: dict) -> StoredRun:
    """Store an evaluated run (per-image rows, summary, timings) and mark it complete."""
    run.save_per_image(evaluation.rows)
    run.save_summary(metrics, notes)
    run.save_timings(timings)
    run.complete()
    return StoredRun(label, run, False, metrics, notes)


def run_expert(name: str, data: SceneData, store: RunStore, *, seed: int = 0,
               preset: str | None = None, overrides: dict | None = None, force: bool = False,
               lpips: LPIPSMetric | None = None, variant: str = "default", label: str | None = None,
               segment_frames: int | None = None, progress: ProgressFactory | None = None,
               save_renders: bool = True, budget: float = 1.0) -> StoredRun:
    """Train (or reuse) and evaluate expert `name` on `data`; returns its stored run.

    A completed run with the same content key (config + seed + scene data + code) is reused
    unless `force`; an unfinished one with the same key resumes from its checkpoint.
    label: how the run is named in results of this call (default: `name`);
    segment_frames: train one model per this many frames (default: the dataset file's
    `[segment_frames]` for this expert; 0: one model), evaluated as one expert;
    budget: train for this fraction of the iterations, every step setting scaled with them
    (experts/budget.py), stored under variant `with_budget(variant, budget)` ("b50").
    """
    label = label or name
    preset = preset or default_preset(name, data)
    cfg = apply_budget(expert_config(name, preset, overrides), budget)  # after --set: a fraction of what runs
    if segment_frames is None:
        segment_frames = dataset_segment_frames(data.scene.dataset).get(name, 0)
    ranges = segment_ranges(len(data.times), segment_frames)
    run_config = {"expert": name, "preset": preset, "seed": seed, "config": to_dict(cfg)}
    if len(ranges) > 1:
        run_config["segment_frames"] = segment_frames
    if budget != 1.0:
        run_config["budget"] = float(budget)
    code = expert_code(name)
    key = content_key(run_config, scene_fingerprint(data.scene.root), code)
    run_id = RunId(data.scene.dataset, data.scene.name, name, with_budget(variant, budget), seed)
    if not force and (run := store.reuse(run_id, key, ["model.pt"])) is not None:
        return StoredRun.load(label, run)
    with store.claim(run_id, key):  # another worker running it: wait, then reuse what it stored
        if not force and (run := store.reuse(run_id, key, ["model.pt"])) is not None:
            return StoredRun.load(label, run)
        run = None if force else store.resume(run_id, key)
        run = run or store.begin(run_id, key, run_config, code=code)
        return _expert_run(name, cfg, data, seed, ranges, run, label, progress, lpips, save_renders)


def _expert_run(name: str, cfg, data: SceneData, seed: int, ranges: list[tuple[int, int]], run: Run, label: str,
                progress: ProgressFactory | None, lpips: LPIPSMetric | None, save_renders: bool) -> StoredRun:
    """Train expert `name` (one model, or one per frame range) in the begun or resumed `run`
    of the caller's claim, evaluate it and store it complete."""
    if len(ranges) == 1:
        expert, result = _train_model(name, cfg, data, seed, run, "train_state.pt", task(progress, label))
    else:
        expert, result = _train_segments(name, cfg, data, ranges, seed, run, progress, label)
    model_path = expert.save(run.checkpoint_path("model.pt"))

    renderer = expert_view_renderer(expert, data, background=cfg.train.background)
    evaluation = evaluate_views(renderer, data, "test", lpips, save_dir=run.dir if save_renders else None)
    metrics = dict(evaluation.summary)
    metrics.update({
        "num_gaussians": float(result.num_gaussians),
        "iters_per_second": result.iters_per_second,
        "iterations": float(result.steps),
        "model_mb": storage_mb(model_path),
    })
    if len(ranges) > 1:
        metrics["segments"] = float(len(ranges))
    if result.peak_memory_mb is not None:
        metrics["train_peak_memory_mb"] = result.peak_memory_mb
    speed, speed_notes = eff.expert_efficiency(expert, data, cfg.train.background)
    metrics.update(speed)
    return _finish(run, label, evaluation, metrics, {**metric_notes(lpips), **speed_notes},
                   {"train": result.seconds, "eval": evaluation.seconds})


def _train_model(name: str, cfg, data: SceneData, seed: int, run: Run, state: str, progress,
                 targets=None) -> tuple:
    """A fresh expert trained on `data` (resuming from checkpoints/<state>, deleted once the
    model is trained); targets: the distillation targets replacing its photometric loss's
    (train.loop.train_expert), None for the ground truth. Returns (expert, TrainResult)."""
    torch.manual_seed(seed)
    expert = get_expert(name).from_scene(data, cfg, torch.Generator().manual_seed(seed))
    result = train_expert(expert, data, seed=seed, state_path=run.checkpoint_path(state), progress=progress,
                          targets=targets)
    run.checkpoint_path(state).unlink(missing_ok=True)  # the trained model supersedes it
    return expert, result


def _train_segments(name: str, cfg, data: SceneData, ranges: list[tuple[int, int]], seed: int, run: Run,
                    progress: ProgressFactory | None, label: str,
                    targets_for=None) -> tuple[SegmentedExpert, TrainResult]:
    """One model per frame range, each trained on its frames alone (times renormalised, as a
    method that prepares each segment as a scene); a finished segment's model is kept in
    checkpoints/segments/ and reused when the run resumes. targets_for(keep [V] bool over the
    training views): the distillation targets of a segment's views (None: ground truth)."""
    models, results = [], []
    for k, (start, end) in enumerate(ranges):
        model_path, summary = run.checkpoint_path(f"segments/{k:02d}.pt"), run.checkpoint_path(f"segments/{k:02d}.json")
        if (kept := _kept_segment(model_path, summary, data.device)) is not None:
            models.append(kept[0])
            results.append(kept[1])
            continue
        part = data.temporal_segment(start, end)
        targets = targets_for(segment_views(data.splits["train"], start, end)) if targets_for else None
        expert, result = _train_model(name, cfg, part, seed, run, f"segments/{k:02d}_state.pt",
                                      task(progress, f"{label} frames {start}:{end}"), targets)
        expert.save(model_path)
        atomic_write_json(summary, {k: v for k, v in asdict(result).items() if k != "losses"})
        models.append(expert)
        results.append(result)
        del part  # its images are a copy on the device
    return SegmentedExpert(models, [data.segment_span(s, e) for s, e in ranges]), combine_results(results)


def _kept_segment(model_path: Path, summary: Path, device: torch.device) -> tuple | None:
    """(model, TrainResult) of a segment an interrupted run finished, or None: not finished,
    or unreadable (a StateWarning names the file; the segment is trained again)."""
    if not (model_path.is_file() and summary.is_file()):
        return None
    problem = torch_file_problem(model_path)
    if problem is None:
        try:
            return load_expert(model_path, device), TrainResult(**json.loads(summary.read_text()))
        except (ValueError, TypeError) as exc:  # a damaged summary: JSON or its fields
            problem = f"{summary}: {exc}"
    else:
        problem = f"{model_path}: {problem}"
    warnings.warn(StateWarning(f"{problem}; training the segment again"), stacklevel=3)
    return None


def combine_results(results: Sequence[TrainResult]) -> TrainResult:
    """Several models' training as one: steps, seconds and Gaussians added, speed over all,
    the highest peak memory."""
    steps, seconds = sum(r.steps for r in results), sum(r.seconds for r in results)
    peaks = [r.peak_memory_mb for r in results if r.peak_memory_mb is not None]
    return TrainResult(steps=steps, seconds=seconds, iters_per_second=steps / seconds if seconds > 0 else 0.0,
                       num_gaussians=sum(r.num_gaussians for r in results), final_loss=results[-1].final_loss,
                       peak_memory_mb=max(peaks) if peaks else None)


def run_labeled_expert(label: str, data: SceneData, store: RunStore, *, preset: str | None = None,
                       **kw) -> StoredRun:
    """run_expert for a label `name` or `name@preset` (stored under variant = that preset)."""
    name, own = split_label(label)
    if own is None:
        return run_expert(name, data, store, preset=preset, label=label, **kw)
    return run_expert(name, data, store, preset=own, variant=own, label=label, **kw)


# -- stage 2: baselines and routers over frozen experts --------------------------------------------
class MixtureInputs:
    """What every stage-2 method of one expert set shares: the experts' stored runs (sorted by
    label), the variant they are stored under ("a+b+c"), their run keys, the scene and code
    fingerprints, and the frozen experts (loaded on first use); render_mode: how the pool renders
    its experts (`ExpertPool`; outputs agree to float error, so it is not part of run keys)."""

    def __init__(self, expert_runs: Sequence[StoredRun], data: SceneData, render_mode: str = "auto"):
        if len(expert_runs) < 2:
            raise ConfigError("--router: a mixture needs at least two experts (--experts a,b)")
        self.expert_runs = sorted(expert_runs, key=lambda r: r.label)
        self.data = data
        budgets = {split_budget(r.run.run_id.variant)[1] for r in self.expert_runs}
        if len(budgets) > 1:  # a mixture at budget f mixes the experts trained at budget f
            raise ConfigError(f"--budget: a mixture's experts must share one training budget, got {sorted(budgets)}")
        self.variant = with_budget("+".join(r.label for r in self.expert_runs), budgets.pop())  # "a+b+c[.b50]"
        self.expert_keys = {r.label: r.run.load_config()["key"] for r in self.expert_runs}
        self.scene_fp, self.code = scene_fingerprint(data.scene.root), code_fingerprint(KEY_MODULES["mixture"])
        self._pool: ExpertPool | None = None
        self.render_mode = render_mode

    @property
    def pool(self) -> ExpertPool:
        if self._pool is None:
            experts = [load_expert(r.run.checkpoint_path("model.pt"), self.data.device) for r in self.expert_runs]
            self._pool = ExpertPool(experts, [r.label for r in self.expert_runs], self.data,
                                    render_mode=self.render_mode)
        return self._pool

    def run_id(self, method: str, seed: int) -> RunId:
        return RunId(self.data.scene.dataset, self.data.scene.name, method, self.variant, seed)

    @property
    def best_expert_psnr(self) -> float:
        return max(r.metrics["psnr"] for r in self.expert_runs)

    @property
    def experts_train_seconds(self) -> float:
        return sum(r.train_seconds for r in self.expert_runs)


def run_baselines(inputs: MixtureInputs, store: RunStore, *, seed: int = 0, force: bool = False,
                  lpips: LPIPSMetric | None = None, save_images: bool = True) -> list[StoredRun]:
    """Every registered baseline over the expert set, evaluated together in one pass and
    stored as a run each (method = the baseline's name). Reused when the experts' run keys
    are unchanged, unless `force`."""
    key = content_key({"stage": "baselines", "experts": inputs.expert_keys}, inputs.scene_fp, inputs.code)
    ids = {m: inputs.run_id(m, seed) for m in BASELINES}
    found = {m: None if force else store.reuse(i, key) for m, i in ids.items()}
    if all(found.values()):
        return [StoredRun.load(m, run) for m, run in found.items()]
    with ExitStack() as claims:
        for run_id in sorted(ids.values()):  # one order for every worker: none holds some and waits
            claims.enter_context(store.claim(run_id, key))
        found = {m: None if force else store.reuse(i, key) for m, i in ids.items()}
        if all(found.values()):  # stored by another worker meanwhile
            return [StoredRun.load(m, run) for m, run in found.items()]
        return _baseline_runs(inputs, store, ids, key, lpips, save_images)


def _baseline_runs(inputs: MixtureInputs, store: RunStore, ids: dict[str, RunId], key: str,
                   lpips: LPIPSMetric | None, save_images: bool) -> list[StoredRun]:
    """Begin, evaluate and store every baseline run of `ids` (their claims held by the caller)."""
    runs = {m: store.begin(i, key, {"method": m, "experts": inputs.expert_keys}, code=inputs.code)
            for m, i in ids.items()}
    evals = evaluate_methods(baseline_renderers(inputs.pool, list(ids)), inputs.data, "test", lpips,
                             {m: r.dir for m, r in runs.items()} if save_images else None)
    sizes = eff.mixture_sizes(inputs.expert_runs)
    speed = {m: eff.baseline_efficiency(m, inputs.pool) for m in ids}
    # one pass evaluated every baseline: its time is stored as such, not split between them
    return [_finish(runs[m], m, evals[m], {**evals[m].summary, **sizes, **speed[m][0]},
                    {**metric_notes(lpips), **speed[m][1]}, {"baselines_eval": evals[m].seconds}) for m in ids]


def run_router(name: str, inputs: MixtureInputs, store: RunStore, cfg: RouterConfig, *, seed: int = 0,
               force: bool = False, lpips: LPIPSMetric | None = None, oracle_psnr: float | None = None,
               progress: ProgressFactory | None = None, save_images: bool = True) -> StoredRun:
    """Train (or reuse) router `name` with settings `cfg` over the expert set, evaluate the
    mixture and store it as method `moe-<name>`. A run is reused when its content key
    (experts' run keys + router config + seed + scene + code) matches, unless `force`.
    oracle_psnr: the per-pixel oracle's PSNR, for the oracle gain share."""
    method = get_router(name).method()
    run_config = {"router": name, "experts": inputs.expert_keys, "seed": seed, "config": to_dict(cfg)}
    code = router_code(name)
    key = content_key(run_config, inputs.scene_fp, code)
    run_id = inputs.run_id(method, seed)
    if not force and (run := store.reuse(run_id, key, ["router.pt"])) is not None:
        return StoredRun.load(method, run)
    with store.claim(run_id, key):  # another worker training it: wait, then reuse what it stored
        if not force and (run := store.reuse(run_id, key, ["router.pt"])) is not None:
            return StoredRun.load(method, run)
        run = store.begin(run_id, key, run_config, code=code)
        return _router_run(name, inputs, run, cfg, seed, lpips, oracle_psnr, progress, save_images)


def _router_run(name: str, inputs: MixtureInputs, run: Run, cfg: RouterConfig, seed: int,
                lpips: LPIPSMetric | None, oracle_psnr: float | None, progress: ProgressFactory | None,
                save_images: bool) -> StoredRun:
    """Train router `name` in the begun `run` of the caller's claim, evaluate the mixture and
    store it complete."""
    method = get_router(name).method()
    pool = inputs.pool
    torch.manual_seed(seed)
    router = build_router(name, pool, cfg)
    trained = train_router(router, pool, cfg, seed=seed, progress=task(progress, method))
    save_router(router, run.checkpoint_path("router.pt"))
    evaluation = evaluate_views(router_renderer(router, pool), inputs.data, "test", lpips,
                                save_dir=run.dir if save_images else None)
    best = inputs.best_expert_psnr
    metrics = dict(evaluation.summary)
    metrics.update({"iterations": float(trained.steps), "best_expert_psnr": best,
                    "router_params": float(sum(p.numel() for p in router.parameters())),
                    "experts_train_seconds": inputs.experts_train_seconds})
    notes = metric_notes(lpips)
    share = oracle_gain_share(metrics["psnr"], best, oracle_psnr) if oracle_psnr is not None else None
    if share is None:
        notes["oracle_gain_share"] = "undefined: the per-pixel oracle is no better than the best expert"
    else:
        metrics["oracle_gain_share"] = share
    speed, speed_notes = eff.router_efficiency(router, pool)
    metrics.update({**eff.mixture_sizes(inputs.expert_runs, run.checkpoint_path("router.pt")), **speed})
    notes.update(speed_notes)
    return _finish(run, method, evaluation, metrics, notes, {"train": trained.seconds, "eval": evaluation.seconds})


def run_fusion(inputs: MixtureInputs, store: RunStore, router_run: StoredRun, *, seed: int = 0,
               force: bool = False, lpips: LPIPSMetric | None = None, progress: ProgressFactory | None = None,
               save_images: bool = True) -> StoredRun:
    """The post-hoc fused model of a trained router (MoE-GS App. D): responsibilities over every
    training ray, then every expert's Gaussians with opacity R̄·α rendered together; stored as
    method `moe-fused` (variant: the expert set) with the responsibility statistics and the
    router's gate share per motion regime. Reused while the router run is unchanged."""
    router_key = router_run.run.load_config()["key"]
    run_config = {"stage": "fusion", "router": router_run.label, "router_key": router_key}
    key = content_key(run_config, inputs.scene_fp, inputs.code)
    run_id = inputs.run_id(FUSED, seed)
    if not force and (run := store.reuse(run_id, key, ["responsibilities.pt"])) is not None:
        return StoredRun.load(FUSED, run)
    inputs.pool.check_concatenable(FUSED, "the fused model")
    with store.claim(run_id, key):  # another worker fusing it: wait, then reuse what it stored
        if not force and (run := store.reuse(run_id, key, ["responsibilities.pt"])) is not None:
            return StoredRun.load(FUSED, run)
        run = store.begin(run_id, key, run_config, code=inputs.code)
        return _fused_run(inputs, run, router_run, lpips, progress, save_images)


def _fused_run(inputs: MixtureInputs, run: Run, router_run: StoredRun, lpips: LPIPSMetric | None,
               progress: ProgressFactory | None, save_images: bool) -> StoredRun:
    """The fused model of `router_run` in the begun `run` of the caller's claim: responsibilities,
    evaluation, stored complete."""
    pool = inputs.pool
    router = load_router(router_run.run.checkpoint_path("router.pt"), inputs.data.device)
    t0 = time.perf_counter()
    resp = accumulate_responsibilities(router, pool, "train", progress=task(progress, f"{FUSED} responsibilities"))
    seconds = time.perf_counter() - t0
    save_torch(run.checkpoint_path("responsibilities.pt"), resp.state_dict())
    evaluation = evaluate_views(fused_renderer(pool, resp), inputs.data, "test", lpips,
                                save_dir=run.dir if save_images else None)
    metrics = dict(evaluation.summary)
    speed, speed_notes = eff.fused_efficiency(pool, resp)
    metrics.update({**eff.mixture_sizes(inputs.expert_runs, run.checkpoint_path("responsibilities.pt")), **speed})
    metrics["num_gaussians"] = float(sum(pool.sizes))
    metrics.update(responsibility_stats(resp, pool.names))
    metrics.update(responsibility_by_regime(resp, pool))
    metrics.update(gate_shares(router, pool))
    notes = metric_notes(lpips)
    notes["resp"] = (f"responsibilities (Eq. 14) of {router_run.label}'s gates over every training ray; "
                     "resp_weighted_<expert>: contribution-weighted mean R̄")
    notes.update(speed_notes)
    return _finish(run, FUSED, evaluation, metrics, notes, {"responsibilities": seconds, "eval": evaluation.seconds})


def run_moe(expert_runs: Sequence[StoredRun], data: SceneData, store: RunStore,
            routers: dict[str, RouterConfig], *, seed: int = 0, force: bool = False,
            lpips: LPIPSMetric | None = None, progress: ProgressFactory | None = None,
            save_images: bool = True, fuse: str | None = None, render_mode: str = "auto") -> list[StoredRun]:
    """Stage 2 over trained experts: the baselines, then each router (name -> settings), then
    with `fuse` (a router of `routers`) the fused model of that router; every method stored
    with variant = the expert labels sorted and joined by '+'. Returns them in that order.
    render_mode: how the experts are rendered while training and evaluating (`ExpertPool`)."""
    if fuse is not None and fuse not in routers:
        raise ConfigError(f"--analysis fusion: lifts the gates of router {fuse!r}, which is not trained here "
                          f"(--router {fuse})")
    inputs = MixtureInputs(expert_runs, data, render_mode)
    baselines = run_baselines(inputs, store, seed=seed, force=force, lpips=lpips, save_images=save_images)
    oracle = next((b.metrics["psnr"] for b in baselines if b.label == "oracle-pixel"), None)
    trained = {name: run_router(name, inputs, store, cfg, seed=seed, force=force, lpips=lpips, oracle_psnr=oracle,
                                progress=progress, save_images=save_images) for name, cfg in routers.items()}
    fused = [] if fuse is None else [run_fusion(inputs, store, trained[fuse], seed=seed, force=force, lpips=lpips,
                                                progress=progress, save_images=save_images)]
    return baselines + list(trained.values()) + fused


def lpips_metric(net: str, weights: Path | None, device: torch.device) -> LPIPSMetric:
    """LPIPS with the real backbone if it can be found; otherwise an unavailable metric."""
    return LPIPSMetric(net=net, weights=weights, device=device)


__all__ = ["StoredRun", "default_preset", "run_expert", "run_labeled_expert", "MixtureInputs",
           "run_baselines", "run_router", "run_moe", "run_fusion", "lpips_metric", "FUSED"]
