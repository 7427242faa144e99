"""The pruning stage: a trained VAPR mixture pruned gate-aware (MoE-GS §3.3, Eq. 10;
`moe.prune`) to each target of `--prune`, every pruned mixture a stored method of its own
(`moe-vapr-p55`, `moe-vapr-p75`, `moe-vapr-t0.02`, `-max` for the importance-max rule, `-sigmoid` for the
authors' rule) holding
its pruned experts and fine-tuned router, evaluated and timed like any mixture."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from ..config import merge, overrides_to_dict, to_dict
from ..data.load import SceneData
from ..errors import ConfigError
from ..eval.evaluate import evaluate_views
from ..eval.metrics import LPIPSMetric, metric_notes
from ..eval.perf import storage_mb
from ..experts.segments import load_expert
from ..io import atomic_write_json, load_torch, save_torch
from ..moe.prune import (
    RULES,
    PruneConfig,
    PruneResult,
    PruneTarget,
    parse_targets,
    prune_mixture,
    pruned_method,
)
from ..moe.routers import get_router
from ..moe.train_router import load_router, router_renderer, save_router
from ..progress import ProgressFactory, task
from . import efficiency as eff
from .code_keys import KEY_MODULES, code_fingerprint
from .harness import MixtureInputs, StoredRun, _finish
from .store import Run, RunStore, content_key

PRUNE_ROUTER = "vapr"  # the router whose mixtures are pruned (its per-Gaussian w defines Eq. 10)
# the code a pruned run's numbers depend on besides the router run it starts from (its own key)
PRUNE_MODULES = (*KEY_MODULES["router"], "moe.prune")
KEEP_FILE = "keep.pt"  # per expert, the mask [N_k] over the unpruned expert's Gaussians of those kept


def prune_settings(spec: str, rule: str = "importance", steps: int | None = None,
                   overrides: Sequence[str] = (), routers: Sequence[str] | None = None
                   ) -> tuple[list[PruneTarget], PruneConfig]:
    """--prune, --prune-rule, --prune-steps and --prune-set KEY=VALUE items -> (targets,
    settings), checked before any training (ConfigError naming the option). routers: those
    the run trains (pruning needs the VAPR among them)."""
    targets = parse_targets(spec)
    if not targets:
        return [], PruneConfig()
    if routers is not None and PRUNE_ROUTER not in routers:
        raise ConfigError(f"--prune: prunes the {PRUNE_ROUTER} mixture, which is not trained here "
                          f"(--router {PRUNE_ROUTER})")
    if rule not in RULES:
        raise ConfigError(f"--prune-rule {rule}: expected one of {', '.join(RULES)}")
    cfg = merge(PruneConfig(rule=rule), overrides_to_dict(list(overrides), "--prune-set"), "--prune-set")
    if steps is not None:
        if steps < 1:
            raise ConfigError(f"--prune-steps {steps}: expected at least 1")
        cfg = merge(cfg, {"steps": steps}, "--prune-steps")
    return targets, cfg


def expert_file(label: str) -> str:
    """The checkpoint name of a pruned expert in its run."""
    return f"experts/{label}.pt"


def run_pruned(inputs: MixtureInputs, store: RunStore, router_run: StoredRun, target: PruneTarget,
               cfg: PruneConfig, *, seed: int = 0, force: bool = False, lpips: LPIPSMetric | None = None,
               progress: ProgressFactory | None = None, save_images: bool = True) -> StoredRun:
    """Prune (or reuse) the mixture of `router_run` to `target` and store it as method
    `pruned_method(router method, target, rule)`. Reused while its content key (the router
    run's key, target, settings, seed, scene, code) is unchanged, unless `force`."""
    method = pruned_method(router_run.label, target, cfg.rule)
    run_config = {"stage": "prune", "router": router_run.label, "router_key": router_run.run.load_config()["key"],
                  "target": {"kind": target.kind, "value": target.value}, "config": to_dict(cfg), "seed": seed}
    code = code_fingerprint(PRUNE_MODULES)
    key = content_key(run_config, inputs.scene_fp, code)
    run_id = inputs.run_id(method, seed)
    files = ["router.pt", KEEP_FILE] + [expert_file(r.label) for r in inputs.expert_runs]
    if not force and (run := store.reuse(run_id, key, files)) is not None:
        return StoredRun.load(method, run)
    with store.claim(run_id, key):  # another worker pruning it: wait, then reuse what it stored
        if not force and (run := store.reuse(run_id, key, files)) is not None:
            return StoredRun.load(method, run)
        run = store.begin(run_id, key, run_config, code=code)
        return _pruned_run(method, inputs, run, router_run, target, cfg, seed, lpips, progress, save_images)


def _pruned_run(method: str, inputs: MixtureInputs, run: Run, router_run: StoredRun, target: PruneTarget,
                cfg: PruneConfig, seed: int, lpips: LPIPSMetric | None, progress: ProgressFactory | None,
                save_images: bool) -> StoredRun:
    """Prune in the begun `run` of the caller's claim, evaluate the pruned mixture, store it."""
    pool = inputs.pool
    router = load_router(router_run.run.checkpoint_path("router.pt"), inputs.data.device)
    result = prune_mixture(router, pool, target, cfg, seed=seed, start_step=int(router_run.metrics.get("iterations", 0)),
                           progress=task(progress, method), what=f"--prune {target.tag}")
    paths = _save_pruned(run, result)
    evaluation = evaluate_views(router_renderer(result.router, result.pool), inputs.data, "test", lpips,
                                save_dir=run.dir if save_images else None)
    metrics = dict(evaluation.summary)
    metrics.update(prune_metrics(result, sum(pool.sizes)))
    metrics.update({"best_expert_psnr": inputs.best_expert_psnr, "unpruned_psnr": router_run.metrics["psnr"],
                    "router_params": float(sum(p.numel() for p in result.router.parameters())),
                    "experts_train_seconds": inputs.experts_train_seconds,
                    "model_mb": sum(storage_mb(p) for p in paths)})
    speed, speed_notes = eff.router_efficiency(result.router, result.pool)
    metrics.update(speed)
    notes = {**metric_notes(lpips), **speed_notes,
             "num_gaussians": f"after pruning {target.tag} of {router_run.label}'s {sum(pool.sizes)} Gaussians "
                              f"({cfg.rule} rule, {cfg.steps} rounds, {cfg.finetune_iterations} router steps after each)"}
    score_s, finetune_s = result.seconds
    return _finish(run, method, evaluation, metrics, notes,
                   {"train": finetune_s, "importance": score_s, "eval": evaluation.seconds})


def prune_metrics(result: PruneResult, unpruned: int) -> dict[str, float]:
    """A pruned mixture's size rows: num_gaussians (kept), the unpruned count, the share
    removed, the last round's threshold τ, Gaussians kept per expert and fine-tuning steps."""
    kept = result.num_gaussians
    out = {"num_gaussians": float(kept), "num_gaussians_unpruned": float(unpruned),
           "pruned_share": 1.0 - kept / unpruned, "iterations": float(sum(s.finetune_steps for s in result.steps))}
    if result.steps and abs(result.steps[-1].tau) < float("inf"):
        out["prune_tau"] = result.steps[-1].tau
    out.update({f"kept_{name}": float(k.sum()) for name, k in zip(result.pool.names, result.keeps, strict=True)})
    return out


def _save_pruned(run: Run, result: PruneResult) -> list:
    """The pruned experts, the router, the keep masks and the rounds (prune.json) in `run`;
    returns the model files (what the model size counts)."""
    paths = [e.save(run.checkpoint_path(expert_file(name)))
             for name, e in zip(result.pool.names, result.pool.experts, strict=True)]
    paths.append(save_router(result.router, run.checkpoint_path("router.pt")))
    save_torch(run.checkpoint_path(KEEP_FILE), {"names": list(result.pool.names),
                                                "keeps": [k.cpu() for k in result.keeps]})
    atomic_write_json(run.dir / "prune.json", {"rounds": [
        {"kept": s.kept, "tau": s.tau if abs(s.tau) < float("inf") else None, "finetune_steps": s.finetune_steps,
         "finetune_loss": s.finetune_loss if s.finetune_loss == s.finetune_loss else None,
         "score_seconds": s.score_seconds, "finetune_seconds": s.finetune_seconds} for s in result.steps]})
    return paths


def run_pruning(expert_runs: Sequence[StoredRun], router_run: StoredRun, data: SceneData, store: RunStore,
                targets: Sequence[PruneTarget], cfg: PruneConfig, *, seed: int = 0, force: bool = False,
                lpips: LPIPSMetric | None = None, progress: ProgressFactory | None = None,
                save_images: bool = True, render_mode: str = "auto") -> list[StoredRun]:
    """Every target's pruned mixture of `router_run` (a VAPR run over `expert_runs`), in the
    order of `targets`."""
    if router_run.label != get_router(PRUNE_ROUTER).method():
        raise ConfigError(f"--prune: prunes the {PRUNE_ROUTER} mixture, not {router_run.label}")
    inputs = MixtureInputs(expert_runs, data, render_mode=render_mode)
    return [run_pruned(inputs, store, router_run, t, cfg, seed=seed, force=force, lpips=lpips, progress=progress,
                       save_images=save_images) for t in targets]


def load_pruned(run: Run, device: torch.device):
    """(router, experts in label order, keep masks) of a stored pruned mixture."""
    kept = load_torch(run.checkpoint_path(KEEP_FILE))
    experts = [load_expert(run.checkpoint_path(expert_file(n)), device) for n in kept["names"]]
    return load_router(run.checkpoint_path("router.pt"), device), experts, kept["keeps"]


__all__ = ["PRUNE_ROUTER", "KEEP_FILE", "prune_settings", "expert_file", "run_pruned", "prune_metrics",
           "run_pruning", "load_pruned"]
