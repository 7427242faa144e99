"""Gate-aware Gaussian pruning (MoE-GS §3.3, Eq. 10; REFERENCE.md §1): score every Gaussian of
every expert by how strongly it moves the router's gates, remove the lowest-scoring ones from
the frozen experts and from the router's per-Gaussian weights, fine-tune the router, repeat.

Importance (Eq. 10). For Gaussian i of expert k and a training view v, the VAPR splats the
vector w_i^per(v) = [w_i, w_dir_i, t·w_time_i] into three pixel channels; a channel at pixel u
is Σ_j x_jc·C_j(u) (+ background·T), C_j(u) = T_j(u)·α_j(u), so ∂x̂_c(u)/∂x_ic = C_i(u) ≥ 0.
The gates are a per-pixel function of the channels (Φ is a stack of 1x1 convolutions), so the
Jacobian of the gate image G'_k(v) [H·W] with respect to w_i^per(v) [3] has the entries

    ∂G'_k(u)/∂x_ic = s_kc(u)·C_i(u),   s_kc(u) = ∂G'_k(u)/∂x̂_kc(u)   (expert k's own channels)

and we take its entrywise L1 norm: E_i(v) = Σ_u Σ_c |s_kc(u)|·C_i(u). Both factors come from
autograd exactly: s from one backward of Σ_u G'_k(u) through the per-pixel head (no pixel
depends on another's channels), then one backward through the rasteriser with |s| as the
upstream gradient gives Σ_u |s_kc(u)|·C_i(u) for every i at once (the responsibility trick of
moe/responsibility.py). This is the sum over pixels of |∂G'_k(u)/∂w_i^per|, not |∂Σ_u G'_k/∂w_i^per|:
Φ's sensitivity changes sign from pixel to pixel, and a signed sum would let a Gaussian's
influences cancel. The gate of the expert that owns the Gaussian is the one taken: the other
experts' gates move by the opposite amount in total (softmax), so it is half the L1 norm over
experts. E_i = mean over the training views of E_i(v), with the router's evaluation
temperature (the gates the mixture is judged with). Computed in a pass over the training views
after router training and after each fine-tuning (deterministic, reusable), not accumulated
during training while the router still changes.

Pruning. A target ratio r of all the mixture's Gaussians is reached in `steps` rounds: after
round s the mixture keeps N0 − round(r·N0·s/steps) Gaussians, the highest-scoring ones across
experts (one shared threshold τ_s = the lowest kept score); a target threshold τ keeps every
Gaussian scoring ≥ τ at each round. The router is fine-tuned after every round and the scores
are recomputed before the next. The authors' simpler rule scores by sigmoid(w_i) instead
(keep if sigmoid(w) ≥ threshold). Rule `importance-max` takes the maximum of E_i(v) over the
views instead of the mean (not the paper's): under the mean, a Gaussian visible in 2 of 50
frames scores a twenty-fifth of a persistent one of the same influence, and a shared threshold
then strips an expert built of short-lived Gaussians (STG on fast motion) first.

Removing a Gaussian removes its rows from every per-Gaussian tensor of its expert and from the
router, so the pruned mixture renders fewer Gaussians and stores a smaller model.
"""

from __future__ import annotations

import copy
import math
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Literal

import torch
from torch import Tensor, nn

from ..config import NonNegativeInt, PositiveFloat, PositiveInt, validate
from ..errors import ConfigError
from ..experts.base import Expert
from ..progress import Progress
from .blend import pixel_rays, softmax_gates
from .pool import ExpertPool
from .routers import Router
from .routers.vapr import VolumeAwarePixelRouter
from .train_router import train_router

Rule = Literal["importance", "importance-max", "sigmoid"]
RULE_SUFFIX = {"importance": "", "importance-max": "-max", "sigmoid": "-sigmoid"}  # of the method name
RULES: tuple[str, ...] = tuple(RULE_SUFFIX)
# a pruned mixture's method: moe-<router>-p<percent> or -t<threshold>, -max / -sigmoid for those rules
PRUNED_METHOD = re.compile(
    r"^(?P<base>moe-[a-z0-9_]+)-(?P<kind>[pt])(?P<value>[0-9.e+-]+?)(?P<suffix>-max|-sigmoid)?$")


@dataclass
class PruneConfig:
    """Gate-aware pruning settings (MoE-GS §3.3; the paper gives no values beyond the 55% and
    75% ratios of Table 3, so these are ours).

    rule: importance (Eq. 10), importance-max (Eq. 10 with the maximum over the views in place
      of the mean: our departure, for experts whose Gaussians each live a few frames, which the
      mean over every view ranks below persistent ones) or sigmoid (the authors' code: keep if
      sigmoid(w) >= threshold);
    steps: pruning rounds towards the target ("progressively pruned"), the router fine-tuned
      after each;
    finetune_iterations: router steps after each round (one camera per step, the router's own
      loss and temperature, its learning-rate schedules continued where training ended);
    views: training views the importance is averaged over, evenly spaced (0: every one);
    temperature: the gates' softmax temperature for the importance (None: the router's
      evaluation temperature).
    """

    rule: Rule = "importance"
    steps: PositiveInt = 3
    finetune_iterations: NonNegativeInt = 200
    views: NonNegativeInt = 0
    temperature: PositiveFloat | None = None

    def __post_init__(self):
        validate(self, "prune")


@dataclass(frozen=True)
class PruneTarget:
    """What pruning reaches: kind "ratio" (value in (0,1): the share of all the mixture's
    Gaussians removed) or "threshold" (value τ: Gaussians scoring below it are removed)."""

    kind: Literal["ratio", "threshold"]
    value: float

    def __post_init__(self):
        if self.kind not in ("ratio", "threshold") or not math.isfinite(self.value):
            raise ConfigError(f"--prune: bad target {self.kind} {self.value!r}")
        if self.kind == "ratio" and not 0 < self.value < 1:
            raise ConfigError(f"--prune: a ratio must be between 0 and 100 percent (exclusive), got {self.value:g}")

    @property
    def tag(self) -> str:
        """p55 for a 0.55 ratio, t0.02 for a threshold 0.02."""
        if self.kind == "ratio":
            return f"p{round(self.value * 100, 4):g}"
        return f"t{self.value:g}"


def pruned_method(base: str, target: PruneTarget, rule: Rule = "importance") -> str:
    """The stored method of a pruned mixture: moe-vapr-p55, moe-vapr-t0.02, moe-vapr-p55-max,
    moe-vapr-p55-sigmoid."""
    return f"{base}-{target.tag}" + RULE_SUFFIX[rule]


def is_pruned_method(method: str) -> bool:
    """Whether `method` names a pruned mixture (`pruned_method`)."""
    return parse_pruned_method(method) is not None


def parse_pruned_method(method: str) -> tuple[str, PruneTarget, Rule] | None:
    """(base method, target, rule) of a pruned mixture's method name, or None."""
    m = PRUNED_METHOD.match(str(method))
    if m is None:
        return None
    try:
        value = float(m["value"])
        target = PruneTarget("ratio", value / 100) if m["kind"] == "p" else PruneTarget("threshold", value)
    except (ValueError, ConfigError):
        return None
    rule = next(r for r, suffix in RULE_SUFFIX.items() if suffix == (m["suffix"] or ""))
    return m["base"], target, rule


def parse_targets(spec: str, option: str = "--prune") -> list[PruneTarget]:
    """--prune: "none", or comma-separated ratios in percent (55,75) and thresholds (t0.02)."""
    items = [s.strip() for s in str(spec).split(",") if s.strip()]
    if items == ["none"] or not items:
        return []
    out = []
    for item in items:
        try:
            out.append(PruneTarget("threshold", float(item[1:])) if item.startswith("t")
                       else PruneTarget("ratio", float(item) / 100))
        except ValueError:
            raise ConfigError(f"{option} {spec}: {item!r} is neither a percentage (55) nor a threshold (t0.02)") from None
        except ConfigError as exc:
            raise ConfigError(f"{option} {spec}: {exc}") from None
    return list(dict.fromkeys(out))


# -- scores ----------------------------------------------------------------------------------------------
def check_prunable(router: Router) -> VolumeAwarePixelRouter:
    """The router if gate-aware pruning knows it (the VAPR: per-Gaussian w and the pixel head)."""
    if not isinstance(router, VolumeAwarePixelRouter):
        raise ConfigError(f"--prune: prunes a Volume-aware Pixel Router's mixture, not router {router.name!r}")
    return router


def vapr_gates(router: VolumeAwarePixelRouter, splat: Tensor, viewmats: Tensor, Ks: Tensor, width: int,
               height: int, temperature: float) -> Tensor:
    """The VAPR's gates [K,C,H,W] from its splatted channels [K,C,H,W,3] (w2D, w2D_dir,
    w2D_time): logit = w2D + Φ(w2D_dir, w2D_time, rays), softmax over experts (as its forward)."""
    origins, dirs = pixel_rays(viewmats, Ks, width, height)
    rays = torch.cat([origins, dirs], -1)[None].expand(splat.shape[0], -1, -1, -1, -1)
    logits = splat[..., 0] + router.phi(torch.cat([splat[..., 1:3], rays], -1))[..., 0]
    return softmax_gates(logits, temperature)


def view_importance(router: VolumeAwarePixelRouter, pool: ExpertPool, cam: int, frame: int,
                    temperature: float) -> list[Tensor]:
    """E_i(v) [N_k] per expert for one view: Σ_u Σ_c |∂G'_k(u)/∂w_ic^per(v)| (module docstring)."""
    data = pool.data
    t = data.times[frame]
    gs = pool.view_gaussians(cam, frame)
    channels = [c.detach().requires_grad_(True) for c in router.router_channels(t)]
    views = pool.render_view(cam, frame, extras=channels, extras_background=torch.ones(3, device=t.device),
                             gaussians=gs, background=router.expert_background(t.device))
    splats = [o.extras for o in views.outputs]  # K x [1,H,W,3]
    leaf = torch.stack(splats).detach().requires_grad_(True)
    with torch.enable_grad():
        gates = vapr_gates(router, leaf, views.viewmats, views.Ks, data.width, data.height, temperature)
    upstream = []
    for k in range(len(pool)):
        # pixels are independent: the gradient of the sum is each pixel's own derivative
        (sens,) = torch.autograd.grad(gates[k].sum(), leaf, retain_graph=k + 1 < len(pool))
        upstream.append(sens[k].abs())
    # one backward through the rasteriser (one graph when the experts share a pass): expert k's
    # channels only reach its own splat, so each gradient is Σ_u |s_kc(u)|·C_i(u) >= 0
    grads = torch.autograd.grad(splats, channels, grad_outputs=upstream)
    return [g.sum(-1).detach() for g in grads]


def spaced_views(count: int, at_most: int) -> list[int]:
    """Indices of at most `at_most` views evenly spaced over `count` (0: all of them)."""
    if at_most <= 0 or at_most >= count:
        return list(range(count))
    return sorted(set(torch.linspace(0, count - 1, at_most).round().long().tolist()))


def gate_importance(router: Router, pool: ExpertPool, view_ids: Sequence[int] | None = None,
                    split: str = "train", temperature: float | None = None,
                    progress: Progress | None = None, reduce: Literal["mean", "max"] = "mean") -> list[Tensor]:
    """Eq. 10: E_i [N_k] per expert, the mean over views `view_ids` of `split` (default all)
    of Σ_u Σ_c |∂G'_k(u)/∂w_ic^per| (module docstring); temperature: default the router's
    evaluation one. reduce="max": the largest per-view value instead of the mean (a Gaussian
    that matters in a few frames only keeps its score)."""
    if reduce not in ("mean", "max"):
        raise ConfigError(f"gate importance: reduce must be mean or max, got {reduce!r}")
    router = check_prunable(router)
    views = pool.data.splits[split]
    ids = list(range(len(views))) if view_ids is None else list(view_ids)
    if not ids:
        raise ConfigError(f"--prune: no {split} views to score the Gaussians on")
    temp = router.cfg.eval_temp if temperature is None else temperature
    total = [torch.zeros(n, device=pool.data.device, dtype=torch.float64) for n in pool.sizes]
    for j, i in enumerate(ids):
        for k, e in enumerate(view_importance(router, pool, int(views.cams[i]), int(views.frames[i]), temp)):
            total[k] = torch.maximum(total[k], e.double()) if reduce == "max" else total[k] + e.double()
        if progress is not None:
            progress(j + 1, len(ids))
    return [(s if reduce == "max" else s / len(ids)).float() for s in total]


def sigmoid_scores(router: Router) -> list[Tensor]:
    """The authors' rule: sigmoid(w_i) [N_k] per expert."""
    return [torch.sigmoid(w.detach()) for w in check_prunable(router).w]


def select_keep(scores: Sequence[Tensor], *, keep_count: int | None = None, threshold: float | None = None,
                at_least: int = 1) -> tuple[list[Tensor], float]:
    """Masks [N_k] of the Gaussians to keep and the shared threshold τ, from one of:
    keep_count: the keep_count highest scores over every expert, τ = the lowest of them (ties
    spread evenly over the experts: the lower row position relative to the expert's size
    first); threshold: every score >= τ. Either way every expert keeps at least its
    `at_least` highest-scoring Gaussians (a renderer needs one), counted within keep_count."""
    if (keep_count is None) == (threshold is None):
        raise ValueError("select_keep: give keep_count or threshold")
    sizes = [s.numel() for s in scores]
    flat = torch.cat([s.reshape(-1) for s in scores]).float()
    # rank by score (descending), ties by relative row position, stably
    relative = torch.cat([torch.arange(n, device=flat.device, dtype=torch.float64) / max(n, 1) for n in sizes])
    order = torch.sort(relative, stable=True).indices
    order = order[torch.sort(flat[order], descending=True, stable=True).indices]
    owner = torch.repeat_interleave(torch.arange(len(sizes), device=flat.device),
                                    torch.tensor(sizes, device=flat.device))[order]
    forced = torch.zeros(flat.numel(), dtype=torch.bool, device=flat.device)
    for k in range(len(sizes)):  # each expert's best-ranked rows
        forced[order[torch.nonzero(owner == k).flatten()[:at_least]]] = True
    if threshold is not None:
        return list(((flat >= threshold) | forced).split(sizes)), float(threshold)
    free = max(0, min(int(keep_count), flat.numel()) - int(forced.sum()))
    chosen = order[~forced[order]][:free]
    mask = forced.clone()
    mask[chosen] = True
    tau = float(flat[chosen[-1]]) if free > 0 else math.inf
    return list(mask.split(sizes)), tau


# -- removing Gaussians ----------------------------------------------------------------------------------
def keep_expert_rows(expert: Expert, keep: Tensor) -> Expert:
    """A copy of `expert` with only the Gaussians where keep [N] is true: every per-Gaussian
    tensor (`per_gaussian_params`) loses the same rows, shared networks are kept, and the
    expert's caches keyed by its Gaussians are rebuilt (`on_densify`). The input is unchanged."""
    params = getattr(expert, "per_gaussian_params", None)
    if params is None:
        raise ConfigError(f"--prune: expert {getattr(expert, 'name', type(expert).__name__)!r} is trained in "
                          "temporal segments; pruning needs one set of Gaussians per expert")
    n = expert.num_gaussians
    if keep.dtype != torch.bool or keep.shape != (n,):
        raise ValueError(f"keep_expert_rows: keep must be a bool mask [{n}], got {keep.dtype} {tuple(keep.shape)}")
    new = copy.deepcopy(expert)
    rows = new.per_gaussian_params()
    keep = keep.to(next(iter(rows.values())).device)
    for name, p in list(rows.items()):
        rows[name] = nn.Parameter(p.detach()[keep].clone(), requires_grad=p.requires_grad)
    new.on_densify()
    return new


def _per_gaussian_lists(router: Router) -> dict[str, nn.ParameterList]:
    """The router's per-Gaussian parameters: lists of one [N_k,...] tensor per expert."""
    return {name: m for name, m in router.named_children()
            if isinstance(m, nn.ParameterList) and len(m) == len(router.sizes)
            and all(p.shape[:1] == (n,) for p, n in zip(m, router.sizes, strict=True))}


def keep_router_rows(router: Router, keeps: Sequence[Tensor]) -> Router:
    """A router of the same kind and settings over the kept Gaussians: its per-Gaussian
    parameters (VAPR: w, w_dir, w_time) lose the pruned rows, shared ones (Φ) are copied."""
    if len(keeps) != len(router.sizes):
        raise ValueError(f"keep_router_rows: {len(keeps)} masks for {len(router.sizes)} experts")
    device = next(router.parameters()).device
    sizes = [int(k.sum()) for k in keeps]
    new = type(router)(sizes, router.cfg, device=device)
    state = dict(router.state_dict())
    for name in _per_gaussian_lists(router):
        for k, keep in enumerate(keeps):
            state[f"{name}.{k}"] = state[f"{name}.{k}"][keep.to(device)]
    new.load_state_dict(state)
    return new.train(router.training)


def pool_like(pool: ExpertPool, experts: Sequence[Expert]) -> ExpertPool:
    """A pool of `experts` with the same names, scene and rendering settings as `pool`."""
    return ExpertPool(experts, pool.names, pool.data, backend=pool.backend, cache_mb=pool.cache_bytes / 2**20,
                      render_mode=getattr(pool, "render_mode", "auto"))


def prune_mixture_rows(router: Router, pool: ExpertPool, keeps: Sequence[Tensor],
                       what: str = "--prune") -> tuple[Router, ExpertPool]:
    """The router and pool without the Gaussians where keeps [N_k] are false. ConfigError
    (naming `what` and the expert) when an expert would lose every Gaussian."""
    for name, keep in zip(pool.names, keeps, strict=True):
        if not bool(keep.any()):
            raise ConfigError(f"{what}: would remove every Gaussian of expert {name!r}; choose a lower ratio or "
                              "threshold")
    experts = [keep_expert_rows(e, keep) for e, keep in zip(pool.experts, keeps, strict=True)]
    return keep_router_rows(router, keeps), pool_like(pool, experts)


# -- progressive pruning -----------------------------------------------------------------------------------
@dataclass
class PruneStep:
    """One round: Gaussians kept per expert after it, the shared threshold τ, the
    fine-tuning's steps and last loss, and the seconds of scoring and of fine-tuning."""

    kept: list[int]
    tau: float
    finetune_steps: int
    finetune_loss: float
    score_seconds: float
    finetune_seconds: float


@dataclass
class PruneResult:
    """The pruned router and pool, the masks [N_k] over the original experts' Gaussians of
    the ones kept, and the rounds."""

    router: Router
    pool: ExpertPool
    keeps: list[Tensor]
    steps: list[PruneStep] = field(default_factory=list)

    @property
    def num_gaussians(self) -> int:
        return int(sum(int(k.sum()) for k in self.keeps))

    @property
    def seconds(self) -> tuple[float, float]:
        """(scoring, fine-tuning) seconds over every round."""
        return (sum(s.score_seconds for s in self.steps), sum(s.finetune_seconds for s in self.steps))


def prune_scores(router: Router, pool: ExpertPool, cfg: PruneConfig, progress: Progress | None = None) -> list[Tensor]:
    """The rule's score of every Gaussian [N_k] per expert (higher: more important)."""
    if cfg.rule == "sigmoid":
        return sigmoid_scores(router)
    ids = spaced_views(len(pool.data.splits["train"]), cfg.views)
    return gate_importance(router, pool, ids, "train", cfg.temperature, progress,
                           reduce="max" if cfg.rule == "importance-max" else "mean")


def prune_mixture(router: Router, pool: ExpertPool, target: PruneTarget, cfg: PruneConfig, *, seed: int = 0,
                  start_step: int = 0, progress: Progress | None = None, what: str = "--prune") -> PruneResult:
    """Progressive pruning of a trained router's mixture to `target` in cfg.steps rounds, the
    router fine-tuned after each (module docstring). The inputs are not changed. start_step:
    the step the router's training ended at (its learning-rate schedules continue from there)."""
    router = check_prunable(router)
    router = keep_router_rows(router, [torch.ones(n, dtype=torch.bool) for n in router.sizes])  # a private copy
    sizes = pool.sizes
    original = [torch.arange(n, device=pool.data.device) for n in sizes]
    total = sum(sizes)
    ft_cfg = replace(router.cfg, iterations=max(cfg.finetune_iterations, 1), seconds_limit=0.0)
    steps: list[PruneStep] = []
    for s in range(cfg.steps):
        t0 = time.perf_counter()
        scores = prune_scores(router, pool, cfg)
        if target.kind == "ratio":
            keeps, tau = select_keep(scores, keep_count=total - round(target.value * total * (s + 1) / cfg.steps))
        else:
            keeps, tau = select_keep(scores, threshold=target.value)
        router, pool = prune_mixture_rows(router, pool, keeps, what)
        original = [idx[keep.to(idx.device)] for idx, keep in zip(original, keeps, strict=True)]
        t1 = time.perf_counter()
        done, loss = 0, float("nan")
        if cfg.finetune_iterations > 0:
            trained = train_router(router, pool, ft_cfg, seed=seed + s + 1, start_step=start_step)
            done, loss = trained.steps, trained.final_loss
            start_step += trained.steps
        router.eval()
        steps.append(PruneStep(pool.sizes, tau, done, loss, t1 - t0, time.perf_counter() - t1))
        if progress is not None:
            progress(s + 1, cfg.steps, {"gaussians": sum(pool.sizes)})
    keeps = [torch.zeros(n, dtype=torch.bool, device=idx.device).index_fill_(0, idx, True)
             for idx, n in zip(original, sizes, strict=True)]
    return PruneResult(router, pool, keeps, steps)


__all__ = ["PruneConfig", "PruneTarget", "PruneStep", "PruneResult", "PRUNED_METHOD", "pruned_method",
           "is_pruned_method", "parse_pruned_method", "parse_targets", "check_prunable", "vapr_gates",
           "RULES", "RULE_SUFFIX", "view_importance", "spaced_views", "gate_importance", "sigmoid_scores", "select_keep",
           "keep_expert_rows", "keep_router_rows", "pool_like", "prune_mixture_rows", "prune_scores",
           "prune_mixture"]
