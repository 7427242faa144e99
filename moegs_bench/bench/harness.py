"""An experiment = (scene, experts, preset, seed): train each expert (or reuse its stored
run), evaluate it on the test views, and store tidy rows. Stage 2 (`run_moe`): baselines and
routers over the trained experts, stored the same way (docs/moe.md)."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from ..config import to_dict
from ..data.load import SceneData
from ..errors import ConfigError
from ..eval.evaluate import evaluate_views, expert_view_renderer
from ..eval.metrics import LPIPSMetric, metric_notes
from ..eval.perf import storage_mb
from ..experts.registry import expert_config, get_expert
from ..train.loop import ProgressFn, train_expert
from .store import Run, RunId, RunStore, code_fingerprint, content_key, scene_fingerprint

# synthetic size -> the expert preset that fits it
SIZE_PRESETS = {"tiny": "tiny", "small": "small", "full": "fast"}


@dataclass
class ExpertRun:
    """One expert on one scene: its stored run, and whether it was reused from an earlier run."""

    name: str
    run: Run
    reused: bool
    metrics: dict[str, float]
    notes: dict[str, str]


def scene_size(data: SceneData) -> str | None:
    """The synthetic size the scene was generated at (None for real datasets)."""
    meta = data.scene.meta
    gen = meta.get("generator") if isinstance(meta.get("generator"), dict) else meta
    size = gen.get("size") if isinstance(gen, dict) else None
    return size if isinstance(size, str) else None


def default_preset(expert: str, data: SceneData) -> str | None:
    """Preset for an expert on a scene: by synthetic size, else the one the dataset's
    datasets/<name>.toml names, else `paper`."""
    from ..data.datasets import load_dataset

    presets = getattr(get_expert(expert), "presets", {})
    size = scene_size(data)
    if size in SIZE_PRESETS and SIZE_PRESETS[size] in presets:
        return SIZE_PRESETS[size]
    try:
        named = load_dataset(data.scene.dataset).presets.get(expert)
    except ConfigError:  # a dataset without a datasets/*.toml entry
        named = None
    if named in presets:
        return named
    return "paper" if "paper" in presets else None


def run_expert(name: str, data: SceneData, store: RunStore, *, seed: int = 0,
               preset: str | None = None, overrides: dict | None = None, force: bool = False,
               lpips: LPIPSMetric | None = None, variant: str = "default",
               progress: Callable[[str], ProgressFn] | None = None,
               save_renders: bool = True) -> ExpertRun:
    """Train (or reuse) and evaluate expert `name` on `data`; returns its stored run.

    A completed run with the same content key (config + seed + scene data + code) is reused
    unless `force`; an unfinished one with the same key resumes from its checkpoint.
    """
    preset = preset or default_preset(name, data)
    cfg = expert_config(name, preset, overrides)
    run_config = {"expert": name, "preset": preset, "seed": seed, "config": to_dict(cfg)}
    key = content_key(run_config, scene_fingerprint(data.scene.root), code_fingerprint())
    run_id = RunId(data.scene.dataset, data.scene.name, name, variant, seed)
    if not force and (run := store.find(run_id, key)) is not None:
        summary = run.load_summary()
        return ExpertRun(name, run, True, summary["metrics"], summary["notes"])
    run = None if force else store.resume(run_id, key)
    run = run or store.begin(run_id, key, run_config)

    torch.manual_seed(seed)
    cls = get_expert(name)
    expert = cls.from_scene(data, cfg, torch.Generator().manual_seed(seed))
    result = train_expert(expert, data, seed=seed, state_path=run.checkpoint_path("train_state.pt"),
                          progress=progress(name) if progress else None)
    model_path = expert.save(run.checkpoint_path("model.pt"))
    run.checkpoint_path("train_state.pt").unlink(missing_ok=True)  # the final model supersedes it

    t0 = time.perf_counter()
    renderer = expert_view_renderer(expert, data, background=cfg.train.background)
    evaluation = evaluate_views(renderer, data, "test", lpips,
                                save_dir=run.dir / "renders" if save_renders else None)
    eval_seconds = time.perf_counter() - t0

    rows = [{**r, "method": name} for r in evaluation.rows]
    run.save_per_image([{k: v for k, v in r.items() if k != "method"} for r in rows])
    metrics = dict(evaluation.summary)
    metrics.update({
        "num_gaussians": float(result.num_gaussians),
        "iters_per_second": result.iters_per_second,
        "iterations": float(result.steps),
        "model_mb": storage_mb(model_path),
    })
    if result.peak_memory_mb is not None:
        metrics["train_peak_memory_mb"] = result.peak_memory_mb
    notes = metric_notes(lpips)
    run.save_summary(metrics, notes)
    run.save_timings({"train": result.seconds, "eval": eval_seconds})
    run.complete()
    return ExpertRun(name, run, False, metrics, notes)


def lpips_metric(net: str, weights: Path | None, device: torch.device) -> LPIPSMetric:
    """LPIPS with the real backbone if it can be found; otherwise an unavailable metric."""
    return LPIPSMetric(net=net, weights=weights, device=device)


# -- stage 2: routers over frozen experts -------------------------------------------------------
ROUTER_METHODS = ("vapr", "pixel", "volume")


def split_expert_label(label: str) -> tuple[str, str | None]:
    """'static@tiny' -> ('static', 'tiny'); 'stg' -> ('stg', None)."""
    name, _, preset = label.partition("@")
    return name, (preset or None)


def resolve_expert_specs(spec: str) -> list[str]:
    """Expert labels from --experts: a set size 2/3/4, or comma-separated `name` or
    `name@preset` (one expert in two configurations: `static@tiny,static@small`)."""
    from ..experts.registry import resolve_expert_list

    if spec.strip().isdigit() or "@" not in spec:
        return resolve_expert_list(spec)
    labels = [s.strip() for s in spec.split(",") if s.strip()]
    for label in labels:
        name, preset = split_expert_label(label)
        resolve_expert_list(name)
        if preset is not None:
            expert_config(name, preset)  # one clear error for an unknown preset
    if len(set(labels)) != len(labels):
        raise ConfigError(f"--experts {spec}: an expert is named twice")
    return labels


def resolve_routers(spec: str) -> list[str]:
    """--router vapr|pixel|volume|all|none (comma-separated allowed) -> router names."""
    items = [s.strip() for s in spec.split(",") if s.strip()]
    if items == ["none"]:
        return []
    if items == ["all"]:
        return list(ROUTER_METHODS)
    bad = [s for s in items if s not in ROUTER_METHODS]
    if bad or not items:
        raise ConfigError(f"--router {spec}: expected vapr, pixel, volume, all or none")
    return list(dict.fromkeys(items))


def default_router_preset(data: SceneData) -> str:
    """Router preset for a scene: by synthetic size (tiny -> tiny, small/full -> fast), else paper."""
    return {"tiny": "tiny", "small": "fast", "full": "fast"}.get(scene_size(data) or "", "paper")


def expert_overrides(label: str, overrides: list[str] | tuple[str, ...], labels: list[str]) -> list[str]:
    """The --set items that apply to expert `label`: unscoped `KEY=VALUE` items, and
    `LABEL:KEY=VALUE` items scoped to it (the scope must name one of `labels`)."""
    out = []
    for item in overrides:
        key = item.split("=", 1)[0]
        if ":" not in key:
            out.append(item)
            continue
        scope, rest = item.split(":", 1)
        if scope not in labels:
            raise ConfigError(f"--set {item}: {scope!r} is not one of the experts ({', '.join(labels)})")
        if scope == label:
            out.append(rest)
    return out


def run_labeled_expert(label: str, data: SceneData, store: RunStore, *, preset: str | None = None,
                       **kw) -> ExpertRun:
    """run_expert for a label `name` or `name@preset` (stored under variant = that preset)."""
    name, own = split_expert_label(label)
    if own is None:
        return run_expert(name, data, store, preset=preset, **kw)
    r = run_expert(name, data, store, preset=own, variant=own, **kw)
    return ExpertRun(label, r.run, r.reused, r.metrics, r.notes)


@dataclass
class MoERun:
    """One stage-2 method (a router or a baseline) over an expert set, stored as a run."""

    method: str
    run: Run
    reused: bool
    metrics: dict[str, float]
    notes: dict[str, str]
    train_seconds: float = 0.0


def _load_pool(expert_runs: list[ExpertRun], data: SceneData):
    from ..moe.pool import ExpertPool

    experts = []
    for r in expert_runs:
        cls = get_expert(split_expert_label(r.name)[0])
        experts.append(cls.load(r.run.checkpoint_path("model.pt"), data.device))
    return ExpertPool(experts, [r.name for r in expert_runs], data)


def _store_eval(run: Run, evaluation, metrics: dict, notes: dict, timings: dict) -> MoERun:
    run.save_per_image(evaluation.rows)
    run.save_summary(metrics, notes)
    run.save_timings(timings)
    run.complete()
    return MoERun(run.run_id.method, run, False, metrics, notes, timings.get("train", 0.0))


def _reuse(run: Run) -> MoERun:
    s = run.load_summary()
    return MoERun(run.run_id.method, run, True, s["metrics"], s["notes"], run.load_timings().get("train", 0.0))


def run_moe(expert_runs: list[ExpertRun], data: SceneData, store: RunStore, routers: list[str], *,
            seed: int = 0, router_preset: str | None = None, router_overrides: dict | None = None,
            force: bool = False, lpips: LPIPSMetric | None = None,
            progress: Callable[[str], ProgressFn] | None = None, save_images: bool = True) -> list[MoERun]:
    """Stage 2 over trained experts: the baselines (uniform average, per-pixel and per-image
    oracles) and each router in `routers`, every one stored as a run of method `moe-<router>`
    / `<baseline>` and variant = the labels joined by '+'.

    A router run is reused when its content key (experts' run keys + router config + seed +
    scene + code) matches a completed run, unless `force`. Returns baselines then routers.
    """
    from ..moe.oracle import BASELINES, evaluate_baselines, oracle_gain_share
    from ..moe.routers import build_router, router_config
    from ..moe.train_router import evaluate_router, save_router, train_router

    if len(expert_runs) < 2:
        raise ConfigError("--router: a mixture needs at least two experts (--experts a,b)")
    expert_runs = sorted(expert_runs, key=lambda r: r.name)
    variant = "+".join(r.name for r in expert_runs)
    expert_keys = {r.name: r.run.load_config()["key"] for r in expert_runs}
    scene_fp, code = scene_fingerprint(data.scene.root), code_fingerprint()
    pool = None
    notes_base = metric_notes(lpips)

    base_key = content_key({"stage": "baselines", "experts": expert_keys}, scene_fp, code)
    base_ids = {m: RunId(data.scene.dataset, data.scene.name, m, variant, seed) for m in BASELINES}
    found = {m: None if force else store.find(i, base_key) for m, i in base_ids.items()}
    if all(found.values()):
        baselines = [_reuse(found[m]) for m in BASELINES]
    else:
        pool = _load_pool(expert_runs, data)
        runs = {m: store.begin(i, base_key, {"method": m, "experts": expert_keys}) for m, i in base_ids.items()}
        t0 = time.perf_counter()
        ev = evaluate_baselines(pool, lpips, experts_dir=runs["uniform-average"].dir / "experts" if save_images else None,
                                oracle_gates_dir=runs["oracle-pixel"].dir / "gates" if save_images else None)
        seconds = (time.perf_counter() - t0) / len(BASELINES)
        baselines = [_store_eval(runs[m], ev.baselines[m], dict(ev.baselines[m].summary), notes_base, {"eval": seconds})
                     for m in BASELINES]
    best = max(r.metrics["psnr"] for r in expert_runs)
    oracle_psnr = next(b.metrics["psnr"] for b in baselines if b.method == "oracle-pixel")
    experts_train = sum(r.run.load_timings().get("train", 0.0) for r in expert_runs)

    results = []
    for name in routers:
        cfg = router_config(router_preset, router_overrides)
        run_config = {"router": name, "experts": expert_keys, "seed": seed, "config": to_dict(cfg)}
        key = content_key(run_config, scene_fp, code)
        run_id = RunId(data.scene.dataset, data.scene.name, f"moe-{name}", variant, seed)
        if not force and (run := store.find(run_id, key)) is not None:
            results.append(_reuse(run))
            continue
        if pool is None:
            pool = _load_pool(expert_runs, data)
        run = store.begin(run_id, key, run_config)
        torch.manual_seed(seed)
        router = build_router(name, pool, cfg)
        trained = train_router(router, pool, cfg, seed=seed, progress=progress(f"moe-{name}") if progress else None)
        save_router(router, run.checkpoint_path("router.pt"))
        t0 = time.perf_counter()
        ev = evaluate_router(router, pool, cfg.eval_temp, lpips, save_dir=run.dir if save_images else None)
        metrics = dict(ev.summary)
        metrics.update({"iterations": float(trained.steps), "best_expert_psnr": best,
                        "router_params": float(sum(p.numel() for p in router.parameters())),
                        "experts_train_seconds": experts_train})
        notes = dict(notes_base)
        share = oracle_gain_share(metrics["psnr"], best, oracle_psnr)
        if share is None:
            notes["oracle_gain_share"] = "undefined: the per-pixel oracle is no better than the best expert"
        else:
            metrics["oracle_gain_share"] = share
        results.append(_store_eval(run, ev, metrics, notes,
                                   {"train": trained.seconds, "eval": time.perf_counter() - t0}))
    return baselines + results
