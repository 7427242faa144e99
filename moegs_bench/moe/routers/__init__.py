"""MoE-GS routers (paper §3.2, App. B; REFERENCE.md §1): given K frozen experts and one view,
produce gates [K,C,H,W] that sum to 1 over experts and the blended image. One module per
router, registered by name:

    vapr    Volume-aware Pixel Router: per-Gaussian [w, w_dir, t·w_time] splatted with each
            expert's geometry in that expert's own render, decoder Φ, softmax over experts
    pixel   Pixel Router: an MLP of 1x1 convs on per-pixel time and ray, no Gaussians
    volume  Volume Router: per-Gaussian gates multiply opacities; all experts' Gaussians
            rendered together in one pass; no 2D blending
"""

from .base import (
    COMMON_PRESETS,
    ROUTERS,
    Router,
    RouterConfig,
    RouterOutput,
    build_router,
    get_router,
    register_router,
    router_config,
    router_names,
)

__all__ = ["COMMON_PRESETS", "ROUTERS", "Router", "RouterConfig", "RouterOutput", "build_router", "get_router",
           "register_router", "router_config", "router_names"]
