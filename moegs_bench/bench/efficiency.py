"""Efficiency rows of every stored method (docs/metrics.md, "Efficiency rows"): render FPS,
per-view time and peak memory of the method's evaluation renderer at the scene's and the N3V
resolution (`eval.efficiency`), plus the Gaussian count and model size where a mixture's run
lacks them. A router mixture is timed twice: single-pass (the default rows) and multi-pass
(the same metrics with `MULTIPASS` in their names, `multipass_metric`), the ablation of paper
Table 5. Timed on CUDA only: on CPU a note says why the rows are absent."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

from ..data.load import SceneData
from ..eval.efficiency import EfficiencyConfig, measure_efficiency, tensor_bytes
from ..eval.evaluate import ViewRenderer
from ..eval.perf import storage_mb
from ..experts.base import Expert, frozen
from ..experts.views import expert_view_renderer
from ..moe.baselines import baseline_renderers
from ..moe.pool import ExpertPool
from ..moe.responsibility import Responsibilities, fused_renderer
from ..moe.routers import Router
from ..moe.train_router import router_renderer

CPU_NOTE = "unavailable on CPU (timings of the reference rasteriser are not comparable)"

# the render modes of a mixture's timing (render.multi_expert.render_experts' `mode`)
SINGLE_PASS, MULTI_PASS = "single-pass", "multi-pass"
MULTIPASS = "_multipass"  # infix of the multi-pass rows: fps_multipass, fps_multipass_n3v, ...
RESOLUTION_SUFFIX = "_n3v"  # eval.efficiency's suffix of the rows at 1352x1014

# what each kind of method does inside the timed call (docs/metrics.md)
EXPERT_STEPS = ("the frozen expert's Gaussians at the view's time (its inference path, as in a mixture), "
                "rasterisation (RGB + depth), per-pixel decoding")
MIXTURE_RASTER = {
    SINGLE_PASS: "one rasterisation of all experts' Gaussians together (single-pass: one projection and sort, "
                 "a separate colour and transmittance per expert)",
    MULTI_PASS: "one rasterisation per expert (multi-pass)",
}
FUSED_STEPS = ("every expert's Gaussians at the view's time (no cache), their concatenation with opacity R̄·α, "
               "one rasterisation")


def mixture_steps(render_mode: str) -> str:
    """What a mixture's timed call does up to the experts' images, for `render_mode`."""
    return f"every expert's Gaussians at the view's time (no cache), {MIXTURE_RASTER[render_mode]}"


def router_steps(render_mode: str) -> str:
    return (f"{mixture_steps(render_mode)} with the router's channels, the pixel decoder, the softmax blend and "
            "the gate map")


def baseline_steps(render_mode: str) -> str:
    return f"{mixture_steps(render_mode)}, the blend (oracles: the comparison with the resized ground truth)"


def multipass_metric(metric: str) -> str:
    """The multi-pass row of a timing metric: fps -> fps_multipass, fps_n3v -> fps_multipass_n3v."""
    if metric.endswith(RESOLUTION_SUFFIX):
        return metric[: -len(RESOLUTION_SUFFIX)] + MULTIPASS + RESOLUTION_SUFFIX
    return metric + MULTIPASS


def efficiency_rows(make_renderer: Callable[[SceneData], ViewRenderer], data: SceneData,
                    model_bytes: int, what: str, config: EfficiencyConfig | None = None
                    ) -> tuple[dict[str, float], dict[str, str]]:
    """(metrics, notes) of one method for its run's summary: `eval.efficiency.measure_efficiency`
    on the test views when the scene is on CUDA (or config.on_cpu), else only the note `fps`
    saying why there are no timings."""
    config = config or EfficiencyConfig()
    if data.device.type != "cuda" and not config.on_cpu:
        return {}, {"fps": CPU_NOTE}
    eff = measure_efficiency(make_renderer, data, "test", config, model_bytes, what)
    return eff.metrics, eff.notes


def expert_efficiency(expert: Expert, data: SceneData, background: tuple[float, float, float],
                      config: EfficiencyConfig | None = None) -> tuple[dict[str, float], dict[str, str]]:
    """An expert's rows, rendered as its evaluation renders it (`expert_view_renderer`), frozen
    as in a mixture's expert pool (`experts.base.frozen`): a deployed expert takes its inference
    path, and the mixtures' rows time their experts that way too."""
    with frozen(expert):
        return efficiency_rows(lambda scene: expert_view_renderer(expert, scene, background=background), data,
                               tensor_bytes(expert), EXPERT_STEPS, config)


def timing_pool(pool: ExpertPool, scene: SceneData, render_mode: str = SINGLE_PASS) -> ExpertPool:
    """The pool's experts on `scene`'s cameras without the per-frame Gaussian cache, so that every
    timed render evaluates the experts' Gaussians at its time as a deployed model would;
    render_mode: how the pool renders its experts (single-pass or multi-pass)."""
    if render_mode not in MIXTURE_RASTER:
        raise ValueError(f"timing_pool: render_mode {render_mode!r} is not one of {', '.join(MIXTURE_RASTER)}")
    return ExpertPool(pool.experts, pool.names, scene, backend=pool.backend, cache_mb=0, render_mode=render_mode)


def router_efficiency(router: Router, pool: ExpertPool, config: EfficiencyConfig | None = None
                      ) -> tuple[dict[str, float], dict[str, str]]:
    """A router mixture's rows (`router_renderer` over an uncached pool), timed in both render
    modes: single-pass gives the plain rows (fps, fps_n3v, ...), multi-pass the same metrics
    renamed by `multipass_metric` (fps_multipass, fps_multipass_n3v, ...)."""
    metrics: dict[str, float] = {}
    notes: dict[str, str] = {}
    for mode in (SINGLE_PASS, MULTI_PASS):
        got, said = efficiency_rows(lambda scene, mode=mode: router_renderer(router, timing_pool(pool, scene, mode)),
                                    pool.data, tensor_bytes(router, *pool.experts), router_steps(mode), config)
        rename = (lambda m: m) if mode == SINGLE_PASS else multipass_metric
        metrics.update({rename(k): v for k, v in got.items()})
        notes.update({rename(k): v for k, v in said.items()})
    return metrics, notes


def baseline_efficiency(name: str, pool: ExpertPool, config: EfficiencyConfig | None = None
                        ) -> tuple[dict[str, float], dict[str, str]]:
    """A baseline's rows, single-pass. Its renderer is made afresh for every call: the evaluation
    renderers share the last view's expert images between baselines, which would skip the
    experts here."""

    def make(scene: SceneData) -> ViewRenderer:
        timed = timing_pool(pool, scene)
        return lambda i: baseline_renderers(timed, [name])[name](i)

    return efficiency_rows(make, pool.data, tensor_bytes(*pool.experts), baseline_steps(SINGLE_PASS), config)


def fused_efficiency(pool: ExpertPool, resp: Responsibilities, config: EfficiencyConfig | None = None
                     ) -> tuple[dict[str, float], dict[str, str]]:
    """The fused model's rows (`fused_renderer` over an uncached pool)."""
    return efficiency_rows(lambda scene: fused_renderer(timing_pool(pool, scene), resp), pool.data,
                           tensor_bytes(*pool.experts, *resp.values), FUSED_STEPS, config)


def mixture_sizes(expert_runs: Sequence, *own_files: Path) -> dict[str, float]:
    """A mixture's size rows from its experts' stored runs (`StoredRun`s): num_gaussians (their
    stored counts added) and model_mb, its storage size in MB (their model files plus the
    mixture's own, e.g. router.pt): the names every method's size rows have (docs/metrics.md)."""
    files = [r.run.checkpoint_path("model.pt") for r in expert_runs] + list(own_files)
    out = {"model_mb": sum(storage_mb(f) for f in files)}
    if all("num_gaussians" in r.metrics for r in expert_runs):
        out["num_gaussians"] = float(sum(r.metrics["num_gaussians"] for r in expert_runs))
    return out


__all__ = ["CPU_NOTE", "SINGLE_PASS", "MULTI_PASS", "MULTIPASS", "multipass_metric", "mixture_steps",
           "router_steps", "baseline_steps", "efficiency_rows", "expert_efficiency", "timing_pool", "router_efficiency",
           "baseline_efficiency", "fused_efficiency", "mixture_sizes"]
