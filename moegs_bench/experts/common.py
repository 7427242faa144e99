"""Pieces every Gaussian expert shares: point-cloud initialisation and 3DGS learning rates."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

import numpy as np
import torch
from torch import Tensor

from ..config import NonNegativeFloat, Pattern, PositiveFloat
from ..optim.schedules import exp_decay
from ..render.sh import num_sh_bases, rgb_to_sh0


def knn_mean_sq_dist(points: Tensor, k: int = 3, chunk: int = 4096) -> Tensor:
    """Mean squared distance to the k nearest other points (3DGS's distCUDA2). [N,3] -> [N]."""
    n = points.shape[0]
    if n <= 1:
        return torch.full((n,), 1e-4, device=points.device)
    k = min(k, n - 1)
    out = []
    for i in range(0, n, chunk):
        d2 = torch.cdist(points[i:i + chunk], points).square()
        d2[torch.arange(d2.shape[0]), torch.arange(i, i + d2.shape[0])] = float("inf")  # not itself
        out.append(d2.topk(k, largest=False).values.mean(-1))
    return torch.cat(out).clamp_min(1e-7)


def subsample(arrays: dict[str, np.ndarray], max_points: int, generator: torch.Generator) -> dict[str, np.ndarray]:
    """A random subset of at most max_points rows of every array (0 = keep all)."""
    n = len(arrays["xyz"])
    if max_points <= 0 or n <= max_points:
        return arrays
    idx = torch.randperm(n, generator=generator)[:max_points].sort().values.numpy()
    return {k: v[idx] for k, v in arrays.items()}


def init_gaussian_tensors(xyz: np.ndarray, rgb: np.ndarray, sh_degree: int, init_opacity: float,
                          device: torch.device) -> dict[str, Tensor]:
    """3DGS initialisation from points: means, log-scales from 3-NN distance, identity
    rotations, logit opacity, SH DC from colour and zero higher bands.

    xyz [P,3] float, rgb [P,3] uint8 -> tensors means [P,3], scales [P,3], quats [P,4],
    opacities [P], sh0 [P,1,3], shN [P,K-1,3].
    """
    means = torch.as_tensor(xyz, dtype=torch.float32, device=device)
    colors = torch.as_tensor(rgb, dtype=torch.float32, device=device) / 255.0
    n = means.shape[0]
    scales = torch.log(torch.sqrt(knn_mean_sq_dist(means)))[:, None].repeat(1, 3)
    quats = torch.zeros(n, 4, device=device)
    quats[:, 0] = 1.0
    opacities = torch.logit(torch.full((n,), init_opacity, device=device))
    sh0 = rgb_to_sh0(colors)[:, None, :]
    shN = torch.zeros(n, num_sh_bases(sh_degree) - 1, 3, device=device)
    return {"means": means, "scales": scales, "quats": quats, "opacities": opacities, "sh0": sh0, "shN": shN}


# which prepared point cloud an expert starts from (data.init.InitData.points)
PointSet = Annotated[str, Pattern(r"merged|downsampled|frame:\d+", "'merged', 'downsampled' or 'frame:<f>'")]
PointSetOrAuto = Annotated[str, Pattern(r"auto|merged|downsampled|frame:\d+",
                                        "'auto', 'merged', 'downsampled' or 'frame:<f>'")]


@dataclass
class GaussianLR:
    """3DGS learning rates (REFERENCE.md §2: shared by all four experts' static parts)."""

    means_init: PositiveFloat = 1.6e-4  # x scene extent
    means_final: PositiveFloat = 1.6e-6  # x scene extent
    sh0: NonNegativeFloat = 2.5e-3
    shN: NonNegativeFloat = 2.5e-3 / 20
    opacities: NonNegativeFloat = 0.05
    scales: NonNegativeFloat = 5e-3
    quats: NonNegativeFloat = 1e-3

    def at(self, step: int, max_steps: int, extent: float) -> dict[str, float]:
        return {
            "means": exp_decay(step, self.means_init * extent, self.means_final * extent, max_steps),
            "sh0": self.sh0,
            "shN": self.shN,
            "opacities": self.opacities,
            "scales": self.scales,
            "quats": self.quats,
        }
