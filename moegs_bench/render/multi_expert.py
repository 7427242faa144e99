"""Render several experts' Gaussians for the same views.

single-pass (MoE-GS Eq. 9, `single_pass.py`): one projection, one tile sort and one blend for
all experts, with a transmittance and colour per expert, so each expert's outputs equal its
own render. multi-pass: one `render` call per expert (the Table 5 ablation "w/o Single-Pass",
and the only choice when an expert's geometry needs gradients).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

from torch import Tensor

from .backend import Backend, RenderOutput, RenderSettings, render
from .gaussians import Gaussians
from .single_pass import frozen, render_single_pass

RenderMode = Literal["auto", "single-pass", "multi-pass"]
RENDER_MODES: tuple[str, ...] = ("auto", "single-pass", "multi-pass")


def resolve_mode(mode: str, experts: Sequence[Gaussians]) -> str:
    """"auto" -> "single-pass" for frozen geometry, else "multi-pass"; others as given."""
    if mode not in RENDER_MODES:
        raise ValueError(f"render mode must be one of {', '.join(RENDER_MODES)}, got {mode!r}")
    if mode == "auto":
        return "single-pass" if frozen(experts) else "multi-pass"
    return mode


def render_experts(gaussians: Sequence[Gaussians], viewmats: Tensor, Ks: Tensor, width: int, height: int,
                   extras: Sequence[Tensor | None] | None = None,
                   backgrounds: Sequence[Tensor | None] | Tensor | None = None,
                   extras_background: Tensor | None = None, backend: Backend = "auto",
                   settings: RenderSettings | None = None, mode: RenderMode = "auto") -> list[RenderOutput]:
    """Render the same C views of K Gaussian sets.

    gaussians: K sets; viewmats [C,4,4], Ks [C,3,3]; extras: K tensors [N_k,E] or [C,N_k,E]
    (same E for all, or None); backgrounds: one [Dc_k] / [C,Dc_k] per expert, or one shared
    tensor, or None (black); extras_background [E] or [C,E] shared by all experts; mode:
    "single-pass", "multi-pass" or "auto" (single-pass unless some geometry requires grad).
    Returns K RenderOutputs (rgb [C,H,W,Dc_k], depth, alpha, extras [C,H,W,E]); multi-pass
    outputs carry the rasteriser's info, single-pass ones an empty info.
    """
    k = len(gaussians)
    extras = list(extras) if extras is not None else [None] * k
    if isinstance(backgrounds, Tensor) or backgrounds is None:
        backgrounds = [backgrounds] * k
    if len(extras) != k or len(backgrounds) != k:
        raise ValueError(f"render_experts: {k} Gaussian sets but {len(extras)} extras and "
                         f"{len(backgrounds)} backgrounds")
    if resolve_mode(mode, gaussians) == "single-pass":
        return render_single_pass(gaussians, viewmats, Ks, width, height, extras=extras, backgrounds=backgrounds,
                                  extras_background=extras_background, backend=backend, settings=settings)
    return [render(g, viewmats, Ks, width, height, background=bg, extras=ex,
                   extras_background=extras_background if ex is not None else None,
                   backend=backend, settings=settings)
            for g, ex, bg in zip(gaussians, extras, backgrounds, strict=True)]


__all__ = ["render_experts", "resolve_mode", "RenderMode", "RENDER_MODES"]
