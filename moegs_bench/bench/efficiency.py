"""Efficiency rows of every stored method (docs/metrics.md, "Efficiency rows"): render FPS,
per-view time and peak memory of the method's evaluation renderer at the scene's and the N3V
resolution (`eval.efficiency`), plus the Gaussian count and model size where a mixture's run
lacks them. Timed on CUDA only: on CPU a note says why the rows are absent."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

from ..data.load import SceneData
from ..eval.efficiency import EfficiencyConfig, measure_efficiency, tensor_bytes
from ..eval.evaluate import ViewRenderer
from ..eval.perf import storage_mb
from ..experts.base import Expert
from ..experts.views import expert_view_renderer
from ..moe.baselines import baseline_renderers
from ..moe.pool import ExpertPool
from ..moe.responsibility import Responsibilities, fused_renderer
from ..moe.routers import Router
from ..moe.train_router import router_renderer

CPU_NOTE = "unavailable on CPU (timings of the reference rasteriser are not comparable)"

# what each kind of method does inside the timed call (docs/metrics.md)
EXPERT_STEPS = "the expert's Gaussians at the view's time, rasterisation (RGB + depth), per-pixel decoding"
MIXTURE_STEPS = "every expert's Gaussians at the view's time (no cache) and rasterisation"
ROUTER_STEPS = f"{MIXTURE_STEPS} with the router's channels, the pixel decoder, the softmax blend and the gate map"
BASELINE_STEPS = f"{MIXTURE_STEPS}, the blend (oracles: the comparison with the resized ground truth)"
FUSED_STEPS = ("every expert's Gaussians at the view's time (no cache), their concatenation with opacity R̄·α, "
               "one rasterisation")


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
    """An expert's rows, rendered as its evaluation renders it (`expert_view_renderer`)."""
    return efficiency_rows(lambda scene: expert_view_renderer(expert, scene, background=background), data,
                           tensor_bytes(expert), EXPERT_STEPS, config)


def timing_pool(pool: ExpertPool, scene: SceneData) -> ExpertPool:
    """The pool's experts on `scene`'s cameras without the per-frame Gaussian cache, so that every
    timed render evaluates the experts' Gaussians at its time as a deployed model would."""
    return ExpertPool(pool.experts, pool.names, scene, backend=pool.backend, cache_mb=0)


def router_efficiency(router: Router, pool: ExpertPool, config: EfficiencyConfig | None = None
                      ) -> tuple[dict[str, float], dict[str, str]]:
    """A router mixture's rows (`router_renderer` over an uncached pool)."""
    return efficiency_rows(lambda scene: router_renderer(router, timing_pool(pool, scene)), pool.data,
                           tensor_bytes(router, *pool.experts), ROUTER_STEPS, config)


def baseline_efficiency(name: str, pool: ExpertPool, config: EfficiencyConfig | None = None
                        ) -> tuple[dict[str, float], dict[str, str]]:
    """A baseline's rows. Its renderer is made afresh for every call: the evaluation renderers
    share the last view's expert images between baselines, which would skip the experts here."""

    def make(scene: SceneData) -> ViewRenderer:
        timed = timing_pool(pool, scene)
        return lambda i: baseline_renderers(timed, [name])[name](i)

    return efficiency_rows(make, pool.data, tensor_bytes(*pool.experts), BASELINE_STEPS, config)


def fused_efficiency(pool: ExpertPool, resp: Responsibilities, config: EfficiencyConfig | None = None
                     ) -> tuple[dict[str, float], dict[str, str]]:
    """The fused model's rows (`fused_renderer` over an uncached pool)."""
    return efficiency_rows(lambda scene: fused_renderer(timing_pool(pool, scene), resp), pool.data,
                           tensor_bytes(*pool.experts, *resp.values), FUSED_STEPS, config)


def mixture_sizes(expert_runs: Sequence, *own_files: Path) -> dict[str, float]:
    """A mixture's size rows from its experts' stored runs (`StoredRun`s): num_gaussians (their
    stored counts added) and model_mb (their model files plus the mixture's own, e.g. router.pt)."""
    files = [r.run.checkpoint_path("model.pt") for r in expert_runs] + list(own_files)
    out = {"model_mb": sum(storage_mb(f) for f in files)}
    if all("num_gaussians" in r.metrics for r in expert_runs):
        out["num_gaussians"] = float(sum(r.metrics["num_gaussians"] for r in expert_runs))
    return out


__all__ = ["CPU_NOTE", "efficiency_rows", "expert_efficiency", "timing_pool", "router_efficiency",
           "baseline_efficiency", "fused_efficiency", "mixture_sizes"]
