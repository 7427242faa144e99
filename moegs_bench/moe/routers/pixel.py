"""Pixel Router (MoE-GS Table 4 ablation): gates from per-pixel time and ray alone, no
Gaussians."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ...config import NonNegativeFloat, NonNegativeInt, PositiveInt
from ..blend import blend, blend_depth, pixel_rays, softmax_gates
from ..pool import ExpertPool
from .base import COMMON_PRESETS, Router, RouterConfig, RouterOutput, register_router


@dataclass
class PixelConfig(RouterConfig):
    """The MLP is not specified by the paper: a small one, our choice."""

    pixel_hidden: PositiveInt = 32
    pixel_layers: NonNegativeInt = 2
    lr_pixel: NonNegativeFloat = 0.005


@register_router
class PixelRouter(Router):
    """Pixel Router: MLP of 1x1 convs on [t, ray origin (3), ray direction (3)] per pixel ->
    K logits; softmax over experts. The last layer starts at zero (uniform gates)."""

    name = "pixel"
    title = "Pixel Router"
    rank = 0
    Config = PixelConfig
    # the paper gives it no Technicolor rates: there, the authors' setting as on N3V
    presets = {**COMMON_PRESETS, "technicolor": COMMON_PRESETS["paper"]}

    def __init__(self, sizes: list[int], cfg: PixelConfig, device=None):
        super().__init__(sizes, cfg)
        layers: list[nn.Module] = []
        width = 7
        for _ in range(cfg.pixel_layers):
            layers += [nn.Linear(width, cfg.pixel_hidden), nn.ReLU()]
            width = cfg.pixel_hidden
        last = nn.Linear(width, len(sizes))
        nn.init.zeros_(last.weight)
        nn.init.zeros_(last.bias)
        self.mlp = nn.Sequential(*layers, last).to(device)

    def forward(self, pool: ExpertPool, cam: int, frame: int, temperature: float) -> RouterOutput:
        views = pool.render_view(cam, frame, background=self.expert_background(pool.data.device))
        origins, dirs = pixel_rays(views.viewmats, views.Ks, pool.data.width, pool.data.height)
        t = views.t.expand(origins.shape[:-1])[..., None]
        logits = self.mlp(torch.cat([t, origins, dirs], -1)).permute(3, 0, 1, 2)  # [K,C,H,W]
        gates = softmax_gates(logits, temperature)
        return RouterOutput(blend(views.images, gates), gates, blend_depth(views.outputs, gates))

    def param_groups(self) -> list[dict]:
        return [{"name": "mlp", "params": list(self.mlp.parameters())}]

    def learning_rates(self, step: int) -> dict[str, float]:
        return {"mlp": self.cfg.lr_pixel}
