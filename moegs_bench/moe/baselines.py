"""The baselines every mixture is compared with, computed from the same expert renders:
the uniform average, the per-pixel oracle (per pixel, the expert closest to ground truth: an
upper bound of per-pixel routing) and the per-image oracle. Registered by name like the
routers, so a new baseline is one decorated function."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from ..eval.evaluate import ViewOutput, ViewRenderer
from .blend import gate_image, oracle_image, oracle_pixel, uniform_average
from .pool import ExpertPool

# (expert images [K,C,H,W,3] in [0,1], ground truth [C,H,W,3], expert labels) ->
#   (image [C,H,W,3], images to save: name -> [C,H,W,3])
Combine = Callable[[Tensor, Tensor, Sequence[str]], tuple[Tensor, dict[str, Tensor]]]


@dataclass(frozen=True)
class Baseline:
    """A stored method (`name`) shown in tables as `title`, made by `combine`."""

    name: str
    title: str
    combine: Combine


BASELINES: dict[str, Baseline] = {}


def register_baseline(name: str, title: str) -> Callable[[Combine], Combine]:
    """Decorator: register `combine` as baseline `name`."""

    def decorate(combine: Combine) -> Combine:
        BASELINES[name] = Baseline(name, title, combine)
        return combine

    return decorate


@register_baseline("uniform-average", "Uniform average")
def _uniform(images: Tensor, gt: Tensor, labels: Sequence[str]) -> tuple[Tensor, dict[str, Tensor]]:
    # every expert's own render is kept with this baseline (experts/<label>/)
    return uniform_average(images), {f"experts/{label}": images[k] for k, label in enumerate(labels)}


@register_baseline("oracle-pixel", "Oracle (per pixel)")
def _oracle_pixel(images: Tensor, gt: Tensor, labels: Sequence[str]) -> tuple[Tensor, dict[str, Tensor]]:
    image, gates = oracle_pixel(images, gt)
    # the per-pixel best expert (Fig. 1b): coloured, and as a label map of expert indices
    return image, {"gates": torch.stack([gate_image(g) for g in gates.unbind(1)]),
                   "best": gates.argmax(0).to(torch.uint8)}


@register_baseline("oracle-image", "Oracle (per image)")
def _oracle_image(images: Tensor, gt: Tensor, labels: Sequence[str]) -> tuple[Tensor, dict[str, Tensor]]:
    return oracle_image(images, gt)[0], {}


def baseline_renderers(pool: ExpertPool, names: Sequence[str] | None = None,
                       split: str = "test") -> dict[str, ViewRenderer]:
    """method -> renderer of every baseline in `names` (default: all). The experts render a
    view once for all of them (evaluate them in one pass: `eval.evaluate.evaluate_methods`)."""
    data = pool.data
    views = data.splits[split]
    last: dict[int, Tensor] = {}

    def expert_images(i: int) -> Tensor:
        if i not in last:
            last.clear()
            with torch.no_grad():
                last[i] = pool.render_view(int(views.cams[i]), int(views.frames[i])).images.clamp(0, 1)
        return last[i]  # [K,1,H,W,3]

    def renderer(baseline: Baseline) -> ViewRenderer:
        def render_view(i: int) -> ViewOutput:
            gt = data.image_float(split, torch.tensor([i]))
            image, extras = baseline.combine(expert_images(i), gt, pool.names)
            return ViewOutput(image[0], {k: v[0] for k, v in extras.items()})

        return render_view

    return {name: renderer(BASELINES[name]) for name in (names or list(BASELINES))}


def oracle_gain_share(moe_psnr: float, best_expert_psnr: float, oracle_psnr: float) -> float | None:
    """(MoE − best expert) / (oracle − best expert) in PSNR; None when the oracle gains nothing."""
    gap = oracle_psnr - best_expert_psnr
    if gap <= 1e-9:
        return None
    return (moe_psnr - best_expert_psnr) / gap


__all__ = ["Baseline", "BASELINES", "register_baseline", "baseline_renderers", "oracle_gain_share"]
