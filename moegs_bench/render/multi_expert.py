"""Render several experts' Gaussians for the same views.

Multi-pass: one `render` call per expert, each giving that expert's colour, depth, alpha and
its extra channels (e.g. router weights) from a single rasterisation. A fused single-pass
renderer (one projection/sort for all experts, separate colour and transmittance per expert,
MoE-GS Eq. 9) can replace the body without changing the signature.
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor

from .backend import Backend, RenderOutput, RenderSettings, render
from .gaussians import Gaussians


def render_experts(gaussians: Sequence[Gaussians], viewmats: Tensor, Ks: Tensor, width: int, height: int,
                   extras: Sequence[Tensor | None] | None = None,
                   backgrounds: Sequence[Tensor | None] | Tensor | None = None,
                   extras_background: Tensor | None = None, backend: Backend = "auto",
                   settings: RenderSettings | None = None) -> list[RenderOutput]:
    """Render the same C views of K Gaussian sets.

    gaussians: K sets; viewmats [C,4,4], Ks [C,3,3]; extras: K tensors [N_k,E] or [C,N_k,E]
    (same E for all, or None); backgrounds: one [Dc_k] / [C,Dc_k] per expert, or one shared
    tensor, or None (black); extras_background [E] or [C,E] shared by all experts.
    Returns K RenderOutputs (rgb [C,H,W,Dc_k], depth, alpha, extras [C,H,W,E]).
    """
    k = len(gaussians)
    extras = list(extras) if extras is not None else [None] * k
    if isinstance(backgrounds, Tensor) or backgrounds is None:
        backgrounds = [backgrounds] * k
    if len(extras) != k or len(backgrounds) != k:
        raise ValueError(f"render_experts: {k} Gaussian sets but {len(extras)} extras and "
                         f"{len(backgrounds)} backgrounds")
    return [render(g, viewmats, Ks, width, height, background=bg, extras=ex,
                   extras_background=extras_background if ex is not None else None,
                   backend=backend, settings=settings)
            for g, ex, bg in zip(gaussians, extras, backgrounds, strict=True)]


__all__ = ["render_experts"]
