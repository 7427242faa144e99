"""Volume-aware Pixel Router (MoE-GS §3.2, App. B; REFERENCE.md §1): per-Gaussian weights
splatted with each expert's own geometry, decoded per pixel by a small shared network."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
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
        if not (self.training or torch.is_grad_enabled()):  # evaluation: the fused inference path
            return self.infer(pool, cam, frame, temperature)
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

    def inference_channels(self, t: Tensor) -> list[Tensor]:
        """`router_channels(t)` with autograd off: [w, w_dir, 0] and [0, 0, w_time] are kept
        (rebuilt when a weight changes), so each expert's channels are one multiply-add."""
        key = tuple((p.data_ptr(), p._version) for p in (*self.w, *self.w_dir, *self.w_time))
        if getattr(self, "_channels", (None,))[0] != key:
            zeros = [torch.zeros_like(w) for w in self.w]
            self._channels = (key, [(torch.stack([w, wd, z], -1), torch.stack([z, z, wt], -1))
                                    for w, wd, wt, z in zip(self.w, self.w_dir, self.w_time, zeros, strict=True)])
        return [torch.addcmul(base, timed, t) for base, timed in self._channels[1]]

    @torch.no_grad()
    def infer(self, pool: ExpertPool, cam: int, frame: int, temperature: float) -> RouterOutput:
        """`forward` for inference (`forward` comes here in eval mode with autograd off):
        `render_views` then `mix`. Equal to the training forward up to float rounding."""
        return self.mix(self.render_views(pool, cam, frame), temperature)

    @torch.no_grad()
    def render_views(self, pool: ExpertPool, cam: int, frame: int):
        """Every expert's render of view (cam, frame) with this router's channels (`ExpertViews`)."""
        t = pool.data.times[frame]
        gs = pool.view_gaussians(cam, frame)
        self._check_sizes(gs)
        ones = torch.ones(3, device=t.device)
        return pool.render_view(cam, frame, extras=self.inference_channels(t), extras_background=ones,
                                gaussians=gs, background=self.expert_background(t.device))

    @torch.no_grad()
    def mix(self, views, temperature: float) -> RouterOutput:
        """Φ, gates and blends from the experts' renders (`ExpertViews` with the router's
        channels). Φ's first layer is split into its splatted-channel part, applied to the
        [K,C,H,W,3] splat by a weight whose w column is zero, and its ray part, computed once
        for all experts (the origin is one point per camera); no concatenation is built."""
        splat = torch.stack([o.extras for o in views.outputs])  # [K,C,H,W,3]
        height, width = splat.shape[2:4]
        origins, dirs = pixel_rays(views.viewmats, views.Ks, width, height)
        w1, w2, w3 = self.phi[0].weight, self.phi[2].weight, self.phi[4].weight  # [6,8], [3,6], [1,3]
        # Φ's input is [w_dir, w_time, origin, direction]
        rays = F.linear(dirs, w1[:, 5:8]) + F.linear(origins[:, 0, 0], w1[:, 2:5])[:, None, None]  # [C,H,W,6]
        splat_w1 = F.pad(w1[:, 0:2], (1, 0))  # [6,3]: the w channel enters the logit directly
        hidden = torch.relu(F.linear(splat, splat_w1) + rays)  # [K,C,H,W,6]
        logits = splat[..., 0] + F.linear(torch.relu(F.linear(hidden, w2)), w3)[..., 0]
        gates = softmax_gates(logits, temperature)
        return RouterOutput(blend(views.images, gates), gates, blend_depth(views.outputs, gates))

    def param_groups(self) -> list[dict]:
        return [{"name": "w", "params": list(self.w) + list(self.w_dir)},
                {"name": "w_time", "params": list(self.w_time)}, {"name": "phi", "params": list(self.phi.parameters())}]

    def learning_rates(self, step: int) -> dict[str, float]:
        c = self.cfg
        return {"w": exp_decay(step, c.lr_w, c.lr_w * c.lr_w_final_ratio, c.lr_w_decay_steps),
                "w_time": c.lr_w_time, "phi": c.lr_phi}
