"""`stg`: Spacetime Gaussians (Li et al. 2024): polynomial motion, temporal radial-basis
opacity, time-tagged initialisation, optional per-pixel feature decoder and error-guided
sampling of new Gaussians (REFERENCE.md §2 "STG")."""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..config import (
    FiniteFloat,
    NonNegativeFloat,
    NonNegativeInt,
    OpenUnitFloat,
    PositiveFloat,
    PositiveInt,
    SHDegree,
    UnitFloat,
)
from ..data.init import InitData
from ..optim.densify import append_gaussians
from ..optim.schedules import exp_decay
from ..render.gaussians import Gaussians
from ..render.sh import rgb_to_sh0
from .base import DensifyConfig, Expert, TrainConfig
from .common import PointSet, init_gaussian_tensors, subsample
from .registry import register_expert

ColorMode = Literal["rgb", "sh", "features"]
InitRule = Literal["auto", "all", "frame0_isolated"]
# Per-dataset values of the original (oppo-us-research/SpacetimeGaussians), used where a setting
# is None/"auto". s_t at initialisation: train.py sets `trbfslinit = -1 * opt.trbfslinit`, and
# configs/techni_*/*.json give "trbfslinit": 2.0 (so s_t = -2); the N3V configs keep 0.0
TIME_SCALE_BY_DATASET = {"n3v": 0.0, "technicolor": -2.0}
# scale learning rate: configs/n3d_{lite,full}/*.json "scaling_lr" 0.0015 on four of six scenes
# (coffee_martini and flame_salmon_1: 0.003); configs/techni_*/*.json 0.005, which is also the
# default of thirdparty/gaussian_splatting/arguments/__init__.py (used for other datasets)
SCALE_LR_BY_DATASET = {"n3v": 1.5e-3, "technicolor": 5e-3}
DEFAULT_SCALE_LR = 5e-3
# initial points: "preprocesspoints": 3 (scene/ourslite.py create_from_pcd -> helper_model.py
# interpolate_point) keeps frame 0 and the most isolated quarter of every other frame; 0 keeps all.
# n3d_lite 3, n3d_full 0; techni_lite 0, techni_full 3 on three of five scenes. SH colour (the
# MoE-GS authors' STG) is per-Gaussian colour without a decoder, like lite. Missing keys: "all"
INIT_RULE_BY_DATASET = {("n3v", "rgb"): "frame0_isolated", ("n3v", "sh"): "frame0_isolated",
                        ("n3v", "features"): "all", ("technicolor", "features"): "frame0_isolated"}
DECODER_IN, DECODER_HIDDEN = 12, 6  # [specular 3, time feature 3, ray origin 3, ray direction 3]


@dataclass
class STGLR:
    """STG learning rates (REFERENCE.md §2 "STG"); means and motion scale with the extent."""

    means_init: PositiveFloat = 1.6e-4
    means_final: PositiveFloat = 1.6e-6
    motion: NonNegativeFloat = 1.6e-4 * 0.5 * 3.5  # position lr x 0.5 x movelr, as the original
    omega: NonNegativeFloat = 1e-4
    time_center: NonNegativeFloat = 1e-4
    time_scale: NonNegativeFloat = 0.03
    color: NonNegativeFloat = 2.5e-3  # rgb / base+specular features / SH DC
    shN: NonNegativeFloat = 2.5e-3 / 20
    features_t: NonNegativeFloat = 1e-3
    decoder: NonNegativeFloat = 1e-4  # the original's rgb decoder lr
    opacities: NonNegativeFloat = 0.05
    scales: NonNegativeFloat | None = None  # None: by dataset (SCALE_LR_BY_DATASET; N3V 1.5e-3, else 5e-3)
    quats: NonNegativeFloat = 1e-3


@dataclass
class ErrorSamplingConfig:
    """Error-guided sampling: new Gaussians along the rays of badly reconstructed pixels at
    the rendered depth (REFERENCE.md §2: from iteration 1600). Bounded per event."""

    enabled: bool = True
    start: NonNegativeInt = 1600
    stop: NonNegativeInt = 9000
    every: PositiveInt = 1000
    threshold: UnitFloat = 0.15  # mean absolute error per pixel (images in [0,1])
    max_rays: NonNegativeInt = 256  # per view and event
    per_ray: PositiveInt = 2  # Gaussians sampled per ray
    near_ratio: PositiveFloat = 0.8  # sampled depths: rendered depth x linspace(near_ratio, far_ratio)
    far_ratio: PositiveFloat = 1.2
    init_opacity: OpenUnitFloat = 0.1


@dataclass
class STGConfig:
    """Spacetime Gaussians defaults (REFERENCE.md §2 "STG")."""

    color: ColorMode = "sh"  # MoE-GS authors' choice on N3V; "rgb" = STG lite, "features" = STG full
    sh_degree: SHDegree = 3
    sh_degree_interval: PositiveInt = 1000
    init_opacity: OpenUnitFloat = 0.1
    init_points: PointSet = "merged"  # the time-tagged union of per-frame points
    # "all": every point; "frame0_isolated": all of the first frame + in every other frame the
    # `isolated_fraction` of its points farthest from their nearest neighbour in that frame;
    # "auto": by dataset and colour mode (INIT_RULE_BY_DATASET)
    init_rule: InitRule = "auto"
    isolated_fraction: UnitFloat = 0.25  # helper_model.py interpolate_point: int(N * 0.25) per frame
    # True: the original's threshold test `d > sorted(d)[-k]` (keeps k-1 points, and with k = 0
    # every point but the closest); False: exactly the k most isolated
    isolated_compat: bool = False
    max_init_points: NonNegativeInt = 0  # random subset after the rule (0 = all)
    time_scale_init: FiniteFloat | None = None  # s_t; None: by dataset (n3v 0, technicolor -2, else 0)
    lr: STGLR = field(default_factory=STGLR)
    error_sampling: ErrorSamplingConfig = field(default_factory=ErrorSamplingConfig)
    train: TrainConfig = field(default_factory=lambda: TrainConfig(
        iterations=30_000, batch_size=2, same_time=True,
        densify=DensifyConfig(start=500, stop=9000, every=100, grad_threshold=2e-4, reset_every=3000)))


PRESETS: dict[str, dict] = {
    # STG schedule on real datasets (30k steps, 2 views of one time, densify 500..9000)
    "paper": {},
    # synthetic `full` on one GPU: a few minutes; times span [0,1) like one STG segment but
    # motion is fast, so the temporal window starts narrower (width e^-1 of the sequence)
    "fast": {"time_scale_init": -1.0, "max_init_points": 100_000,
             "error_sampling": {"start": 1000, "stop": 5000, "every": 1000},
             "train": {"iterations": 8000,
                       "densify": {"start": 500, "stop": 5000, "every": 100, "reset_every": 3000}}},
    # CPU demo scale (synthetic `small`)
    "small": {"sh_degree": 1, "sh_degree_interval": 300, "max_init_points": 8000, "time_scale_init": -1.0,
              "error_sampling": {"start": 400, "stop": 1200, "every": 200, "max_rays": 128},
              "train": {"iterations": 1500, "checkpoint_every": 500,
                        "densify": {"start": 200, "stop": 1200, "every": 100, "reset_every": 0}}},
    # CPU tests (synthetic `tiny`): seconds
    # (2 views per step: 300 steps see 600 images, static's tiny 400 steps see 400)
    "tiny": {"sh_degree": 1, "sh_degree_interval": 150, "max_init_points": 2500, "time_scale_init": -1.0,
             "error_sampling": {"start": 120, "stop": 280, "every": 80, "max_rays": 64},
             "train": {"iterations": 300, "checkpoint_every": 100,
                       "densify": {"start": 80, "stop": 250, "every": 40, "reset_every": 0}}},
}


# -- the STG model as functions of the parameters ---------------------------------------------
def temporal_opacity(opacity_logit: Tensor, time_center: Tensor, time_scale: Tensor, t: Tensor) -> Tensor:
    """sigmoid(o) · exp(−((t − μ_t) / exp(s_t))²). All [N] (t scalar) -> [N]."""
    return torch.sigmoid(opacity_logit) * torch.exp(-((t - time_center) / torch.exp(time_scale)).square())


def polynomial_position(means: Tensor, motion: Tensor, delta: Tensor) -> Tensor:
    """x + v·Δ + a·Δ² + j·Δ³. means [N,3], motion [N,9] = [v, a, j], delta [N] or [T,N] ->
    [N,3] or [T,N,3]."""
    d = delta[..., None]
    v, a, j = motion[:, 0:3], motion[:, 3:6], motion[:, 6:9]
    return means + v * d + a * d * d + j * d * d * d


def polynomial_velocity(motion: Tensor, delta: Tensor) -> Tensor:
    """d x / d t = v + 2a·Δ + 3j·Δ². motion [N,9], delta [N] -> [N,3]."""
    d = delta[..., None]
    return motion[:, 0:3] + 2 * motion[:, 3:6] * d + 3 * motion[:, 6:9] * d * d


def rotation_at(quats: Tensor, omega: Tensor, delta: Tensor) -> Tensor:
    """normalize(q + ω·Δ). quats, omega [N,4], delta [N] -> unit quaternions [N,4]."""
    return F.normalize(quats + omega * delta[:, None], dim=-1)


def pixel_rays(viewmats: Tensor, Ks: Tensor, width: int, height: int) -> Tensor:
    """World ray origins and unit directions through pixel centres: [C,H,W,6]."""
    C = viewmats.shape[0]
    v, u = torch.meshgrid(torch.arange(height, device=Ks.device, dtype=Ks.dtype) + 0.5,
                          torch.arange(width, device=Ks.device, dtype=Ks.dtype) + 0.5, indexing="ij")
    pix = torch.stack([u, v, torch.ones_like(u)], -1)  # [H,W,3]
    dirs_cam = torch.einsum("cij,hwj->chwi", torch.linalg.inv(Ks), pix)
    R, tr = viewmats[:, :3, :3], viewmats[:, :3, 3]
    dirs = F.normalize(torch.einsum("cji,chwj->chwi", R, dirs_cam), dim=-1)  # R^T d
    origins = -(R.transpose(1, 2) @ tr[..., None])[..., 0]
    return torch.cat([origins[:, None, None].expand(C, height, width, 3), dirs], -1)


def decode_features(rendered: Tensor, rays: Tensor, w1: Tensor, w2: Tensor) -> Tensor:
    """STG full colour: sigmoid(base + MLP([specular, time feature, rays])), the MLP being
    1x1 convolutions 12 -> 6 -> 3 without bias and a ReLU between.
    rendered [C,H,W,9], rays [C,H,W,6], w1 [6,12], w2 [3,6] -> RGB [C,H,W,3]."""
    base, rest = rendered[..., :3], rendered[..., 3:9]
    x = torch.cat([rest, rays], -1)
    return torch.sigmoid(base + torch.relu(x @ w1.T) @ w2.T)


def nearest_other_distance(xyz: Tensor, max_elements: int = 1 << 25) -> Tensor:
    """Distance from every point to its nearest other point (mmcv `knn(2, ...)`'s second
    neighbour in the original). xyz [P,3] -> [P]; inf for a single point."""
    n = xyz.shape[0]
    chunk = max(1, max_elements // max(n, 1))  # bounds the [chunk, P] distance block
    out = []
    for i in range(0, n, chunk):
        d = torch.cdist(xyz[i:i + chunk], xyz)
        d[torch.arange(d.shape[0]), torch.arange(i, i + d.shape[0])] = float("inf")  # not itself
        out.append(d.min(1).values)
    return torch.cat(out) if out else xyz.new_zeros(0)


def most_isolated(dist: Tensor, fraction: float, compat: bool = False) -> Tensor:
    """Which points to keep: the k = int(fraction * P) largest nearest-neighbour distances.
    dist [P] -> bool [P]. compat: the original's test dist > (k-th largest), which keeps k-1
    points when distances differ and, for k = 0, all but the smallest (sorted(d)[-0] = min)."""
    k = int(dist.numel() * fraction)
    if compat:
        return dist > dist.sort().values[-k]
    keep = torch.zeros(dist.numel(), dtype=torch.bool, device=dist.device)
    keep[dist.topk(k).indices] = True
    return keep


def select_init_points(pts: dict[str, np.ndarray], rule: str, fraction: float, compat: bool = False,
                       device: torch.device | str = "cpu") -> dict[str, np.ndarray]:
    """STG's initial points (helper_model.py `interpolate_point`): every point of the first
    frame present, and of every other frame the `fraction` of its points farthest from their
    nearest neighbour within that same frame (rule "frame0_isolated"); rule "all": unchanged.
    pts: xyz [P,3], frame [P] and any other rows [P,...] -> the kept rows, in input order."""
    if rule == "all":
        return pts
    frames = pts["frame"]
    first = frames.min() if len(frames) else 0
    keep = frames == first
    for f in np.unique(frames):
        if f == first:
            continue
        rows = np.nonzero(frames == f)[0]
        xyz = torch.as_tensor(pts["xyz"][rows], dtype=torch.float32, device=device)
        keep[rows[most_isolated(nearest_other_distance(xyz), fraction, compat).cpu().numpy()]] = True
    return {k: v[keep] for k, v in pts.items()}


def resolve_dataset_defaults(config: STGConfig, dataset: str) -> STGConfig:
    """A copy of `config` with the per-dataset settings (None / "auto") filled in for `dataset`:
    s_t, the initial-point rule and the scale learning rate. The saved config then says what ran."""
    s_t, rule, scales = config.time_scale_init, config.init_rule, config.lr.scales
    if s_t is None:
        s_t = TIME_SCALE_BY_DATASET.get(dataset, 0.0)
    if rule == "auto":
        rule = INIT_RULE_BY_DATASET.get((dataset, config.color), "all")
    if scales is None:
        scales = SCALE_LR_BY_DATASET.get(dataset, DEFAULT_SCALE_LR)
    return replace(config, time_scale_init=s_t, init_rule=rule, lr=replace(config.lr, scales=scales))


@register_expert
class STGExpert(Expert):
    """Per Gaussian: means, log-scales, quats, logit opacity, motion [N,9] (v, a, j), omega
    [N,4], time_center μ_t [N], time_scale s_t [N] (log), and colour: `colors` [N,3] (rgb),
    `sh0`/`shN` (sh) or `colors` [N,6] + `features_t` [N,3] (features; shared decoder)."""

    name = "stg"
    Config = STGConfig
    presets = PRESETS

    def __init__(self, config: STGConfig):
        super().__init__(config)
        if config.color == "features":
            self.decoder_w1 = nn.Parameter(torch.empty(DECODER_HIDDEN, DECODER_IN))
            self.decoder_w2 = nn.Parameter(torch.empty(3, DECODER_HIDDEN))
            for w in (self.decoder_w1, self.decoder_w2):  # nn.Conv2d's default initialisation
                nn.init.kaiming_uniform_(w, a=math.sqrt(5))

    # -- construction --------------------------------------------------------------------------
    @classmethod
    def from_init(cls, init: InitData, config: STGConfig, generator: torch.Generator | None = None) -> STGExpert:
        generator = generator or torch.Generator().manual_seed(0)
        config = resolve_dataset_defaults(config, init.dataset)
        pts = select_init_points(init.points(config.init_points), config.init_rule, config.isolated_fraction,
                                 config.isolated_compat, init.device)
        pts = subsample(pts, config.max_init_points, generator)
        expert = cls(config).to(init.device)
        for k, v in expert.initial_tensors(pts, config.time_scale_init, init.device).items():
            expert.params[k] = nn.Parameter(v)
        return expert

    def initial_tensors(self, pts: dict[str, np.ndarray], time_scale: float, device) -> dict[str, Tensor]:
        """Rows for points xyz [P,3], rgb [P,3] uint8, time [P]: static 3DGS init, zero motion,
        μ_t = the point's frame time, s_t = time_scale, colour per mode."""
        base = init_gaussian_tensors(pts["xyz"], pts["rgb"], self.config.sh_degree, self.config.init_opacity, device)
        n = base["means"].shape[0]
        out = {k: base[k] for k in ("means", "scales", "quats", "opacities")}
        out["motion"] = torch.zeros(n, 9, device=device)
        out["omega"] = torch.zeros(n, 4, device=device)
        out["time_center"] = torch.as_tensor(pts["time"], dtype=torch.float32, device=device).reshape(n)
        out["time_scale"] = torch.full((n,), float(time_scale), device=device)
        rgb = torch.as_tensor(pts["rgb"], dtype=torch.float32, device=device) / 255.0
        out.update(self._color_rows(rgb, base))
        return out

    def _color_rows(self, rgb: Tensor, base: dict[str, Tensor] | None = None) -> dict[str, Tensor]:
        """Colour tensors for new Gaussians of colour rgb [M,3] in [0,1]."""
        mode, m = self.config.color, rgb.shape[0]
        if mode == "rgb":
            return {"colors": rgb.clone()}
        if mode == "sh":
            k = (self.config.sh_degree + 1) ** 2
            return {"sh0": rgb_to_sh0(rgb)[:, None, :], "shN": rgb.new_zeros(m, k - 1, 3)}
        # base starts at logit(colour) so that sigmoid(base + MLP) starts near it; specular = colour
        base_logit = torch.logit(rgb.clamp(0.02, 0.98))
        return {"colors": torch.cat([base_logit, rgb], 1), "features_t": rgb.new_zeros(m, 3)}

    # -- the model at time t -----------------------------------------------------------------------
    def gaussians_at(self, t: float | Tensor, camera: int | None = None) -> Gaussians:
        if self.uses_inference_path():
            return self.inference_gaussians(t)
        p = self.params
        t = torch.as_tensor(t, dtype=p["means"].dtype, device=p["means"].device)
        delta = t - p["time_center"]
        # the original detaches Δ in motion and colour: μ_t learns from the opacity term only
        d = delta.detach()
        g = dict(
            means=polynomial_position(p["means"], p["motion"], d),
            quats=rotation_at(p["quats"], p["omega"], d),
            scales=torch.exp(p["scales"]),
            opacities=temporal_opacity(p["opacities"], p["time_center"], p["time_scale"], t),
        )
        mode = self.config.color
        if mode == "sh":
            return Gaussians(**g, sh=torch.cat([p["sh0"], p["shN"]], 1), sh_degree=self.active_sh_degree)
        if mode == "rgb":
            return Gaussians(**g, features=p["colors"])
        return Gaussians(**g, features=torch.cat([p["colors"], d[:, None] * p["features_t"]], 1))

    def build_inference_state(self) -> dict[str, Tensor]:
        """Time-invariant parts of `gaussians_at`: activated scales, sigmoid opacities,
        exp(s_t), the colour tensor, the motion coefficients as contiguous [N,3] blocks."""
        p = self.params
        motion = p["motion"]
        state = dict(means=p["means"], vel=motion[:, 0:3].contiguous(), acc=motion[:, 3:6].contiguous(),
                     jerk=motion[:, 6:9].contiguous(), quats=p["quats"], omega=p["omega"],
                     time_center=p["time_center"], width=torch.exp(p["time_scale"]),
                     opacity=torch.sigmoid(p["opacities"]), scales=torch.exp(p["scales"]))
        mode = self.config.color
        if mode == "sh":
            state["sh"] = torch.cat([p["sh0"], p["shN"]], 1)
        else:
            state["colors"] = p["colors"]
            if mode == "features":
                state["features_t"] = p["features_t"]
        return state

    def inference_gaussians(self, t: float | Tensor) -> Gaussians:
        """`gaussians_at(t)` of a frozen expert (autograd off): position by Horner's rule
        (3 fused multiply-adds), rotation and temporal opacity in a few in-place ops, the rest
        cached. Equal to the training path up to float rounding."""
        s = self.inference_state()
        t = torch.as_tensor(t, dtype=s["means"].dtype, device=s["means"].device)
        delta = t - s["time_center"]
        d = delta[:, None]
        poly = torch.addcmul(s["vel"], torch.addcmul(s["acc"], s["jerk"], d), d)
        means = torch.addcmul(s["means"], poly, d)
        quats = F.normalize(torch.addcmul(s["quats"], s["omega"], d), dim=-1)
        opacities = (delta / s["width"]).square_().neg_().exp_().mul_(s["opacity"])
        g = dict(means=means, quats=quats, scales=s["scales"], opacities=opacities)
        mode = self.config.color
        if mode == "sh":
            return Gaussians(**g, sh=s["sh"], sh_degree=self.active_sh_degree)
        if mode == "rgb":
            return Gaussians(**g, features=s["colors"])
        return Gaussians(**g, features=torch.cat([s["colors"], d * s["features_t"]], 1))

    @property
    def decodes_pixels(self) -> bool:
        return self.config.color == "features"

    def decode(self, rendered: Tensor, viewmats: Tensor, Ks: Tensor, t: Tensor) -> Tensor:
        """features mode: [C,H,W,9] -> RGB [C,H,W,3] through the shared MLP; else unchanged."""
        if not self.decodes_pixels:
            return rendered
        C, H, W, _ = rendered.shape
        return decode_features(rendered, pixel_rays(viewmats, Ks, W, H), self.decoder_w1, self.decoder_w2)

    @torch.no_grad()
    def trajectories(self, times: Tensor, ids: Tensor | None = None) -> Tensor:
        """World positions [T,M,3] of Gaussians `ids` (None: all) at `times` [T]."""
        p = self.params
        sel = slice(None) if ids is None else ids
        times = torch.as_tensor(times, dtype=p["means"].dtype, device=p["means"].device)
        delta = times[:, None] - p["time_center"][sel][None]
        return polynomial_position(p["means"][sel], p["motion"][sel], delta)

    # -- training hooks ------------------------------------------------------------------------------
    def shared_params(self) -> dict[str, nn.Parameter]:
        if self.config.color != "features":
            return {}
        return {"decoder_w1": self.decoder_w1, "decoder_w2": self.decoder_w2}

    def learning_rates(self, step: int, extent: float) -> dict[str, float]:
        lr, mode = self.config.lr, self.config.color
        out = {
            "means": exp_decay(step, lr.means_init * extent, lr.means_final * extent, self.config.train.iterations),
            "scales": DEFAULT_SCALE_LR if lr.scales is None else lr.scales,  # None only before from_init
            "quats": lr.quats, "opacities": lr.opacities,
            "motion": lr.motion * extent, "omega": lr.omega,
            "time_center": lr.time_center, "time_scale": lr.time_scale,
        }
        if mode == "sh":
            out.update(sh0=lr.color, shN=lr.shN)
        else:
            out["colors"] = lr.color
        if mode == "features":
            out.update(features_t=lr.features_t, decoder_w1=lr.decoder, decoder_w2=lr.decoder)
        return out

    def after_step(self, step: int, ctx) -> None:
        """Error-guided sampling on its schedule (see ErrorSamplingConfig)."""
        es = self.config.error_sampling
        if not es.enabled or step < es.start or step >= es.stop or (step - es.start) % max(es.every, 1):
            return
        rows = self.error_guided_rows(ctx)
        if rows is not None:
            append_gaussians(self.params, ctx.per_opt, rows, ctx.strategy_state)

    @torch.no_grad()
    def error_guided_rows(self, ctx) -> dict[str, Tensor] | None:
        """New Gaussians for the step's views: for each view, the (at most max_rays) pixels
        with mean absolute error above the threshold; `per_ray` points along each pixel ray
        around the rendered depth, at the view's time (μ_t = t, so they sit exactly there),
        with the ground-truth colour and the other parameters of the nearest Gaussian.
        Returns rows for every per-Gaussian tensor, or None when no pixel qualifies."""
        es, data = self.config.error_sampling, ctx.data
        err = (ctx.pred - ctx.gt).abs().mean(-1)  # [B,H,W]
        depth, alpha = _view_depths(ctx)
        points, colors, times = [], [], []
        for b in range(err.shape[0]):
            sampled = _sample_view(err[b], depth[b], alpha[b], ctx.gt[b], es, *data.camera_batch(ctx.cams[b:b + 1]))
            if sampled is None:
                continue
            pts, rgb = sampled
            points.append(pts)
            colors.append(rgb)
            times.append(data.times[int(ctx.frames[b])].expand(pts.shape[0]))
        if not points:
            return None
        return self._rows_at(torch.cat(points), torch.cat(colors), torch.cat(times))

    def _rows_at(self, points: Tensor, rgb: Tensor, times: Tensor) -> dict[str, Tensor]:
        """Rows for Gaussians at world points [M,3] with colours [M,3] at times [M]: copies of
        the nearest Gaussian (positions compared at that time), then position, time centre,
        opacity and colour set."""
        p = self.params
        nearest = torch.empty(points.shape[0], dtype=torch.long, device=points.device)
        for t in torch.unique(times):
            sel = times == t
            pos = polynomial_position(p["means"], p["motion"], t - p["time_center"])
            nearest[sel] = torch.cdist(points[sel], pos).argmin(1)
        rows = {k: v.detach()[nearest].clone() for k, v in p.items()}
        rows["means"] = points
        rows["time_center"] = times.clone()
        rows["opacities"] = torch.full_like(rows["opacities"], math.log(
            self.config.error_sampling.init_opacity / (1 - self.config.error_sampling.init_opacity)))
        rows.update(self._color_rows(rgb))
        return rows

    # -- persistence ----------------------------------------------------------------------------------

def _view_depths(ctx) -> tuple[Tensor, Tensor]:
    """Rendered depth and alpha [B,H,W] of the step's views, in view order (the loop renders one
    group per distinct frame, in order of first appearance; STG is not camera-dependent)."""
    groups: dict[int, list[int]] = {}
    for i, f in enumerate(ctx.frames.tolist()):
        groups.setdefault(f, []).append(i)
    depth = [None] * len(ctx.frames)
    alpha = [None] * len(ctx.frames)
    for out, members in zip(ctx.outputs, groups.values(), strict=True):
        for j, i in enumerate(members):
            depth[i], alpha[i] = out.depth[j, ..., 0], out.alpha[j, ..., 0]
    return torch.stack(depth).detach(), torch.stack(alpha).detach()


def _sample_view(err: Tensor, depth: Tensor, alpha: Tensor, gt: Tensor, es: ErrorSamplingConfig,
                 viewmat: Tensor, K: Tensor) -> tuple[Tensor, Tensor] | None:
    """World points [M,3] and colours [M,3] sampled along the worst pixels' rays of one view.
    err, depth, alpha [H,W]; gt [H,W,3]; viewmat [1,4,4]; K [1,3,3]."""
    covered = alpha > 0.5
    if not covered.any():
        return None  # no depth to sample at
    flat = err.flatten()
    n = min(es.max_rays, int((flat > es.threshold).sum()))
    if n == 0:
        return None
    idx = flat.topk(n).indices
    W = err.shape[1]
    v, u = idx // W, idx % W
    # uncovered pixels have no depth of their own: use the view's median covered depth
    z = torch.where(covered.flatten()[idx], depth.flatten()[idx], depth[covered].median())
    ratios = torch.linspace(es.near_ratio, es.far_ratio, es.per_ray, device=err.device)
    zs = (z[:, None] * ratios[None]).reshape(-1)  # [n*per_ray]
    pix = torch.stack([u + 0.5, v + 0.5, torch.ones_like(u, dtype=err.dtype)], -1).to(err.dtype)
    cam = (torch.linalg.inv(K[0]) @ pix.T).T.repeat_interleave(es.per_ray, 0) * zs[:, None]
    R, t = viewmat[0, :3, :3], viewmat[0, :3, 3]
    world = (cam - t) @ R  # R^T (p - t), row form
    rgb = gt.reshape(-1, 3)[idx].repeat_interleave(es.per_ray, 0)
    return world, rgb


__all__ = ["STGExpert", "STGConfig", "STGLR", "ErrorSamplingConfig", "temporal_opacity", "polynomial_position",
           "polynomial_velocity", "rotation_at", "decode_features", "pixel_rays", "select_init_points",
           "nearest_other_distance", "most_isolated", "resolve_dataset_defaults"]
