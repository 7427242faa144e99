"""`Gaussians`: the state of one expert at one time. The boundary between experts and
everything else (renderer, routers, pruning, fusion, trajectories, metrics)."""

from __future__ import annotations

from dataclasses import dataclass, fields, replace

import torch
from torch import Tensor


@dataclass
class Gaussians:
    """Activated 3D Gaussians, all tensors on one device.

    means [N,3]; quats [N,4] (w,x,y,z; need not be normalised); scales [N,3] (activated, > 0);
    opacities [N] (activated, in [0,1], temporal opacity already applied).
    Colour is one of:
      sh [N,K,3] spherical-harmonic coefficients with `sh_degree` (K >= (sh_degree+1)^2), or
      features [N,D] splatted as-is (RGB when D == 3, or learned features decoded per pixel).
    """

    means: Tensor
    quats: Tensor
    scales: Tensor
    opacities: Tensor
    sh: Tensor | None = None
    sh_degree: int = 0
    features: Tensor | None = None

    def __post_init__(self):
        n = self.means.shape[0]
        if (self.sh is None) == (self.features is None):
            raise ValueError("Gaussians need exactly one of `sh` or `features`")
        for f in ("means", "quats", "scales"):
            t = getattr(self, f)
            if t.ndim != 2 or t.shape[0] != n:
                raise ValueError(f"Gaussians.{f}: expected [{n}, k], got {tuple(t.shape)}")
        if self.opacities.shape != (n,):
            raise ValueError(f"Gaussians.opacities: expected [{n}], got {tuple(self.opacities.shape)}")
        if self.sh is not None and (self.sh.shape[0] != n or self.sh.shape[1] < (self.sh_degree + 1) ** 2):
            raise ValueError(f"Gaussians.sh: expected [{n}, >={(self.sh_degree + 1) ** 2}, 3], got {tuple(self.sh.shape)}")
        if self.features is not None and (self.features.ndim != 2 or self.features.shape[0] != n):
            raise ValueError(f"Gaussians.features: expected [{n}, D], got {tuple(self.features.shape)}")

    def __len__(self) -> int:
        return self.means.shape[0]

    @property
    def device(self) -> torch.device:
        return self.means.device

    @property
    def color_dim(self) -> int:
        return 3 if self.sh is not None else self.features.shape[1]

    def detach(self) -> Gaussians:
        return self.map(lambda t: t.detach())

    def to(self, device) -> Gaussians:
        return self.map(lambda t: t.to(device))

    def map(self, fn) -> Gaussians:
        """Apply `fn` to every tensor field."""
        kw = {f.name: getattr(self, f.name) for f in fields(self)}
        return Gaussians(**{k: fn(v) if isinstance(v, Tensor) else v for k, v in kw.items()})

    def index(self, idx: Tensor) -> Gaussians:
        """A subset by boolean mask or index tensor."""
        return self.map(lambda t: t[idx])

    def with_opacities(self, opacities: Tensor) -> Gaussians:
        return replace(self, opacities=opacities)


def harmonise_sh(gaussians: list[Gaussians]) -> list[Gaussians]:
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


def concat(gaussians: list[Gaussians]) -> Gaussians:
    """All Gaussians of several sets in one (same colour kind and SH degree)."""
    first = gaussians[0]
    if any((g.sh is None) != (first.sh is None) or g.sh_degree != first.sh_degree for g in gaussians):
        raise ValueError("concat: all sets need the same colour kind and SH degree")
    cat = lambda name: (torch.cat([getattr(g, name) for g in gaussians])  # noqa: E731
                        if getattr(first, name) is not None else None)
    if first.sh is not None:
        k = max(g.sh.shape[1] for g in gaussians)
        sh = torch.cat([torch.nn.functional.pad(g.sh, (0, 0, 0, k - g.sh.shape[1])) for g in gaussians])
    else:
        sh = None
    return Gaussians(cat("means"), cat("quats"), cat("scales"), cat("opacities"),
                     sh=sh, sh_degree=first.sh_degree, features=cat("features"))
