"""`ed3dgs`: E-D3DGS (Bae et al., ECCV 2024), per-Gaussian embedding-based deformation.

Every Gaussian carries a learned 32-d embedding z_g (zero init, densified with it). One shared
temporal embedding table [rows, 256] is resized by linear interpolation to the current row
count and sampled at time t. Two decoders (coarse, fine), each concat(h_t, z_g) ->
Linear(288->W) -> heads dx, ds, dr, do, dSH, map (t, z_g) to deformations of the canonical
Gaussian; the fine output is added to the coarse one. The coarse decoder sees the table
downsampled to a few rows (slow motion), the fine decoder a row count that grows during
training (coarse-to-fine temporal resolution). A per-camera learnable time offset absorbs
unsynchronised cameras, and a k-NN smoothness term pulls neighbouring embeddings together.
Training follows the authors' protocol where the preset says so (`sampling`: spaced cameras,
frames drawn by error, multi-view steps; `ssim_multiview_only`: D-SSIM on those steps only).
Facts and defaults: REFERENCE.md section 2 "E-D3DGS" and the authors' configuration files.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..config import (
    NonNegativeFloat,
    NonNegativeInt,
    OpenUnitFloat,
    PositiveFloat,
    PositiveInt,
    SHDegree,
)
from ..data.init import InitData
from ..data.load import SceneData
from ..data.sampling import ErrorSampling, ErrorViewSampler, Sampler, camera_centres, multiview_step
from ..errors import ConfigError
from ..optim.schedules import exp_decay
from ..render.gaussians import Gaussians
from ..render.sh import num_sh_bases
from .base import DensifyConfig, Expert, TrainConfig
from .common import GaussianLR, PointSet, init_gaussian_tensors, subsample
from .heads import DeformHeads, check_precision
from .registry import register_expert

HEADS = ("dx", "ds", "dr", "do", "dsh")


@dataclass
class ED3DGSLR:
    """Learning rates (REFERENCE.md §2 E-D3DGS; N3V values). Deformation = decoders and the
    temporal table, x scene extent, exponential decay over the run (the authors' schedule)."""

    gaussian: GaussianLR = field(default_factory=GaussianLR)  # means 1.6e-4 -> 1.6e-6, 3DGS rest
    embedding: NonNegativeFloat = 2.5e-3
    deformation_init: PositiveFloat = 1.6e-4  # Technicolor 1.6e-3
    deformation_final: PositiveFloat = 1.6e-5  # Technicolor 1.6e-4
    time_offset: NonNegativeFloat = 2e-5  # Technicolor 0 (offsets disabled)


@dataclass
class ED3DGSConfig:
    """E-D3DGS defaults for N3V (REFERENCE.md §2; authors' arguments/dynerf/default.py)."""

    sh_degree: SHDegree = 3
    sh_degree_interval: PositiveInt = 1000  # one more SH band every 1000 steps, as the authors
    init_opacity: OpenUnitFloat = 0.1
    # the authors initialise from down-sampled dense points; scenes without that cloud
    # (synthetic ones) fall back to the merged cloud
    init_points: PointSet = "downsampled"
    max_init_points: NonNegativeInt = 0  # random subset of the initial cloud (0 = all)
    gaussian_embedding_dim: PositiveInt = 32
    temporal_embedding_dim: PositiveInt = 256
    temporal_rows: PositiveInt = 150  # fine table rows at the end of coarse-to-fine (Technicolor 25)
    coarse_rows: PositiveInt = 30  # rows the coarse decoder sees (Technicolor 5)
    c2f_steps: NonNegativeInt = 10_000  # fine rows grow coarse_rows -> temporal_rows over these steps (0: full at once)
    temporal_init_std: NonNegativeFloat = 0.01 / 16  # N(0, 0.01/sqrt(256)); 0 = zero init (Technicolor)
    width: PositiveInt = 128  # decoder width
    trunk_layers: PositiveInt = 1  # Linear(288->W) then (trunk_layers - 1) x [ReLU, Linear(W,W)]
    # dtype of the decoders' head products: "float32" as the authors, or "bfloat16" (float32
    # accumulation and outputs) for tensor cores
    mlp_precision: Literal["float32", "bfloat16"] = "float32"
    deform_scale: bool = True
    deform_rotation: bool = True
    deform_opacity: bool = True
    deform_color: bool = True  # Technicolor: False
    # annealing (authors' use_anneal): dx, dr ramp 0->1 over anneal_steps from step 0; ds, do,
    # dSH ramp 0->1 over anneal_steps from deform_from
    anneal: bool = True  # Technicolor: False
    anneal_steps: NonNegativeInt = 1000
    deform_from: NonNegativeInt = 5000
    knn: PositiveInt = 20
    knn_weight_scale: NonNegativeFloat = 2000.0  # weight exp(-scale * d^2), d in scene units
    smooth_coef: NonNegativeFloat = 1.0  # Birthday 0.1
    opacity_coef: NonNegativeFloat = 1e-4  # coef * sigmoid(mean opacity logit), replaces opacity resets
    # time offset for cameras that were not trained (test views): "none" uses t as is;
    # "mean" adds the mean offset of the trained cameras (the authors' renderer)
    test_offset: Literal["none", "mean"] = "none"
    # the authors' training views (data.sampling.ErrorSampling): spaced cameras, half the
    # frames drawn by error after 10k iterations, one frame kept for 5 steps every 50
    sampling: ErrorSampling = field(default_factory=ErrorSampling)
    # D-SSIM only on the multi-view steps of `sampling` (train.py:167), loss there
    # L1 + ssim_weight·(1 - SSIM), elsewhere L1; False: the loop's (1-λ)·L1 + λ·D-SSIM on every step
    ssim_multiview_only: bool = True
    ssim_weight: NonNegativeFloat = 0.5  # lambda_dssim 1 x (1 - SSIM)/2: arguments/dynerf/default.py:37, train.py:169
    lr: ED3DGSLR = field(default_factory=ED3DGSLR)
    train: TrainConfig = field(default_factory=lambda: TrainConfig(
        iterations=80_000,
        densify=DensifyConfig(start=5000, stop=80_000, every=100, grad_threshold=3e-4,
                              prune_opacity=0.005, reset_every=0)))


# the synthetic presets keep the loop's protocol (numbers measured before the authors' one was
# added): uniform permutations of the views, (1-λ)·L1 + λ·D-SSIM on every step
LOOP_PROTOCOL: dict = {
    "sampling": {"fraction": 0.0, "camera_spacing": False, "multiview_steps": 0},
    "ssim_multiview_only": False,
}

PRESETS: dict[str, dict] = {
    # N3V (REFERENCE.md §2): 80k steps, densify 5000..80k, table 150 rows / coarse 30; the
    # authors' views and SSIM steps (`sampling`, `ssim_multiview_only`)
    "paper": {},
    # Technicolor (authors' arguments/technicolor/default.py): 25 zero-init rows from the
    # start, coarse 5, no colour deformation, no annealing, no time offsets, densify from 500,
    # error-driven frames from iteration 60000 (random_until, default.py:73)
    "technicolor": {
        "temporal_rows": 25, "coarse_rows": 5, "c2f_steps": 0, "temporal_init_std": 0.0,
        "deform_color": False, "anneal": False, "sampling": {"start": 60_000},
        "lr": {"deformation_init": 1.6e-3, "deformation_final": 1.6e-4, "time_offset": 0.0},
        "train": {"densify": {"start": 500}},
    },
    # synthetic `full` (50 frames, as a Technicolor segment) on one GPU: a few minutes
    # (bfloat16 head products: the iteration cost goal of docs/performance.md)
    "fast": {
        **LOOP_PROTOCOL,
        "init_points": "merged", "max_init_points": 60_000, "mlp_precision": "bfloat16",
        "temporal_rows": 25, "coarse_rows": 5, "c2f_steps": 3000,
        "anneal_steps": 300, "deform_from": 1000, "knn_weight_scale": 200.0,
        "lr": {"deformation_init": 1.6e-3, "deformation_final": 1.6e-4},
        "train": {"iterations": 12_000, "densify": {"start": 1000, "stop": 10_000}},
    },
    # CPU demo scale (synthetic `small`, 24 frames)
    "small": {
        **LOOP_PROTOCOL,
        "init_points": "merged", "sh_degree": 1, "sh_degree_interval": 300, "max_init_points": 8000,
        "temporal_rows": 12, "coarse_rows": 4, "c2f_steps": 600, "width": 64,
        "anneal_steps": 100, "deform_from": 200, "knn_weight_scale": 20.0,
        "lr": {"deformation_init": 1.6e-3, "deformation_final": 1.6e-4},
        "train": {"iterations": 1500, "checkpoint_every": 500,
                  "densify": {"start": 200, "stop": 1200, "every": 100}},
    },
    # CPU tests (synthetic `tiny`, 8 frames): seconds
    "tiny": {
        **LOOP_PROTOCOL,
        "init_points": "merged", "sh_degree": 1, "sh_degree_interval": 200, "max_init_points": 3000,
        "temporal_rows": 8, "coarse_rows": 3, "c2f_steps": 150, "width": 32,
        "anneal_steps": 25, "deform_from": 50, "knn_weight_scale": 20.0,
        "lr": {"deformation_init": 1.6e-3, "deformation_final": 1.6e-4},
        "train": {"iterations": 400, "checkpoint_every": 200,
                  "densify": {"start": 100, "stop": 300, "every": 50}},
    },
}


# -- temporal embedding table --------------------------------------------------------------------
def resize_rows(table: Tensor, rows: int) -> Tensor:
    """Resample a table [M,D] to [rows,D] by linear interpolation along rows, end rows kept
    (align_corners): row j of the result is the table at position j*(M-1)/(rows-1)."""
    if rows == table.shape[0]:
        return table
    return F.interpolate(table.t()[None], size=rows, mode="linear", align_corners=True)[0].t()


def sample_rows(table: Tensor, t: Tensor) -> Tensor:
    """The table [R,D] at normalised time t (0-d): row r sits at t = r/(R-1), linear in between;
    t outside [0,1] is reflected back (the authors' grid_sample padding). Differentiable in t.
    Returns [D]."""
    rows = table.shape[0]
    u = torch.remainder(t, 2.0)
    u = torch.where(u > 1.0, 2.0 - u, u)
    pos = u * (rows - 1)
    i0 = pos.detach().floor().clamp(0, rows - 2).long()
    frac = pos - i0
    return table[i0] * (1.0 - frac) + table[i0 + 1] * frac


def rows_at(step: int, start: int, end: int, steps: int) -> int:
    """Row count growing linearly start -> end over `steps` (integer part, as the authors)."""
    if steps <= 0:
        return end
    return int(start + (end - start) * min(max(step, 0), steps) / steps)


# -- decoders ----------------------------------------------------------------------------------------
class DeformDecoder(nn.Module):
    """concat(h_t [T], z_g [N,G]) -> trunk Linear(T+G -> W) (+ extra layers) -> one head per
    deformation (ReLU, Linear(W,W), ReLU, Linear(W,k); fused: `DeformHeads`), nn.Linear's
    default initialisation as the authors.

    The trunk's first Linear is stored as two blocks (time part and Gaussian part): the time
    part is the same for every Gaussian, so it is computed once per call (same function).
    """

    def __init__(self, temporal_dim: int, gaussian_dim: int, width: int, layers: int,
                 outputs: dict[str, int]):
        super().__init__()
        self.trunk_t = nn.Linear(temporal_dim, width)
        self.trunk_g = nn.Linear(gaussian_dim, width, bias=False)
        self.trunk_rest = nn.Sequential(*[m for _ in range(layers - 1) for m in (nn.ReLU(), nn.Linear(width, width))])
        self.heads = DeformHeads(width, outputs, init="torch")

    def forward(self, h_t: Tensor, z: Tensor, heads: tuple[str, ...] | None = None,
                precision: torch.dtype = torch.float32) -> dict[str, Tensor]:
        """h_t [T], z [N,G] -> {head: [N,k]} for the requested heads (all by default); the
        heads' products at `precision`."""
        return self.heads.split(*self.flat(h_t, z, heads, precision))

    def flat(self, h_t: Tensor, z: Tensor, heads: tuple[str, ...] | None = None,
             precision: torch.dtype = torch.float32) -> tuple[tuple[str, ...], Tensor]:
        """As forward, outputs side by side: (head names, [N, sum k]) (`DeformHeads.flat`)."""
        hidden = self.trunk_rest(self.trunk_g(z) + self.trunk_t(h_t))
        return self.heads.flat(hidden, heads, precision)


# -- k-NN smoothness -------------------------------------------------------------------------------
EXACT_KNN_LIMIT = 50_000  # above this many points the k-NN comes from space-filling-curve candidates


@torch.no_grad()
def knn_graph(points: Tensor, k: int, chunk: int | None = None,
              exact_limit: int = EXACT_KNN_LIMIT) -> tuple[Tensor, Tensor]:
    """k nearest other points of every point. points [N,3] -> (indices [N,k] long, squared
    distances [N,k], ascending); k is capped at N-1.

    Up to `exact_limit` points: exact (chunked cdist + topk, `chunk` rows at a time). Above it
    the brute force costs O(N^2) and would dominate training (the set is recomputed at every
    densification), so `knn_candidates` searches near neighbours along Morton curves instead.
    """
    n = points.shape[0]
    k = min(k, n - 1)
    if k <= 0:
        return points.new_zeros((n, 0), dtype=torch.long), points.new_zeros((n, 0))
    if n > exact_limit:
        return knn_candidates(points, k)
    chunk = chunk or max(1, (1 << 27) // max(n, 1))  # about 2^27 distances (512 MB) at a time
    idx, d2 = [], []
    for i in range(0, n, chunk):
        # the direct (not matrix-product) form keeps small distances exact (duplicates: 0)
        dist = torch.cdist(points[i:i + chunk], points, compute_mode="donot_use_mm_for_euclid_dist")
        dist = dist.square()
        rows = torch.arange(dist.shape[0], device=points.device)
        dist[rows, rows + i] = float("inf")  # not itself
        top = dist.topk(k, largest=False)
        idx.append(top.indices)
        d2.append(top.values)
    return torch.cat(idx), torch.cat(d2)


def morton_keys(cells: Tensor, bits: int) -> Tensor:
    """Interleave the bits of integer cell coordinates [N,3] (each < 2^bits) -> keys [N] int64."""
    key = torch.zeros(cells.shape[0], dtype=torch.long, device=cells.device)
    for b in range(bits):
        for axis in range(3):
            key |= ((cells[:, axis] >> b) & 1) << (3 * b + axis)
    return key


@torch.no_grad()
def knn_candidates(points: Tensor, k: int, window: int = 24, curves: int = 6, bits: int = 16,
                   chunk: int = 1 << 16) -> tuple[Tensor, Tensor]:
    """Approximate k-NN in O(N log N): the `window` points before and after each point along
    `curves` Morton orders (grids shifted by non-dyadic fractions of the extent, so one curve's
    jumps are another's neighbourhoods) are the candidates; the k nearest of them by exact
    distance are returned. Recall of the true 20-NN is about 0.99 on uniform, clustered and
    surface point sets (tests/test_expert_ed3dgs.py). points [N,3] -> ([N,k] long, [N,k])."""
    n = points.shape[0]
    lo = points.min(0).values
    span = (points.max(0).values - lo).max().clamp_min(1e-12)
    scale = (2 ** bits - 1) / (2 * span)  # the grid covers twice the extent to hold the shifts
    position = torch.arange(n, device=points.device)
    offsets = torch.cat([torch.arange(-window, 0), torch.arange(1, window + 1)]).to(points.device)
    skew = torch.tensor([1.0, 8 / 7, 9 / 7], device=points.device)
    ranks, orders = [], []
    for c in range(curves):
        cells = ((points - lo + span * (c / curves) * skew) * scale).long().clamp(0, 2 ** bits - 1)
        order = morton_keys(cells, bits).argsort()
        rank = torch.empty_like(order)
        rank[order] = position
        orders.append(order)
        ranks.append(rank)
    idx, d2 = [], []
    for i in range(0, n, chunk):  # bounded memory: [chunk, 2*window*curves] candidates at a time
        rows = position[i:i + chunk]
        cand = torch.cat([o[(r[rows, None] + offsets).clamp(0, n - 1)] for o, r in zip(orders, ranks, strict=True)], 1)
        cand = cand.sort(1).values
        dist = (points[rows, None, :] - points[cand]).square().sum(-1)
        repeated = torch.zeros_like(cand, dtype=torch.bool)
        repeated[:, 1:] = cand[:, 1:] == cand[:, :-1]
        dist = dist.masked_fill(repeated | (cand == rows[:, None]), float("inf"))
        top = dist.topk(k, largest=False)
        idx.append(cand.gather(1, top.indices))
        d2.append(top.values)
    return torch.cat(idx), torch.cat(d2)


def smoothness(embedding: Tensor, neighbours: Tensor, weights: Tensor) -> Tensor:
    """mean over (i, j in N(i)) of sqrt(w_ij * ||e_i - e_j||^2) (authors' weighted_l2_loss_v2).
    embedding [N,G], neighbours [N,k], weights [N,k] -> scalar. The reference form;
    training uses `graph_smoothness`, the same value with a cheaper backward."""
    if neighbours.numel() == 0:
        return embedding.sum() * 0.0
    diff = (embedding[:, None, :] - embedding[neighbours]).square().sum(-1)
    return torch.sqrt(diff * weights + 1e-20).mean()


@dataclass
class NeighbourGraph:
    """The k-NN graph of the smoothness term, built once per change of the Gaussians.

    neighbours [N,k]; sqrt_weights [N,k] (sqrt of exp(-scale d^2)); incoming: sparse CSR
    [N, N*k] with a 1 at (j, pair) for every pair (i, j): it sums per-pair gradients onto
    their neighbour j as one sparse product, without atomics or a per-step sort.
    """

    neighbours: Tensor
    sqrt_weights: Tensor
    incoming: Tensor

    def __deepcopy__(self, memo) -> NeighbourGraph:
        # torch cannot deepcopy sparse CSR tensors (no storage); a clone is the same copy
        return NeighbourGraph(self.neighbours.clone(), self.sqrt_weights.clone(), self.incoming.clone())


def neighbour_graph(neighbours: Tensor, weights: Tensor) -> NeighbourGraph:
    """neighbours [N,k] (long), weights [N,k] -> NeighbourGraph."""
    n, k = neighbours.shape
    flat = neighbours.reshape(-1)
    counts = torch.bincount(flat, minlength=n)
    crow = torch.cat([counts.new_zeros(1), counts.cumsum(0)])
    cols = torch.argsort(flat, stable=True)  # pairs grouped by their neighbour j
    with warnings.catch_warnings():  # torch's notices that sparse CSR support is in beta
        warnings.simplefilter("ignore", UserWarning)
        incoming = torch.sparse_csr_tensor(crow, cols, torch.ones(n * k, device=weights.device), size=(n, n * k),
                                           check_invariants=False)  # valid by construction
    return NeighbourGraph(neighbours, weights.sqrt(), incoming)


class _GraphSmoothness(torch.autograd.Function):
    """mean_ij sqrt(w_ij) ||e_i - e_j||; gradient c_ij (e_i - e_j), c = sqrt(w)/||e_i - e_j||
    (0 where the two are equal), onto e_i by a sum over k and onto e_j by `incoming`."""

    @staticmethod
    def forward(ctx, embedding: Tensor, graph: NeighbourGraph) -> Tensor:
        diff = embedding[:, None, :] - embedding[graph.neighbours]  # [N,k,G]
        norm = torch.linalg.vector_norm(diff, dim=-1)  # [N,k]
        ctx.save_for_backward(diff, norm)
        ctx.graph = graph
        return (graph.sqrt_weights * norm).mean()

    @staticmethod
    def backward(ctx, grad: Tensor):
        diff, norm = ctx.saved_tensors
        n, k = norm.shape
        scale = ctx.graph.sqrt_weights / norm.clamp_min(1e-30) * (grad / (n * k))
        u = torch.where(norm > 0, scale, 0.0)[..., None] * diff  # [N,k,G] per-pair gradient on e_i
        outgoing = u.sum(1)
        return outgoing - torch.sparse.mm(ctx.graph.incoming, u.reshape(n * k, -1)), None


def graph_smoothness(embedding: Tensor, graph: NeighbourGraph) -> Tensor:
    """`smoothness` over a NeighbourGraph (up to its 1e-20 inside the square root): the
    per-pair terms are sqrt(w) x the distance, and the gradient onto neighbours is one sparse
    product. embedding [N,G] -> scalar."""
    if graph.neighbours.numel() == 0:
        return embedding.sum() * 0.0
    return _GraphSmoothness.apply(embedding, graph)


def _scaled(coef: float, delta: Tensor) -> Tensor:
    """coef x delta; no kernel (and no backward one) once annealing has reached 1."""
    return delta if coef == 1.0 else coef * delta


def _check_config(c: ED3DGSConfig) -> None:
    """One clear error for settings the model cannot be built with."""
    checks = [
        (c.temporal_rows >= 2, "temporal_rows", "must be >= 2"),
        (2 <= c.coarse_rows <= c.temporal_rows, "coarse_rows", "must be in [2, temporal_rows]"),
        (c.gaussian_embedding_dim > 0, "gaussian_embedding_dim", "must be > 0"),
        (c.temporal_embedding_dim > 0, "temporal_embedding_dim", "must be > 0"),
        (c.width > 0, "width", "must be > 0"),
        (c.trunk_layers >= 1, "trunk_layers", "must be >= 1"),
        (c.knn >= 0, "knn", "must be >= 0"),
        (c.sh_degree >= 0, "sh_degree", "must be >= 0"),
    ]
    for ok, name, why in checks:
        if not ok:
            raise ConfigError(f"ed3dgs: setting {name!r} = {getattr(c, name)!r} {why}")
    check_precision(c.mlp_precision, "ed3dgs.mlp_precision")


@register_expert
class ED3DGSExpert(Expert):
    """Canonical 3D Gaussians + per-Gaussian embeddings, deformed by coarse + fine decoders of
    (temporal embedding at t, Gaussian embedding)."""

    name = "ed3dgs"
    Config = ED3DGSConfig
    presets = PRESETS
    camera_dependent = True  # per-camera time offsets (an instance sets False when they are off)

    def __init__(self, config: ED3DGSConfig, num_cameras: int = 1):
        _check_config(config)
        super().__init__(config)
        c = config
        self.camera_dependent = c.lr.time_offset > 0  # without offsets the views of one time batch together
        self.step = 0
        std = c.temporal_init_std
        table = torch.randn(c.temporal_rows, c.temporal_embedding_dim) * std if std > 0 else \
            torch.zeros(c.temporal_rows, c.temporal_embedding_dim)
        self.temporal = nn.Parameter(table)
        outputs = {"dx": 3, "ds": 3, "dr": 4, "do": 1, "dsh": 3 * num_sh_bases(c.sh_degree)}
        enabled = {"ds": c.deform_scale, "dr": c.deform_rotation, "do": c.deform_opacity, "dsh": c.deform_color}
        outputs = {k: v for k, v in outputs.items() if enabled.get(k, True)}
        args = (c.temporal_embedding_dim, c.gaussian_embedding_dim, c.width, c.trunk_layers, outputs)
        self.coarse = DeformDecoder(*args)
        self.fine = DeformDecoder(*args)
        self.time_offsets = nn.Parameter(torch.zeros(num_cameras))
        self.register_buffer("train_cameras", torch.zeros(num_cameras, dtype=torch.bool))
        self._knn: tuple | None = None  # (key, NeighbourGraph)
        self._trained: tuple | None = None  # (buffer key, trained camera indices)

    # -- construction ------------------------------------------------------------------------
    @classmethod
    def from_init(cls, init: InitData, config: ED3DGSConfig, generator: torch.Generator | None = None) -> ED3DGSExpert:
        generator = generator or torch.Generator().manual_seed(0)
        which = config.init_points
        if which == "downsampled" and not init.has_points("downsampled"):
            which = "merged"
        pts = subsample(init.points(which), config.max_init_points, generator)
        expert = cls(config, num_cameras=init.num_cameras)
        for k, v in init_gaussian_tensors(pts["xyz"], pts["rgb"], config.sh_degree, config.init_opacity,
                                          init.device).items():
            expert.params[k] = nn.Parameter(v)
        n = expert.num_gaussians
        expert.params["embedding"] = nn.Parameter(torch.zeros(n, config.gaussian_embedding_dim, device=init.device))
        expert.train_cameras[init.train_cameras] = True
        return expert.to(init.device)

    # -- schedules ---------------------------------------------------------------------------------
    def fine_rows(self, step: int | None = None) -> int:
        """Rows of the table the fine decoder sees at `step` (default: the current step)."""
        c = self.config
        return rows_at(self.step if step is None else step, c.coarse_rows, c.temporal_rows, c.c2f_steps)

    def anneal(self, step: int | None = None) -> tuple[float, float]:
        """(coefficient of dx and dr, coefficient of ds, do and dSH) at `step`."""
        c = self.config
        if not c.anneal:
            return 1.0, 1.0
        s = self.step if step is None else step
        ramp = max(c.anneal_steps, 1)
        return min(max(s / ramp, 0.0), 1.0), min(max((s - c.deform_from) / ramp, 0.0), 1.0)

    def on_step(self, step: int) -> None:
        self.step = step
        super().on_step(step)

    # -- deformation ---------------------------------------------------------------------------------
    def time_for(self, t: float | Tensor, camera: int | None) -> Tensor:
        """t plus the camera's learned offset (trained cameras; see `test_offset` for others). 0-d."""
        t = torch.as_tensor(t, dtype=torch.float32, device=self.temporal.device).reshape(())
        trained = self._trained_cameras()
        if camera is not None and camera in trained:
            return t + self.time_offsets[camera]
        if self.config.test_offset == "mean" and trained:
            return t + self.time_offsets[self.train_cameras].mean()
        return t

    def _trained_cameras(self) -> frozenset[int]:
        """Indices of the trained cameras, read from the buffer once (no device sync per query)."""
        key = (id(self.train_cameras), self.train_cameras._version)
        if self._trained is None or self._trained[0] != key:
            self._trained = (key, frozenset(torch.nonzero(self.train_cameras).flatten().tolist()))
        return self._trained[1]

    def deltas(self, t: Tensor, heads: tuple[str, ...] | None = None, ids: Tensor | None = None) -> dict[str, Tensor]:
        """Coarse + fine deformations at time t (0-d) for all Gaussians (or rows `ids`):
        {head: [N,k]}, annealing not applied."""
        z = self.params["embedding"] if ids is None else self.params["embedding"][ids]
        h_c = sample_rows(resize_rows(self.temporal, self.config.coarse_rows), t)
        h_f = sample_rows(resize_rows(self.temporal, self.fine_rows()), t)
        dtype = check_precision(self.config.mlp_precision, "ed3dgs.mlp_precision")
        names, coarse = self.coarse.flat(h_c, z, heads, dtype)
        _, fine = self.fine.flat(h_f, z, heads, dtype)
        return self.fine.heads.split(names, coarse + fine)  # the fine output is a residual on the coarse

    def gaussians_at(self, t: float | Tensor = 0.0, camera: int | None = None) -> Gaussians:
        if self.uses_inference_path():
            return self.inference_gaussians(t, camera)
        p = self.params
        d = self.deltas(self.time_for(t, camera))
        c_move, c_rest = self.anneal()
        sh = torch.cat([p["sh0"], p["shN"]], 1)
        scales, quats, opacities = p["scales"], p["quats"], p["opacities"]
        means = p["means"] + _scaled(c_move, d["dx"])
        if "dr" in d:
            quats = quats + _scaled(c_move, d["dr"])
        if "ds" in d:
            scales = scales + _scaled(c_rest, d["ds"])
        if "do" in d:
            opacities = opacities + _scaled(c_rest, d["do"][:, 0])
        if "dsh" in d:
            sh = sh + _scaled(c_rest, d["dsh"].view(sh.shape))
        return Gaussians(means=means, quats=quats, scales=torch.exp(scales), opacities=torch.sigmoid(opacities),
                         sh=sh, sh_degree=self.active_sh_degree)

    # -- inference ------------------------------------------------------------------------------
    def inference_key(self) -> tuple:
        return (*super().inference_key(), self.fine_rows(), self.anneal())

    def build_inference_state(self) -> dict[str, Tensor]:
        """Time-invariant parts of `gaussians_at`. The two decoders become one batch of two:
        each trunk's time part is folded into its resized table (the table rows through
        trunk_t, so that h_t is an interpolation of those rows), their Gaussian-part and head
        weights are stacked [2,...]. The canonical tensors are packed in head order [N, Σk]
        so that one addition applies every deformation."""
        c, p = self.config, self.params
        dtype = check_precision(c.mlp_precision, "ed3dgs.mlp_precision")
        tables, scale, nodes, sizes = [], [], [], []
        for dec, rows in ((self.coarse, c.coarse_rows), (self.fine, self.fine_rows())):
            tables.append(dec.trunk_t(resize_rows(self.temporal, rows)))  # [rows,W]
            scale.append(torch.full((rows,), float(rows - 1)))
            nodes.append(torch.arange(rows, dtype=torch.float32))
            sizes.append(rows)
        decs = (self.coarse, self.fine)
        heads = self.fine.heads
        stack = lambda fn: torch.stack([fn(d) for d in decs])  # noqa: E731
        rest = [(stack(lambda d, i=i: d.trunk_rest[i].weight.t()), stack(lambda d, i=i: d.trunk_rest[i].bias[None]))
                for i in range(1, len(self.coarse.trunk_rest), 2)]
        sh = torch.cat([p["sh0"], p["shN"]], 1)
        canonical = {"dx": p["means"], "ds": p["scales"], "dr": p["quats"], "do": p["opacities"][:, None],
                     "dsh": sh.flatten(1)}
        c_move, c_rest = self.anneal()
        coef = torch.cat([torch.full((heads.sizes[k],), c_move if k in ("dx", "dr") else c_rest) for k in heads.names])
        device = self.temporal.device
        return dict(
            table=torch.cat(tables), sizes=sizes, scale=torch.cat(scale).to(device), nodes=torch.cat(nodes).to(device),
            trunk_g=stack(lambda d: d.trunk_g.weight.t()), rest=rest,
            w1=stack(lambda d: d.heads.w1.t()).to(dtype), b1=stack(lambda d: d.heads.b1[None]).to(dtype),
            w2=stack(lambda d: (d.heads.w2 * d.heads.w2_mask).t()).to(dtype),
            b2=stack(lambda d: d.heads.b2[None]).to(dtype), dtype=dtype,
            canonical=torch.cat([canonical[k] for k in heads.names], 1),
            coef=None if c_move == c_rest == 1.0 else coef.to(device),
            embedding=p["embedding"][None].expand(2, -1, -1), names=heads.names, split=[heads.sizes[k] for k in heads.names],
            scales=torch.exp(p["scales"]), quats=p["quats"], opacity=torch.sigmoid(p["opacities"]), sh=sh,
        )

    def inference_gaussians(self, t: float | Tensor, camera: int | None = None) -> Gaussians:
        """`gaussians_at(t, camera)` of a frozen expert (autograd off): the time features of
        both decoders from one weighted sum over their folded tables (`sample_rows`' linear
        interpolation and reflection as hat weights, no indexing), both decoders as batched
        products [2,N,·], one addition onto the packed canonical tensors. No host
        synchronisation. Equal to the training path up to float rounding."""
        s = self.inference_state()
        u = torch.remainder(self.time_for(t, camera), 2.0)
        u = torch.where(u > 1.0, 2.0 - u, u)
        weights = torch.relu(1.0 - (u * s["scale"] - s["nodes"]).abs())  # [R_c + R_f]
        h_t = torch.stack([part.sum(0) for part in (weights[:, None] * s["table"]).split(s["sizes"])])[:, None]
        hidden = torch.baddbmm(h_t, s["embedding"], s["trunk_g"])  # [2,N,W]
        for w, b in s["rest"]:
            hidden = torch.baddbmm(b, torch.relu(hidden), w)
        x = torch.relu(hidden).to(s["dtype"])
        a = torch.relu(torch.baddbmm(s["b1"], x, s["w1"]))
        out = torch.baddbmm(s["b2"], a, s["w2"]).float().sum(0)  # coarse + fine [N, Σk]
        g = s["canonical"] + out if s["coef"] is None else torch.addcmul(s["canonical"], s["coef"], out)
        d = dict(zip(s["names"], g.split(s["split"], dim=1), strict=True))
        sh = d["dsh"].view(s["sh"].shape) if "dsh" in d else s["sh"]
        return Gaussians(means=d["dx"], quats=d.get("dr", s["quats"]),
                         scales=torch.exp(d["ds"]) if "ds" in d else s["scales"],
                         opacities=torch.sigmoid(d["do"][:, 0]) if "do" in d else s["opacity"],
                         sh=sh, sh_degree=self.active_sh_degree)

    @torch.no_grad()
    def trajectories(self, times: Tensor, ids: Tensor | None = None) -> Tensor:
        """World positions of Gaussians `ids` (default all) at `times` [T]: [T,M,3] (no offsets)."""
        means = self.params["means"] if ids is None else self.params["means"][ids]
        c_move, _ = self.anneal()
        out = [means + c_move * self.deltas(t.reshape(()).to(means), ("dx",), ids)["dx"] for t in times.reshape(-1)]
        return torch.stack(out) if out else means.new_zeros((0, means.shape[0], 3))

    # -- training hooks ---------------------------------------------------------------------------
    def shared_params(self) -> dict[str, nn.Parameter]:
        out = {"temporal": self.temporal, "time_offsets": self.time_offsets}
        for prefix, module in (("coarse", self.coarse), ("fine", self.fine)):
            out.update({f"{prefix}.{n}": p for n, p in module.named_parameters()})
        return out

    def shared_param_groups(self) -> dict[str, list[str]]:
        return {"deformation": [n for n in self.shared_params() if n != "time_offsets"],
                "time_offsets": ["time_offsets"]}

    def learning_rates(self, step: int, extent: float) -> dict[str, float]:
        lr, iters = self.config.lr, self.config.train.iterations
        rates = lr.gaussian.at(step, iters, extent)
        rates["embedding"] = lr.embedding
        deform = exp_decay(step, lr.deformation_init * extent, lr.deformation_final * extent, iters)
        for name in self.shared_params():
            rates[name] = deform
        rates["time_offsets"] = lr.time_offset
        return rates

    def _neighbours(self) -> tuple[Tensor, Tensor]:
        """k-NN of the canonical means and their weights exp(-scale d^2) ([N,k] each)."""
        graph = self._graph()
        return graph.neighbours, graph.sqrt_weights.square()

    def _graph(self) -> NeighbourGraph:
        """The k-NN graph of the canonical means, recomputed when the set of Gaussians changed
        (count or tensor replaced by densification or loading)."""
        means = self.params["means"]
        key = (means.shape[0], id(means))
        if self._knn is None or self._knn[0] != key:
            idx, d2 = knn_graph(means.detach(), self.config.knn)
            self._knn = (key, neighbour_graph(idx, torch.exp(-self.config.knn_weight_scale * d2)))
        return self._knn[1]

    def regularisation(self, step: int) -> Tensor | None:
        c = self.config
        p = self.params
        loss = c.opacity_coef * torch.sigmoid(p["opacities"].mean())
        if c.smooth_coef > 0 and c.knn > 0:
            loss = loss + c.smooth_coef * graph_smoothness(p["embedding"], self._graph())
        return loss

    def photometric_weighting(self, step: int) -> tuple[float, float]:
        """With `ssim_multiview_only` (the authors, train.py:164-172): L1 + ssim_weight·D-SSIM
        on multi-view steps, as w·((1-λ)·L1 + λ·D-SSIM) with w = 1 + ssim_weight,
        λ = ssim_weight / w; L1 alone elsewhere. Without it: the loop's default."""
        c = self.config
        if not c.ssim_multiview_only:
            return super().photometric_weighting(step)
        if multiview_step(step, c.sampling) and c.ssim_weight > 0:
            return 1.0 + c.ssim_weight, c.ssim_weight / (1.0 + c.ssim_weight)
        return 1.0, 0.0

    def make_sampler(self, data: SceneData, seed: int) -> Sampler:
        """The authors' training views (`ErrorViewSampler`) when `sampling` has any part on,
        else the loop's `ViewSampler`."""
        s = self.config.sampling
        if not s.enabled:
            return super().make_sampler(data, seed)
        return ErrorViewSampler(data.splits["train"], self.config.train.batch_size, seed, s,
                                camera_centres(data.viewmats))

    def on_densify(self) -> None:
        self._knn = None
        if self.config.smooth_coef > 0 and self.config.knn > 0:
            self._graph()

    # -- persistence ------------------------------------------------------------------------------------
    def extra_state(self) -> dict:
        return {**super().extra_state(), "step": self.step,
                "train_cameras": self.train_cameras.cpu()}

    def load_extra_state(self, state: dict) -> None:
        super().load_extra_state(state)
        self.step = int(state.get("step", 0))
        if "train_cameras" in state:
            self.train_cameras = state["train_cameras"].to(self.temporal.device).bool()
        self._knn = None


__all__ = ["ED3DGSExpert", "ED3DGSConfig", "ED3DGSLR", "DeformDecoder", "resize_rows", "sample_rows",
           "rows_at", "knn_graph", "knn_candidates", "morton_keys", "smoothness", "graph_smoothness",
           "neighbour_graph", "NeighbourGraph"]
