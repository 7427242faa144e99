"""An experiment = (scene, experts, preset, seed): train each expert (or reuse its stored
run), evaluate it on the test views, and store tidy rows."""

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
