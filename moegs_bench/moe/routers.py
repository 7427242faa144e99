"""MoE-GS routers (paper §3.2, App. B; REFERENCE.md §1): given K frozen experts and one view,
produce gates [K,C,H,W] that sum to 1 over experts and the blended image.

    vapr    Volume-aware Pixel Router: per-Gaussian [w, w_dir, t·w_time] splatted with each
            expert's geometry in that expert's own render, decoder Φ, softmax over experts
    pixel   Pixel Router: an MLP of 1x1 convs on per-pixel time and ray, no Gaussians
    volume  Volume Router: per-Gaussian gates multiply opacities; all experts' Gaussians
            rendered together in one pass; no 2D blending
"""

from __future__ import annotations

from abc import abstractmethod
from dataclasses import dataclass
from typing import ClassVar, Literal

import torch
from torch import Tensor, nn

from ..config import merge
from ..errors import ConfigError
from ..experts.base import Expert
from ..render.backend import render
from ..render.gaussians import Gaussians, concat
from ..train.schedules import exp_decay
from .blend import blend, pixel_rays, softmax_gates
from .pool import ExpertPool


@dataclass
class RouterConfig:
    """Stage-2 settings (REFERENCE.md §1, N3V values)."""

    iterations: int = 5000  # one camera per step
    temperature: float = 1.0  # softmax(logits / T) in training
    eval_temperature: float | None = None  # None: same as `temperature` (authors: train 0.01, eval 1)
    ssim_lambda: float = 0.2  # loss (1-λ)·L1 + λ·D-SSIM
    # VAPR per-Gaussian weights and their initial values
    init_w: float = 0.9
    init_w_dir: float = 0.9
    init_w_time: float = 0.0
    # RAdam learning rates; w decays exponentially to lr_w·lr_w_final_ratio over lr_w_decay_steps
    lr_w: float = 0.5
    lr_w_final_ratio: float = 0.01
    lr_w_decay_steps: int = 10_000
    lr_w_dir: float = 0.5
    lr_w_time: float = 0.05
    lr_phi: float = 0.05
    # Pixel Router MLP (not specified by the paper: a small MLP, our choice)
    pixel_hidden: int = 32
    pixel_layers: int = 2
    lr_pixel: float = 0.005
    # Volume Router: gate = sigmoid(logit) or softmax over a per-Gaussian K-vector
    volume_gate: Literal["sigmoid", "softmax"] = "sigmoid"
    volume_init_gate: float | None = None  # sigmoid gate at start; None: 1/K
    seconds_limit: float = 0.0  # stop training after this many seconds (0: no limit)

    @property
    def eval_temp(self) -> float:
        return self.temperature if self.eval_temperature is None else self.eval_temperature


ROUTER_PRESETS: dict[str, dict] = {
    "paper": {},  # 5000 iterations, N3V learning rates
    "technicolor": {"lr_w": 0.1, "lr_w_time": 0.01, "lr_phi": 0.01},  # authors' Technicolor rates
    "authors": {"temperature": 0.01, "eval_temperature": 1.0},  # authors' train/eval softmax quirk
    "fast": {"iterations": 1500},
    "tiny": {"iterations": 40},
}


def router_config(preset: str | None = None, overrides: dict | None = None) -> RouterConfig:
    """Defaults, then a preset of ROUTER_PRESETS, then overrides (nested dict)."""
    cfg = RouterConfig()
    if preset:
        if preset not in ROUTER_PRESETS:
            raise ConfigError(f"--router-preset: no preset {preset!r} (available: {', '.join(ROUTER_PRESETS)})")
        cfg = merge(cfg, ROUTER_PRESETS[preset])
    if overrides:
        cfg = merge(cfg, overrides, "router")
    if cfg.temperature <= 0 or cfg.eval_temp <= 0:
        raise ConfigError("router.temperature and router.eval_temperature must be > 0")
    return cfg


@dataclass
class RouterOutput:
    """image [C,H,W,3] (the mixture's colour), gates [K,C,H,W] (sum 1 over K where defined)."""

    image: Tensor
    gates: Tensor


ROUTERS: dict[str, type[Router]] = {}


def register_router(cls):
    ROUTERS[cls.name] = cls
    return cls


class Router(nn.Module):
    """A router over the experts of an ExpertPool; only its own parameters are trained."""

    name: ClassVar[str] = "router"

    def __init__(self, sizes: list[int], cfg: RouterConfig):
        super().__init__()
        self.sizes = list(sizes)
        self.cfg = cfg

    @abstractmethod
    def forward(self, pool: ExpertPool, cam: int, frame: int, temperature: float) -> RouterOutput:
        """Render view (cam, frame) through the mixture."""

    @abstractmethod
    def param_groups(self) -> list[dict]:
        """Optimiser groups, each {"name", "params"}."""

    @abstractmethod
    def learning_rates(self, step: int) -> dict[str, float]:
        """Learning rate of every group at `step`."""

    @classmethod
    def check_pool(cls, pool: ExpertPool) -> None:
        """Raise ConfigError if this router cannot combine the pool's experts."""

    def _check_sizes(self, gaussians: list[Gaussians]) -> None:
        got = [len(g) for g in gaussians]
        if got != self.sizes:
            raise ConfigError(f"router {self.name}: experts have {got} Gaussians, router was built for {self.sizes}")


def _per_gaussian(sizes: list[int], value: float, device) -> nn.ParameterList:
    return nn.ParameterList([nn.Parameter(torch.full((n,), float(value), device=device)) for n in sizes])


@register_router
class VolumeAwarePixelRouter(Router):
    """VAPR. Per Gaussian i of expert k: [w, w_dir, t·w_time] splatted in expert k's render
    (background 1 in every channel) -> w2D, w2D_dir, w2D_time [C,H,W]; Φ (1x1 convs 8→6→3→1,
    ReLU, no bias) on [w2D_dir, w2D_time, ray origin, ray direction]; logit = w2D + Φ;
    gates = softmax over experts of logit / T; image = Σ_k G_k · I_k."""

    name = "vapr"

    def __init__(self, sizes: list[int], cfg: RouterConfig, device=None):
        super().__init__(sizes, cfg)
        self.w = _per_gaussian(sizes, cfg.init_w, device)
        self.w_dir = _per_gaussian(sizes, cfg.init_w_dir, device)
        self.w_time = _per_gaussian(sizes, cfg.init_w_time, device)
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
        views = pool.render_view(cam, frame, extras=self.router_channels(t), extras_background=ones, gaussians=gs)
        splat = torch.stack([o.extras for o in views.outputs])  # [K,C,H,W,3]
        origins, dirs = pixel_rays(views.viewmats, views.Ks, pool.data.width, pool.data.height)
        k = splat.shape[0]
        rays = torch.cat([origins, dirs], -1)[None].expand(k, -1, -1, -1, -1)
        logits = splat[..., 0] + self.phi(torch.cat([splat[..., 1:3], rays], -1))[..., 0]
        gates = softmax_gates(logits, temperature)
        return RouterOutput(blend(views.images, gates), gates)

    def param_groups(self) -> list[dict]:
        return [{"name": "w", "params": list(self.w)}, {"name": "w_dir", "params": list(self.w_dir)},
                {"name": "w_time", "params": list(self.w_time)}, {"name": "phi", "params": list(self.phi.parameters())}]

    def learning_rates(self, step: int) -> dict[str, float]:
        c = self.cfg
        return {"w": exp_decay(step, c.lr_w, c.lr_w * c.lr_w_final_ratio, c.lr_w_decay_steps),
                "w_dir": c.lr_w_dir, "w_time": c.lr_w_time, "phi": c.lr_phi}


@register_router
class PixelRouter(Router):
    """Pixel Router: MLP of 1x1 convs on [t, ray origin (3), ray direction (3)] per pixel ->
    K logits; softmax over experts. The last layer starts at zero (uniform gates)."""

    name = "pixel"

    def __init__(self, sizes: list[int], cfg: RouterConfig, device=None):
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
        views = pool.render_view(cam, frame)
        origins, dirs = pixel_rays(views.viewmats, views.Ks, pool.data.width, pool.data.height)
        t = views.t.expand(origins.shape[:-1])[..., None]
        logits = self.mlp(torch.cat([t, origins, dirs], -1)).permute(3, 0, 1, 2)  # [K,C,H,W]
        gates = softmax_gates(logits, temperature)
        return RouterOutput(blend(views.images, gates), gates)

    def param_groups(self) -> list[dict]:
        return [{"name": "mlp", "params": list(self.mlp.parameters())}]

    def learning_rates(self, step: int) -> dict[str, float]:
        return {"mlp": self.cfg.lr_pixel}


def _is_rgb_expert(expert: Expert, g: Gaussians) -> bool:
    return not expert.decodes_pixels and (g.sh is not None or g.features.shape[1] == 3)


def _harmonise_sh(gaussians: list[Gaussians]) -> list[Gaussians]:
    """SH sets of different active degrees as one degree: the unused bands are zero, so every
    Gaussian's colour is unchanged (higher bands of a lower active degree are dropped)."""
    if all(g.sh is None for g in gaussians):
        return gaussians
    degree = max(g.sh_degree for g in gaussians)
    bases = (degree + 1) ** 2
    out = []
    for g in gaussians:
        used = g.sh[:, : (g.sh_degree + 1) ** 2]
        sh = torch.nn.functional.pad(used, (0, 0, 0, bases - used.shape[1]))
        out.append(Gaussians(g.means, g.quats, g.scales, g.opacities, sh=sh, sh_degree=degree))
    return out


@register_router
class VolumeRouter(Router):
    """Volume Router: gate_i multiplies the opacity of Gaussian i; all experts' Gaussians are
    concatenated and rasterised together (one pass). gate = sigmoid(a_i) (`sigmoid`) or, with
    a per-Gaussian K-vector v_i, softmax(v_i)[k] for Gaussian i of expert k (`softmax`).
    The gate maps are each expert's share of the composited alpha, splatted in the same pass."""

    name = "volume"

    def __init__(self, sizes: list[int], cfg: RouterConfig, device=None):
        super().__init__(sizes, cfg)
        k = len(sizes)
        if cfg.volume_gate == "softmax":
            self.logits = nn.ParameterList([nn.Parameter(torch.zeros(n, k, device=device)) for n in sizes])
        else:
            init = cfg.volume_init_gate if cfg.volume_init_gate is not None else 1.0 / k
            if not 0.0 < init < 1.0:
                raise ConfigError(f"router.volume_init_gate must be in (0, 1), got {init}")
            self.logits = _per_gaussian(sizes, torch.logit(torch.tensor(init)).item(), device)

    @classmethod
    def check_pool(cls, pool: ExpertPool) -> None:
        for k, (name, expert) in enumerate(zip(pool.names, pool.experts, strict=True)):
            if not _is_rgb_expert(expert, pool.gaussians(k, 0, 0)):
                raise ConfigError(f"--router volume: expert {name!r} splats learned features decoded per "
                                  "pixel; the Volume Router can only concatenate RGB/SH experts")
        kinds = {pool.gaussians(k, 0, 0).sh is None for k in range(len(pool))}
        if len(kinds) > 1:
            raise ConfigError("--router volume: the experts mix SH and RGB-feature colours; "
                              "the Volume Router needs one colour kind")

    def gates_of(self, k: int) -> Tensor:
        """Per-Gaussian gates of expert k: [N_k] in (0,1)."""
        if self.cfg.volume_gate == "softmax":
            return torch.softmax(self.logits[k], -1)[:, k]
        return torch.sigmoid(self.logits[k])

    def forward(self, pool: ExpertPool, cam: int, frame: int, temperature: float) -> RouterOutput:
        gs = pool.view_gaussians(cam, frame)
        self._check_sizes(gs)
        gated = [g.with_opacities(g.opacities * self.gates_of(k)) for k, g in enumerate(_harmonise_sh(gs))]
        k = len(gs)
        ids = torch.cat([torch.nn.functional.one_hot(torch.full((n,), i, device=gs[0].device), k).float()
                         for i, n in enumerate(self.sizes)])  # expert id per Gaussian
        viewmats, Ks = pool.data.camera_batch(torch.tensor([cam]))
        out = render(concat(gated), viewmats, Ks, pool.data.width, pool.data.height,
                     background=pool.backgrounds[0], extras=ids, backend=pool.backend)
        share = out.extras.permute(3, 0, 1, 2)  # [K,C,H,W]
        total = share.sum(0, keepdim=True)
        # uncovered pixels count as equal shares so that the gates always sum to 1
        gates = torch.where(total > 1e-6, share / total.clamp_min(1e-6), torch.full_like(share, 1.0 / k))
        return RouterOutput(out.rgb, gates.detach())

    def param_groups(self) -> list[dict]:
        return [{"name": "w", "params": list(self.logits)}]

    def learning_rates(self, step: int) -> dict[str, float]:
        c = self.cfg
        return {"w": exp_decay(step, c.lr_w, c.lr_w * c.lr_w_final_ratio, c.lr_w_decay_steps)}


def get_router(name: str) -> type[Router]:
    if name not in ROUTERS:
        raise ConfigError(f"--router: unknown router {name!r} (available: {', '.join(ROUTERS)})")
    return ROUTERS[name]


def build_router(name: str, pool: ExpertPool, cfg: RouterConfig) -> Router:
    """A fresh router `name` sized for the pool's experts, on the pool's device."""
    cls = get_router(name)
    cls.check_pool(pool)
    return cls(pool.sizes, cfg, device=pool.data.device)


__all__ = ["RouterConfig", "ROUTER_PRESETS", "router_config", "RouterOutput", "Router", "ROUTERS",
           "register_router", "VolumeAwarePixelRouter", "PixelRouter", "VolumeRouter", "get_router",
           "build_router"]
