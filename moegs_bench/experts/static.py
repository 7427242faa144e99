"""`static`: time-independent 3DGS, the baseline every dynamic expert must beat."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from ..config import NonNegativeInt, OpenUnitFloat, PositiveInt, SHDegree
from ..data.init import InitData
from ..render.gaussians import Gaussians
from .base import DensifyConfig, Expert, TrainConfig
from .common import GaussianLR, PointSet, init_gaussian_tensors, subsample
from .registry import register_expert


@dataclass
class StaticConfig:
    """3DGS defaults (Kerbl et al. 2023; gsplat's simple_trainer)."""

    sh_degree: SHDegree = 3
    sh_degree_interval: PositiveInt = 1000  # one more SH band every N steps, as 3DGS
    init_opacity: OpenUnitFloat = 0.1
    init_points: PointSet = "merged"  # which prepared point cloud: "merged" or "frame:<f>"
    max_init_points: NonNegativeInt = 100_000  # random subset of the initial cloud (0 = all)
    lr: GaussianLR = field(default_factory=GaussianLR)
    train: TrainConfig = field(default_factory=TrainConfig)


PRESETS: dict[str, dict] = {
    # 3DGS schedule: 30k steps, densify 500..15k every 100, opacity reset every 3k
    "paper": {},
    # synthetic `full` on one GPU: a few minutes
    "fast": {"train": {"iterations": 7000, "densify": {"stop": 5000, "reset_every": 3000}}},
    # CPU demo scale (synthetic `small`)
    "small": {"sh_degree": 1, "sh_degree_interval": 300, "max_init_points": 8000,
              "train": {"iterations": 1000, "checkpoint_every": 500,
                        "densify": {"start": 200, "stop": 800, "every": 100, "reset_every": 0}}},
    # CPU tests (synthetic `tiny`): seconds
    "tiny": {"sh_degree": 1, "sh_degree_interval": 200, "max_init_points": 3000,
             "train": {"iterations": 400, "checkpoint_every": 200,
                       "densify": {"start": 100, "stop": 300, "every": 50, "reset_every": 0}}},
}


@register_expert
class StaticExpert(Expert):
    """One set of 3D Gaussians for all times: means, log-scales, quats, logit opacities, SH."""

    name = "static"
    Config = StaticConfig
    presets = PRESETS

    def __init__(self, config: StaticConfig):
        super().__init__(config)

    @classmethod
    def from_init(cls, init: InitData, config: StaticConfig, generator: torch.Generator | None = None) -> StaticExpert:
        generator = generator or torch.Generator().manual_seed(0)
        pts = subsample(init.points(config.init_points), config.max_init_points, generator)
        expert = cls(config)
        for k, v in init_gaussian_tensors(pts["xyz"], pts["rgb"], config.sh_degree, config.init_opacity,
                                          init.device).items():
            expert.params[k] = nn.Parameter(v)
        return expert

    def gaussians_at(self, t: float | Tensor = 0.0, camera: int | None = None) -> Gaussians:
        p = self.params
        return Gaussians(
            means=p["means"],
            quats=p["quats"],
            scales=torch.exp(p["scales"]),
            opacities=torch.sigmoid(p["opacities"]),
            sh=torch.cat([p["sh0"], p["shN"]], 1),
            sh_degree=self.active_sh_degree,
        )

    def learning_rates(self, step: int, extent: float) -> dict[str, float]:
        return self.config.lr.at(step, self.config.train.iterations, extent)



__all__ = ["StaticExpert", "StaticConfig", "DensifyConfig"]
