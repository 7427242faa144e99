"""`4dgs`: 4DGaussians (Wu et al. 2024), canonical Gaussians deformed by a HexPlane field.

A HexPlane (six feature planes xy, xz, yz, xt, yt, zt at two spatial resolutions) is sampled
at each Gaussian's canonical position and the time; a small MLP turns the 32 features into
offsets of position, log-scale, quaternion, opacity logit and SH. Training starts with a
coarse stage (plain 3DGS, no deformation), then a fine stage that trains the field with grid
regularisers (plane TV, time smoothness, time planes towards 1). REFERENCE.md §2 "4DGaussians".
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Annotated, Literal

import torch
import torch.nn.functional as F
from gsplat.strategy import DefaultStrategy
from torch import Tensor, nn

from ..config import (
    FiniteFloat,
    NonNegativeFloat,
    NonNegativeInt,
    OpenUnitFloat,
    PositiveFloat,
    PositiveInt,
    Range,
    SHDegree,
)
from ..data.init import InitData
from ..errors import ConfigError
from ..optim.schedules import exp_decay
from ..render.gaussians import Gaussians
from ..render.sh import num_sh_bases
from .base import DensifyConfig, Expert, TrainConfig
from .common import GaussianLR, PointSetOrAuto, init_gaussian_tensors, subsample
from .heads import DeformHeads, check_precision
from .registry import register_expert

# planes as (first axis, second axis) over (x, y, z, t) = (0, 1, 2, 3), 4DGaussians' order
PLANES: tuple[tuple[str, int, int], ...] = (
    ("xy", 0, 1), ("xz", 0, 2), ("xt", 0, 3), ("yz", 1, 2), ("yt", 1, 3), ("zt", 2, 3),
)
HEADS = ("dx", "ds", "dr", "do", "dsh")


GridSize = Annotated[int, Range(2)]  # grid cells along one axis (interpolation needs two)


# -- configuration -----------------------------------------------------------------------------
@dataclass
class DeformLR:
    """Deformation learning rates (REFERENCE.md §2; both x scene extent, log-linear decay)."""

    mlp_init: PositiveFloat = 1.6e-4
    mlp_final: PositiveFloat = 1.6e-5
    grid_init: PositiveFloat = 1.6e-3
    grid_final: PositiveFloat = 1.6e-4


def _fourdgs_train() -> TrainConfig:
    # 3000 coarse + 14000 fine, batch 4 views, L1 only (REFERENCE.md §2); no opacity reset
    return TrainConfig(
        iterations=17_000, batch_size=4, ssim_lambda=0.0,
        densify=DensifyConfig(start=500, stop=10_000, every=100, grad_threshold=2e-4,
                              prune_opacity=0.005, reset_every=0),
    )


@dataclass
class FourDGSConfig:
    """4DGaussians defaults (REFERENCE.md §2; the original's dynerf configuration)."""

    sh_degree: SHDegree = 3
    sh_degree_interval: PositiveInt = 1000  # one more SH band every N steps, as 3DGS
    init_opacity: OpenUnitFloat = 0.1
    init_points: PointSetOrAuto = "auto"  # "auto": "downsampled" when the scene has it, else "merged"
    max_init_points: NonNegativeInt = 100_000  # random subset of the initial cloud (0 = all)
    # HexPlane field
    grid_resolution: tuple[GridSize, GridSize, GridSize, GridSize] = (64, 64, 64, 150)  # x, y, z, t
    grid_multires: tuple[PositiveInt, ...] = (1, 2)  # multiplies the spatial resolutions only
    grid_features: PositiveInt = 16  # per level; levels are concatenated
    grid_init_range: tuple[FiniteFloat, FiniteFloat] = (0.1, 0.5)  # spatial planes U(a, b); time planes 1
    # False: t in [0,1) spans the whole time axis; True: the original feeds t into a [-1,1]
    # grid directly, so only its second half is used
    compat_half_time_axis: bool = False
    net_width: PositiveInt = 128
    # dtype of the deformation heads' matrix products: "float32" as the original, or
    # "bfloat16" (float32 accumulation and outputs) for tensor cores
    mlp_precision: Literal["float32", "bfloat16"] = "float32"
    # stages and regularisers
    coarse_iterations: NonNegativeInt = 3000  # no deformation before this step
    plane_tv_weight: NonNegativeFloat = 2e-4  # spatial planes
    time_smoothness_weight: NonNegativeFloat = 1e-3  # second difference along t of the time planes
    l1_time_planes_weight: NonNegativeFloat = 1e-4  # |1 - time plane|
    # "tv": total variation (K-Planes / the 4DGaussians paper); "second_difference": what the
    # original code computes for the spatial planes (squared second difference along one axis)
    plane_tv_mode: Literal["tv", "second_difference"] = "tv"
    # learning rates and densification
    lr: GaussianLR = field(default_factory=GaussianLR)
    deform_lr: DeformLR = field(default_factory=DeformLR)
    lr_max_steps: PositiveInt = 20_000  # decay horizon of the scheduled rates (position_lr_max_steps)
    stage_local_schedules: bool = True  # schedules and densify windows restart at the fine stage
    fresh_optimizer_at_fine: bool = True  # the original builds a new Adam for the fine stage
    max_gaussians: PositiveInt = 360_000  # no growth at or above this count
    prune_min_gaussians: NonNegativeInt = 0  # prune only above this count (the original code: 200000)
    train: TrainConfig = field(default_factory=_fourdgs_train)


PRESETS: dict[str, dict] = {
    # the original schedule: 3000 coarse + 14000 fine, batch 4
    "paper": {},
    # synthetic `full` (50 frames) on one GPU: a few minutes
    # (bfloat16 head products: the iteration cost goal of docs/performance.md)
    "fast": {"grid_resolution": [64, 64, 64, 50], "coarse_iterations": 1000, "lr_max_steps": 8000,
             "mlp_precision": "bfloat16",
             "train": {"iterations": 8000, "densify": {"start": 500, "stop": 5000}}},
    # CPU demo scale (synthetic `small`, 24 frames)
    "small": {"sh_degree": 1, "sh_degree_interval": 300, "max_init_points": 8000,
              "grid_resolution": [32, 32, 32, 24], "coarse_iterations": 300, "lr_max_steps": 1500,
              "deform_lr": {"mlp_init": 1.6e-3, "mlp_final": 1.6e-4, "grid_init": 1.6e-2, "grid_final": 1.6e-3},
              "train": {"iterations": 1500, "batch_size": 2, "checkpoint_every": 500,
                        "densify": {"start": 200, "stop": 1000, "every": 100}}},
    # CPU tests (synthetic `tiny`, 8 frames): seconds
    "tiny": {"sh_degree": 1, "sh_degree_interval": 200, "max_init_points": 3000,
             "grid_resolution": [16, 16, 16, 8], "coarse_iterations": 100, "lr_max_steps": 400,
             "deform_lr": {"mlp_init": 1.6e-3, "mlp_final": 1.6e-4, "grid_init": 1.6e-2, "grid_final": 1.6e-3},
             "train": {"iterations": 400, "batch_size": 1, "checkpoint_every": 200,
                       "densify": {"start": 50, "stop": 250, "every": 50}}},
}


def _check_config(cfg: FourDGSConfig) -> None:
    if len(cfg.grid_resolution) != 4 or min(cfg.grid_resolution) < 2:
        raise ConfigError(f"4dgs.grid_resolution: expected 4 sizes >= 2 (x, y, z, t), got {cfg.grid_resolution}")
    if not cfg.grid_multires or min(cfg.grid_multires) < 1:
        raise ConfigError(f"4dgs.grid_multires: expected positive multipliers, got {cfg.grid_multires}")
    if len(cfg.grid_init_range) != 2:
        raise ConfigError(f"4dgs.grid_init_range: expected [low, high], got {cfg.grid_init_range}")
    if cfg.plane_tv_mode not in ("tv", "second_difference"):
        raise ConfigError(f"4dgs.plane_tv_mode: {cfg.plane_tv_mode!r} is not 'tv' or 'second_difference'")
    check_precision(cfg.mlp_precision, "4dgs.mlp_precision")


# -- the HexPlane field ------------------------------------------------------------------------
def sample_plane(plane: Tensor, uv: Tensor) -> Tensor:
    """Bilinear lookup: plane [1,F,H,W], uv [N,2] in [-1,1] (u along W, v along H;
    align_corners=True, border padding) -> [N,F]."""
    out = F.grid_sample(plane, uv.view(1, 1, -1, 2), mode="bilinear", padding_mode="border",
                        align_corners=True)
    return out[0, :, 0].t()


def axes(coords: Tensor, a: int, b: int) -> Tensor:
    """Columns a < b of coords [N,D] -> [N,2], as a strided view (a list index would copy
    an index tensor to the device at every call)."""
    return coords[:, a:b + 1:b - a]


def hat_weights(u: Tensor, size: int) -> Tensor:
    """Linear-interpolation weights over `size` grid nodes of coordinates u [...] in [-1,1]
    (align_corners=True, border: u is clamped): [...,size] with w[n,j] = max(0, 1 - |j - pos_n|),
    the weights grid_sample uses, as a dense matrix so that a lookup is a matrix product whose
    backward needs no atomic scatter (all Gaussians share one time, so a time plane's scatter
    would pile onto a single row)."""
    pos = ((u + 1.0) * (0.5 * (size - 1))).clamp(0.0, size - 1.0)
    nodes = torch.arange(size, device=u.device, dtype=u.dtype)
    return torch.relu(1.0 - (nodes - pos[..., None]).abs())


class HexPlaneField(nn.Module):
    """Six planes per level. The plane of axes (a, b) has shape [1, F, R_b, R_a]; features of
    one level are the product over its planes, levels are concatenated."""

    def __init__(self, resolution: tuple[int, ...], multires: tuple[int, ...], features: int,
                 init_range: tuple[float, ...] = (0.1, 0.5), generator: torch.Generator | None = None):
        super().__init__()
        self.levels = len(multires)
        self.features = features
        self.planes = nn.ParameterDict()
        for level, m in enumerate(multires):
            res = [r * m for r in resolution[:3]] + [resolution[3]]  # time resolution unscaled
            for name, a, b in PLANES:
                shape = (1, features, res[b], res[a])
                if b == 3:
                    value = torch.ones(shape)  # time planes start neutral (a product with 1)
                else:
                    low, high = init_range
                    value = low + (high - low) * torch.rand(shape, generator=generator)
                self.planes[f"l{level}_{name}"] = nn.Parameter(value)

    @property
    def out_dim(self) -> int:
        return self.levels * self.features

    def forward(self, coords: Tensor) -> Tensor:
        """coords [N,4] (x, y, z, t in [-1,1]) -> features [N, levels*F]."""
        out = []
        for level in range(self.levels):
            feat = None
            for name, a, b in PLANES:
                f = sample_plane(self.planes[f"l{level}_{name}"], axes(coords, a, b))
                feat = f if feat is None else feat * f
            out.append(feat)
        return torch.cat(out, dim=-1)

    def features_at_times(self, xyz: Tensor, times: Tensor) -> Tensor:
        """Features of points xyz [N,3] (in [-1,1]) at each time coordinate of `times` [T] (in
        [-1,1]) -> [T, N, levels*F]; equal to forward() at each time up to rounding.

        The spatial planes do not depend on t, so their product is computed once for all
        times. A time plane at time t is one row of the plane (interpolated along t), looked up
        along its spatial axis with `hat_weights`: all T rows in one product [N,R] @ [R,T*F].
        Spatial planes of one shape are stacked into one grid_sample, so the number of calls
        does not grow with the number of times.
        """
        spatial_pairs = [(a, b) for _, a, b in PLANES if b != 3]
        out, hats = [], {}  # time weights per row count, shared by the levels
        for level in range(self.levels):
            spatial = [self.planes[f"l{level}_{name}"] for name, _, b in PLANES if b != 3]
            temporal = [self.planes[f"l{level}_{name}"] for name, _, b in PLANES if b == 3]
            feat = _product(_sample_planes(spatial, xyz, spatial_pairs))[:, None]  # [N,1,F]
            rows = temporal[0].shape[2]  # every time plane has R_t rows
            if rows not in hats:
                hats[rows] = hat_weights(times, rows)  # [T,R_t]
            w_t = hats[rows]
            feat = feat * _product(_lookup_time_rows(temporal, xyz, w_t))  # [N,T,F]
            out.append(feat)
        return torch.cat(out, dim=-1).transpose(0, 1)

    def spatial_planes(self) -> list[Tensor]:
        return [p for k, p in self.planes.items() if not k.endswith("t")]

    def time_planes(self) -> list[Tensor]:
        """Planes with a time axis; time runs along dim -2 (H)."""
        return [p for k, p in self.planes.items() if k.endswith("t")]


def _product(factors: list[Tensor]) -> Tensor:
    out = factors[0]
    for f in factors[1:]:
        out = out * f
    return out


def _sample_planes(planes: list[Tensor], xyz: Tensor, pairs: list[tuple[int, int]]) -> list[Tensor]:
    """Each plane [1,F,H,W] at the coordinates xyz[:, pair] -> list of [N,F]; planes of
    one shape go through one batched grid_sample."""
    if len({p.shape for p in planes}) > 1:
        return [sample_plane(p, axes(xyz, a, b)) for p, (a, b) in zip(planes, pairs, strict=True)]
    grid = torch.stack([axes(xyz, a, b) for a, b in pairs])[:, None]  # [P,1,N,2]
    out = F.grid_sample(torch.cat(planes), grid, mode="bilinear", padding_mode="border", align_corners=True)
    return list(out[:, :, 0].transpose(1, 2).unbind(0))  # P x [N,F]


def _lookup_time_rows(planes: list[Tensor], xyz: Tensor, w_t: Tensor) -> list[Tensor]:
    """Time planes xt, yt, zt ([1,F,R_t,R_a]) at times with interpolation weights w_t [T,R_t],
    looked up at the points' x, y, z -> list of [N,T,F]."""
    T, F_ = w_t.shape[0], planes[0].shape[1]
    if len({p.shape for p in planes}) > 1:
        out = []
        for axis, p in enumerate(planes):
            rows = torch.einsum("kt,fta->akf", w_t, p[0]).reshape(p.shape[3], T * F_)
            out.append((hat_weights(xyz[:, axis], p.shape[3]) @ rows).view(-1, T, F_))
        return out
    size = planes[0].shape[3]
    rows = torch.einsum("kt,pfta->pakf", w_t, torch.cat(planes)).reshape(len(planes), size, T * F_)
    weights = hat_weights(xyz.t(), size)  # [3,N,R_a]
    # one product per plane, not a bmm: the backward's [R,N] @ [N,T*F] reduces over all N
    # points, which a single mm splits across the GPU and a batch of three does not
    return [(w @ r).view(-1, T, F_) for w, r in zip(weights.unbind(0), rows.unbind(0), strict=True)]


def plane_tv(plane: Tensor) -> Tensor:
    """Total variation as in K-Planes: 2 x (mean squared first difference along H + along W).
    plane [P,F,H,W] (P planes of one shape) -> scalar, the sum over the P planes."""
    dh = (plane[..., 1:, :] - plane[..., :-1, :]).square().mean((1, 2, 3))
    dw = (plane[..., :, 1:] - plane[..., :, :-1]).square().mean((1, 2, 3))
    return 2.0 * (dh + dw).sum()


def plane_smoothness(plane: Tensor) -> Tensor:
    """Mean squared second difference along H (time, for time planes). [P,F,H,W] -> scalar,
    the sum over the P planes."""
    first = plane[..., 1:, :] - plane[..., :-1, :]
    return (first[..., 1:, :] - first[..., :-1, :]).square().mean((1, 2, 3)).sum()


def time_planes_l1(plane: Tensor) -> Tensor:
    """Mean |1 - plane|: keeps time planes near the neutral 1. [P,F,H,W] -> scalar, the sum
    over the P planes."""
    return (1.0 - plane).abs().mean((1, 2, 3)).sum()


def stack_by_shape(planes: list[Tensor]) -> list[Tensor]:
    """Planes [1,F,H,W] grouped by shape and stacked: one [P,F,H,W] per shape, so that a
    regulariser runs once per shape rather than once per plane."""
    groups: dict[tuple[int, ...], list[Tensor]] = {}
    for p in planes:
        groups.setdefault(tuple(p.shape), []).append(p)
    return [torch.cat(g) for g in groups.values()]


class DeformationMLP(nn.Module):
    """Linear(in, W) trunk; per output a head ReLU-Linear(W,W)-ReLU-Linear(W,k) (fused:
    `DeformHeads`); Xavier-uniform weights as the original."""

    def __init__(self, in_dim: int, width: int, sh_coeffs: int, generator: torch.Generator | None = None):
        super().__init__()
        self.trunk = nn.Linear(in_dim, width)
        nn.init.xavier_uniform_(self.trunk.weight, generator=generator)  # bias keeps torch's default
        self.heads = DeformHeads(width, {"dx": 3, "ds": 3, "dr": 4, "do": 1, "dsh": sh_coeffs * 3},
                                 "xavier", generator)

    def forward(self, features: Tensor, heads: tuple[str, ...] = HEADS,
                precision: torch.dtype = torch.float32) -> dict[str, Tensor]:
        """features [N, in] -> {head: [N, k]} for the requested heads (heads' products at
        `precision`)."""
        return self.heads(self.trunk(features), heads, precision)


# -- densification -----------------------------------------------------------------------------
@dataclass
class FourDGSStrategy(DefaultStrategy):
    """DefaultStrategy with the 4DGaussians rules: no growth at or above `max_gaussians`, pruning
    only above `prune_min_gaussians`, and (fine_start set) densify windows counted from the start
    of the fine stage, as the original restarts its iteration counter per stage."""

    max_gaussians: int = 360_000
    prune_min_gaussians: int = 0
    fine_start: int | None = None

    def step_post_backward(self, params, optimizers, state, step, info, packed=False):
        if self.fine_start is not None and step >= self.fine_start:
            step -= self.fine_start
        super().step_post_backward(params, optimizers, state, step, info, packed=packed)

    def _grow_gs(self, params, optimizers, state, step):
        if len(params["means"]) >= self.max_gaussians:
            return 0, 0
        return super()._grow_gs(params, optimizers, state, step)

    def _prune_gs(self, params, optimizers, state, step):
        if len(params["means"]) <= self.prune_min_gaussians:
            return 0
        return super()._prune_gs(params, optimizers, state, step)


# -- the expert --------------------------------------------------------------------------------
@register_expert
class FourDGSExpert(Expert):
    """Canonical 3D Gaussians (means, log-scales, quats, logit opacities, SH) + HexPlane field
    + deformation MLP. Before `coarse_iterations` the Gaussians are returned undeformed."""

    name = "4dgs"
    Config = FourDGSConfig
    presets = PRESETS

    def __init__(self, config: FourDGSConfig, generator: torch.Generator | None = None):
        super().__init__(config)
        _check_config(config)
        self.field = HexPlaneField(config.grid_resolution, config.grid_multires, config.grid_features,
                                   config.grid_init_range, generator)
        self.mlp = DeformationMLP(self.field.out_dim, config.net_width, num_sh_bases(config.sh_degree),
                                  generator)
        # [min; max] of the initial points: xyz is normalised to [-1,1] by it
        self.register_buffer("aabb", torch.tensor([[-1.0] * 3, [1.0] * 3]))
        self.fine = False

    # -- construction --------------------------------------------------------------------------
    @classmethod
    def from_init(cls, init: InitData, config: FourDGSConfig, generator: torch.Generator | None = None) -> FourDGSExpert:
        generator = generator or torch.Generator().manual_seed(0)
        which = config.init_points
        if which == "auto":
            which = "downsampled" if init.has_points("downsampled") else "merged"
        pts = subsample(init.points(which), config.max_init_points, generator)
        expert = cls(config, generator)
        for k, v in init_gaussian_tensors(pts["xyz"], pts["rgb"], config.sh_degree, config.init_opacity,
                                          torch.device("cpu")).items():
            expert.params[k] = nn.Parameter(v)
        xyz = expert.params["means"].detach()
        expert.aabb.copy_(torch.stack([xyz.min(0).values, xyz.max(0).values]))
        return expert.to(init.device)

    @classmethod
    def empty(cls, config: FourDGSConfig, device: torch.device) -> FourDGSExpert:
        expert = super().empty(config, device)
        expert.fine = config.train.iterations > config.coarse_iterations
        return expert

    @property
    def mlp_dtype(self) -> torch.dtype:
        return check_precision(self.config.mlp_precision, "4dgs.mlp_precision")

    # -- the field -----------------------------------------------------------------------------
    def time_coordinate(self, t: float | Tensor) -> Tensor:
        """Normalised time t in [0,1) -> grid coordinate: 2t-1 (whole axis) or t itself
        (compat_half_time_axis: the original's use of the half axis [0,1)). Keeps t's shape
        (a float gives a 0-d tensor)."""
        t = torch.as_tensor(t, dtype=torch.float32, device=self.aabb.device)
        return t if self.config.compat_half_time_axis else 2.0 * t - 1.0

    def normalise(self, xyz: Tensor) -> Tensor:
        """Canonical positions [N,3] -> [-1,1] over the initial points' box."""
        lo, hi = self.aabb[0], self.aabb[1]
        return (xyz - lo) * (2.0 / (hi - lo).clamp_min(1e-6)) - 1.0

    def field_coords(self, xyz: Tensor, t: float | Tensor) -> Tensor:
        """Canonical positions [N,3] and a time -> grid coordinates [N,4] in [-1,1]."""
        tc = self.time_coordinate(t).reshape(()).to(xyz.dtype).expand(xyz.shape[0], 1)
        return torch.cat([self.normalise(xyz), tc], dim=-1)

    def deltas(self, xyz: Tensor, t: float | Tensor, heads: tuple[str, ...] = HEADS) -> dict[str, Tensor]:
        """Offsets of the Gaussians at canonical positions xyz [N,3] at time t: dx [N,3],
        ds [N,3], dr [N,4], do [N,1], dsh [N,3K] (only the requested heads)."""
        return self.mlp(self.field(self.field_coords(xyz, t)), heads, self.mlp_dtype)

    # -- what the rest of the toolkit sees ------------------------------------------------------
    def gaussians_at(self, t: float | Tensor = 0.0, camera: int | None = None) -> Gaussians:
        if self.uses_inference_path():
            return self.inference_gaussians(t)
        return self.gaussians_at_times([t])[0]

    # -- inference ------------------------------------------------------------------------------
    def inference_key(self) -> tuple:
        return (*super().inference_key(), self.fine)

    def build_inference_state(self) -> dict:
        """Time-invariant parts of `gaussians_at`: every level's product of spatial planes at
        the canonical positions [N,F], the positions as 1-D sampling grids [3,1,N,2] for the
        time planes, the heads' weights at their precision, and the canonical tensors packed
        in head order [N, Σk] (one addition applies every deformation)."""
        p, f = self.params, self.field
        sh = torch.cat([p["sh0"], p["shN"]], 1)
        state = dict(means=p["means"], quats=p["quats"], scales=torch.exp(p["scales"]),
                     opacity=torch.sigmoid(p["opacities"]), sh=sh)
        if not self.fine:
            return state
        xyz = self.normalise(p["means"])
        pairs = [(a, b) for _, a, b in PLANES if b != 3]
        spatial = [_product(_sample_planes([f.planes[f"l{level}_{name}"] for name, _, b in PLANES if b != 3],
                                           xyz, pairs)) for level in range(f.levels)]
        grid = torch.stack([xyz.t(), torch.zeros_like(xyz.t())], -1)[:, None]  # [3,1,N,2]: (axis coordinate, 0)
        heads, dtype = self.mlp.heads, self.mlp_dtype
        canonical = {"dx": p["means"], "ds": p["scales"], "dr": p["quats"], "do": p["opacities"][:, None],
                     "dsh": sh.flatten(1)}
        time_planes = [torch.cat([f.planes[f"l{level}_{name}"] for name, _, b in PLANES if b == 3])
                       for level in range(f.levels)]  # [3,F,R_t,R_a] per level
        return dict(state, spatial=spatial, grid=grid, time_planes=time_planes,
                    trunk_w=self.mlp.trunk.weight, trunk_b=self.mlp.trunk.bias, dtype=dtype,
                    w1=heads.w1.to(dtype), b1=heads.b1.to(dtype), w2=(heads.w2 * heads.w2_mask).to(dtype),
                    b2=heads.b2.to(dtype), canonical=torch.cat([canonical[k] for k in heads.names], 1),
                    names=heads.names, split=[heads.sizes[k] for k in heads.names])

    def inference_gaussians(self, t: float | Tensor) -> Gaussians:
        """`gaussians_at(t)` of a frozen expert (autograd off): per level the time planes
        interpolated to t ([3,F,R_a], one product), looked up at the cached positions by one
        1-D grid_sample and multiplied with the cached spatial product; the MLP on that; one
        addition onto the packed canonical tensors. Equal to the training path up to float
        rounding."""
        s = self.inference_state()
        if not self.fine:
            return Gaussians(means=s["means"], quats=s["quats"], scales=s["scales"], opacities=s["opacity"],
                             sh=s["sh"], sh_degree=self.active_sh_degree)
        tc = self.time_coordinate(t).reshape(1)
        feats = []
        for spatial, planes in zip(s["spatial"], s["time_planes"], strict=True):
            rows = torch.einsum("t,pfta->pfa", hat_weights(tc, planes.shape[2])[0], planes)[:, :, None]  # [3,F,1,R_a]
            temporal = F.grid_sample(rows, s["grid"], mode="bilinear", padding_mode="border", align_corners=True)
            feats.append(spatial * temporal[:, :, 0].prod(0).t())  # [N,F]
        hidden = torch.addmm(s["trunk_b"], torch.cat(feats, -1), s["trunk_w"].t())
        a = torch.relu(F.linear(torch.relu(hidden).to(s["dtype"]), s["w1"], s["b1"]))
        g = s["canonical"] + F.linear(a, s["w2"], s["b2"]).float()
        d = dict(zip(s["names"], g.split(s["split"], dim=1), strict=True))
        return Gaussians(means=d["dx"], quats=d["dr"], scales=torch.exp(d["ds"]), opacities=torch.sigmoid(d["do"][:, 0]),
                         sh=d["dsh"].view(s["sh"].shape), sh_degree=self.active_sh_degree)

    def gaussians_at_times(self, times, cameras=None) -> list[Gaussians]:
        """The Gaussians at each time of `times`: one field query (spatial planes once) and
        one MLP call for all of them."""
        p = self.params
        means, log_scales, quats, logit_o = p["means"], p["scales"], p["quats"], p["opacities"]
        sh = torch.cat([p["sh0"], p["shN"]], 1)
        if not self.fine:
            g = Gaussians(means=means, quats=quats, scales=torch.exp(log_scales),
                          opacities=torch.sigmoid(logit_o), sh=sh, sh_degree=self.active_sh_degree)
            return [g] * len(times)
        n, k = len(means), len(times)
        tcs = self.time_coordinate(torch.stack([torch.as_tensor(t, dtype=means.dtype, device=means.device)
                                                for t in times]))
        hidden = self.field.features_at_times(self.normalise(means), tcs).reshape(k * n, -1)
        d = {key: v.view(k, n, -1) for key, v in self.mlp(hidden, precision=self.mlp_dtype).items()}
        # every time at once ([T,N,...]), then one Gaussians per time; unbind, not indexing,
        # so that the backward gathers the T gradients in one stack, not T zero-filled copies
        m, q, c = means + d["dx"], quats + d["dr"], sh + d["dsh"].view(k, *sh.shape)
        sc, op = torch.exp(log_scales + d["ds"]), torch.sigmoid(logit_o + d["do"][..., 0])
        return [Gaussians(means=mi, quats=qi, scales=si, opacities=oi, sh=ci, sh_degree=self.active_sh_degree)
                for mi, qi, si, oi, ci in zip(*(x.unbind(0) for x in (m, q, sc, op, c)), strict=True)]

    @torch.no_grad()
    def trajectories(self, times: Tensor, ids: Tensor | None = None) -> Tensor:
        """World positions of Gaussians `ids` (all when None) at `times` [T] -> [T,M,3]."""
        xyz = self.params["means"].detach()
        if ids is not None:
            xyz = xyz[ids.to(xyz.device)]
        if not self.fine:
            return xyz.unsqueeze(0).expand(len(times), -1, -1).clone()
        return torch.stack([xyz + self.deltas(xyz, t, ("dx",))["dx"] for t in times.tolist()])

    # -- training hooks ------------------------------------------------------------------------
    def shared_params(self) -> dict[str, nn.Parameter]:
        out = {f"grid_{k}": v for k, v in self.field.planes.items()}
        out.update({"mlp_" + k.replace(".", "_"): v for k, v in self.mlp.named_parameters()})
        return out

    def shared_param_groups(self) -> dict[str, list[str]]:
        names = list(self.shared_params())
        return {"grid": [n for n in names if n.startswith("grid_")], "mlp": [n for n in names if n.startswith("mlp_")]}

    def stage_step(self, step: int) -> int:
        """Step counted from the start of the current stage (stage_local_schedules) or the run."""
        c = self.config
        if c.stage_local_schedules and step >= c.coarse_iterations:
            return step - c.coarse_iterations
        return step

    def learning_rates(self, step: int, extent: float) -> dict[str, float]:
        c, s = self.config, self.stage_step(step)
        lrs = c.lr.at(s, c.lr_max_steps, extent)
        mlp = exp_decay(s, c.deform_lr.mlp_init * extent, c.deform_lr.mlp_final * extent, c.lr_max_steps)
        grid = exp_decay(s, c.deform_lr.grid_init * extent, c.deform_lr.grid_final * extent, c.lr_max_steps)
        for name in self.shared_params():
            lrs[name] = grid if name.startswith("grid_") else mlp
        return lrs

    def regularisation(self, step: int) -> Tensor | None:
        """Grid regularisers of the fine stage (None in the coarse stage)."""
        if step < self.config.coarse_iterations:
            return None
        return self.grid_regularisation()

    def grid_regularisation(self) -> Tensor:
        """plane_tv_weight x TV(spatial planes) + time_smoothness_weight x smoothness(time planes)
        + l1_time_planes_weight x |1 - time planes|, each summed over planes and levels."""
        c = self.config
        tv_fn = plane_tv if c.plane_tv_mode == "tv" else plane_smoothness
        spatial, temporal = stack_by_shape(self.field.spatial_planes()), stack_by_shape(self.field.time_planes())
        tv = sum(tv_fn(p) for p in spatial)
        smooth = sum(plane_smoothness(p) for p in temporal)
        l1 = sum(time_planes_l1(p) for p in temporal)
        return c.plane_tv_weight * tv + c.time_smoothness_weight * smooth + c.l1_time_planes_weight * l1

    def on_step(self, step: int) -> None:
        super().on_step(step)
        self.fine = step >= self.config.coarse_iterations

    def after_step(self, step: int, ctx) -> None:
        # the original starts the fine stage with a new optimiser and fresh densify statistics
        if not (self.config.fresh_optimizer_at_fine and step + 1 == self.config.coarse_iterations):
            return
        for opt in ctx.per_opt.values():
            opt.state.clear()
        for key in ("grad2d", "count", "radii"):
            if isinstance(ctx.strategy_state.get(key), Tensor):
                ctx.strategy_state[key].zero_()

    def make_strategy(self) -> FourDGSStrategy:
        c = self.config
        return FourDGSStrategy(
            **self.strategy_settings(),
            max_gaussians=c.max_gaussians,
            prune_min_gaussians=c.prune_min_gaussians,
            fine_start=c.coarse_iterations if c.stage_local_schedules else None,
        )

    # -- persistence ---------------------------------------------------------------------------
    def extra_state(self) -> dict:
        return {**super().extra_state(), "fine": self.fine,
                "aabb": self.aabb.detach().cpu().tolist()}

    def load_extra_state(self, state: dict) -> None:
        super().load_extra_state(state)
        self.fine = bool(state.get("fine", self.fine))
        if "aabb" in state:
            self.aabb.copy_(torch.tensor(state["aabb"], dtype=self.aabb.dtype))


__all__ = ["FourDGSExpert", "FourDGSConfig", "FourDGSStrategy", "HexPlaneField", "DeformationMLP",
           "DeformLR", "sample_plane", "plane_tv", "plane_smoothness", "time_planes_l1", "stack_by_shape"]
