"""Volume Router (MoE-GS Table 4 ablation): per-Gaussian gates scale opacities, and all
experts' Gaussians are rendered together; no 2D blending."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor, nn

from ...config import NonNegativeFloat, NonNegativeInt, OpenUnitFloat, PositiveFloat
from ...errors import ConfigError
from ...optim.schedules import exp_decay
from ...render.backend import render
from ...render.gaussians import concat, harmonise_sh
from ..pool import ExpertPool
from .base import COMMON_PRESETS, Router, RouterConfig, RouterOutput, per_gaussian, register_router


@dataclass
class VolumeConfig(RouterConfig):
    """gate = sigmoid(logit) per Gaussian, or softmax over a per-Gaussian K-vector; the
    logits follow VAPR's w schedule (RAdam, exponential decay)."""

    gate: Literal["sigmoid", "softmax"] = "sigmoid"
    init_gate: OpenUnitFloat | None = None  # sigmoid gate at start; None: 1/K
    lr_w: NonNegativeFloat = 0.5
    lr_w_final_ratio: PositiveFloat = 0.01
    lr_w_decay_steps: NonNegativeInt = 10_000


@register_router
class VolumeRouter(Router):
    """Volume Router: gate_i multiplies the opacity of Gaussian i; all experts' Gaussians are
    concatenated and rasterised together (one pass). gate = sigmoid(a_i) (`sigmoid`) or, with
    a per-Gaussian K-vector v_i, softmax(v_i)[k] for Gaussian i of expert k (`softmax`).
    The gate maps are each expert's share of the composited alpha, splatted in the same pass."""

    name = "volume"
    title = "Volume Router"
    rank = 1
    Config = VolumeConfig
    # the authors' setting with their Technicolor learning rates
    presets = {**COMMON_PRESETS, "technicolor": {**COMMON_PRESETS["paper"], "lr_w": 0.1}}

    def __init__(self, sizes: list[int], cfg: VolumeConfig, device=None):
        super().__init__(sizes, cfg)
        k = len(sizes)
        if cfg.gate == "softmax":
            self.logits = nn.ParameterList([nn.Parameter(torch.zeros(n, k, device=device)) for n in sizes])
        else:
            init = cfg.init_gate if cfg.init_gate is not None else 1.0 / k
            if not 0.0 < init < 1.0:
                raise ConfigError(f"router.init_gate must be in (0, 1), got {init}")
            self.logits = per_gaussian(sizes, torch.logit(torch.tensor(init)).item(), device)

    @classmethod
    def check_pool(cls, pool: ExpertPool) -> None:
        pool.check_concatenable("--router volume", "the Volume Router")

    def gates_of(self, k: int) -> Tensor:
        """Per-Gaussian gates of expert k: [N_k] in (0,1)."""
        if self.cfg.gate == "softmax":
            return torch.softmax(self.logits[k], -1)[:, k]
        return torch.sigmoid(self.logits[k])

    def forward(self, pool: ExpertPool, cam: int, frame: int, temperature: float) -> RouterOutput:
        gs = pool.view_gaussians(cam, frame)
        self._check_sizes(gs)
        gated = [g.with_opacities(g.opacities * self.gates_of(k)) for k, g in enumerate(harmonise_sh(gs))]
        k = len(gs)
        ids = torch.cat([torch.nn.functional.one_hot(torch.full((n,), i, device=gs[0].device), k).float()
                         for i, n in enumerate(self.sizes)])  # expert id per Gaussian
        viewmats, Ks = pool.data.camera_batch(torch.tensor([cam]))
        bg = self.expert_background(viewmats.device)
        out = render(concat(gated), viewmats, Ks, pool.data.width, pool.data.height,
                     background=pool.backgrounds[0] if bg is None else bg, extras=ids, backend=pool.backend)
        share = out.extras.permute(3, 0, 1, 2)  # [K,C,H,W]
        total = share.sum(0, keepdim=True)
        # uncovered pixels count as equal shares so that the gates always sum to 1
        gates = torch.where(total > 1e-6, share / total.clamp_min(1e-6), torch.full_like(share, 1.0 / k))
        return RouterOutput(out.rgb, gates.detach(), out.depth[..., 0])

    def param_groups(self) -> list[dict]:
        return [{"name": "w", "params": list(self.logits)}]

    def learning_rates(self, step: int) -> dict[str, float]:
        c = self.cfg
        return {"w": exp_decay(step, c.lr_w, c.lr_w * c.lr_w_final_ratio, c.lr_w_decay_steps)}
