"""Volume-aware Pixel Router (MoE-GS §3.2, App. B; REFERENCE.md §1): per-Gaussian weights
splatted with each expert's own geometry, decoded per pixel by a small shared network."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from ...config import FiniteFloat, NonNegativeFloat, NonNegativeInt, PositiveFloat
from ...optim.schedules import exp_decay
from ..blend import blend, blend_depth, pixel_rays, softmax_gates
from ..pool import ExpertPool
from .base import COMMON_PRESETS, Router, RouterConfig, RouterOutput, per_gaussian, register_router


@dataclass
class VAPRConfig(RouterConfig):
    """VAPR settings: initial per-Gaussian weights and RAdam learning rates (N3V values).
    w and w_dir are one optimiser group, as in the authors' code: lr_w decaying
    exponentially to lr_w·lr_w_final_ratio over lr_w_decay_steps."""

    init_w: FiniteFloat = 0.9
    init_w_dir: FiniteFloat = 0.9
    init_w_time: FiniteFloat = 0.0
    lr_w: NonNegativeFloat = 0.5
    lr_w_final_ratio: PositiveFloat = 0.01
    lr_w_decay_steps: NonNegativeInt = 10_000
    lr_w_time: NonNegativeFloat = 0.05
    lr_phi: NonNegativeFloat = 0.05


@register_router
class VolumeAwarePixelRouter(Router):
    """VAPR. Per Gaussian i of expert k: [w, w_dir, t·w_time] splatted in expert k's render
    (background 1 in every channel) -> w2D, w2D_dir, w2D_time [C,H,W]; Φ (1x1 convs 8→6→3→1,
    ReLU, no bias) on [w2D_dir, w2D_time, ray origin, ray direction]; logit = w2D + Φ;
    gates = softmax over experts of logit / T; image = Σ_k G_k · I_k."""

    name = "vapr"
    title = "Volume-aware Pixel Router"
    rank = 2
    Config = VAPRConfig
    # the authors' setting with their Technicolor learning rates
    presets = {**COMMON_PRESETS, "technicolor": {**COMMON_PRESETS["paper"], "lr_w": 0.1, "lr_w_time": 0.01, "lr_phi": 0.01}}

    def __init__(self, sizes: list[int], cfg: VAPRConfig, device=None):
        super().__init__(sizes, cfg)
        self.w = per_gaussian(sizes, cfg.init_w, device)
        self.w_dir = per_gaussian(sizes, cfg.init_w_dir, device)
        self.w_time = per_gaussian(sizes, cfg.init_w_time, device)
        self.phi = nn.Sequential(nn.Linear(8, 6, bias=False), nn.ReLU(), nn.Linear(6, 3, bias=False), nn.ReLU(),
                                 nn.Linear(3, 1, bias=False)).to(device)

    def router_channels(self, t: Tensor) -> list[Tensor]:
        """Per-Gaussian channels [N_k,3] = [w, w_dir, t·w_time] of every expert at time t."""
        return [torch.stack([w, wd, t * wt], -1) for w, wd, wt in zip(self.w, self.w_dir, self.w_time, strict=True)]

    def forward(self, pool: ExpertPool, cam: int, frame: int, temperature: float) -> RouterOutput:
        t = pool.data.times[frame]
        gs = pool.view_gaussians(cam, frame)
        self._check_sizes(gs)
        ones = torch.ones(3, device=t.device)  # uncovered pixels: equal weights for all experts
        views = pool.render_view(cam, frame, extras=self.router_channels(t), extras_background=ones, gaussians=gs,
                                 background=self.expert_background(t.device))
        splat = torch.stack([o.extras for o in views.outputs])  # [K,C,H,W,3]
        origins, dirs = pixel_rays(views.viewmats, views.Ks, pool.data.width, pool.data.height)
        k = splat.shape[0]
        rays = torch.cat([origins, dirs], -1)[None].expand(k, -1, -1, -1, -1)
        logits = splat[..., 0] + self.phi(torch.cat([splat[..., 1:3], rays], -1))[..., 0]
        gates = softmax_gates(logits, temperature)
        return RouterOutput(blend(views.images, gates), gates, blend_depth(views.outputs, gates))

    def param_groups(self) -> list[dict]:
        return [{"name": "w", "params": list(self.w) + list(self.w_dir)},
                {"name": "w_time", "params": list(self.w_time)}, {"name": "phi", "params": list(self.phi.parameters())}]

    def learning_rates(self, step: int) -> dict[str, float]:
        c = self.cfg
        return {"w": exp_decay(step, c.lr_w, c.lr_w * c.lr_w_final_ratio, c.lr_w_decay_steps),
                "w_time": c.lr_w_time, "phi": c.lr_phi}
