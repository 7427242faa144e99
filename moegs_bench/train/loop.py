"""The generic training loop every expert uses: one step (views from the expert's sampler,
render, loss, backward, optimisers), learning-rate schedules, gsplat DefaultStrategy
densification (opacity resets done explicitly), progress and resumable checkpoints."""

from __future__ import annotations

import time
import warnings
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace

import torch
from gsplat.strategy.ops import reset_opa
from torch import Tensor

from ..data.load import SceneData
from ..data.sampling import Sampler
from ..errors import ConfigError, StateWarning, UnreadableFileError
from ..eval.perf import peak_memory_mb, reset_peak_memory
from ..experts.base import Expert
from ..experts.views import render_expert_views
from ..io import load_torch, save_torch
from ..progress import Progress
from .losses import DistillTargets, distillation_loss, photometric

LOG_EVERY = 25  # steps between loss read-backs (each one waits for the device)


@dataclass
class TrainResult:
    """What one training run did. seconds excludes time spent before a resume."""

    steps: int
    seconds: float
    iters_per_second: float
    num_gaussians: int
    final_loss: float
    peak_memory_mb: float | None
    resumed_from: int = 0
    losses: list[float] = field(default_factory=list)


def make_optimizers(expert: Expert) -> tuple[dict[str, torch.optim.Optimizer], torch.optim.Optimizer | None]:
    """One Adam per per-Gaussian tensor (the strategy edits their state when it densifies) and
    one Adam for the shared parameters (one group per `Expert.shared_param_groups` entry)."""
    params = expert.per_gaussian_params()
    fused = all(p.is_cuda for p in params.values())  # one kernel per step instead of several
    per = {name: torch.optim.Adam([{"params": [p], "lr": 0.0, "name": name}], eps=1e-15, fused=fused)
           for name, p in params.items()}
    shared = expert.shared_params()
    shared_opt = None
    if shared:
        groups = [{"params": [shared[m] for m in members], "lr": 0.0, "name": name, "members": list(members)}
                  for name, members in expert.shared_param_groups().items()]
        shared_opt = torch.optim.Adam(groups, eps=1e-15, fused=fused)
    return per, shared_opt


def set_learning_rates(lrs: dict[str, float], per: dict, shared_opt) -> None:
    for name, opt in per.items():
        opt.param_groups[0]["lr"] = lrs[name]
    if shared_opt is not None:
        for group in shared_opt.param_groups:
            group["lr"] = lrs[group["members"][0]]


@dataclass
class StepContext:
    """What `Expert.after_step` may use: optimisers (per-Gaussian dict and shared), the
    strategy and its state, the step's renders, predictions [B,H,W,3], ground truth
    [B,H,W,3], the views (camera and frame indices [B], CPU) and the scene."""

    data: SceneData
    per_opt: dict
    shared_opt: torch.optim.Optimizer | None
    strategy: object
    strategy_state: dict
    outputs: list
    pred: Tensor
    gt: Tensor
    cams: Tensor
    frames: Tensor


@dataclass
class StepViews:
    """The forward half of a step: the views drawn (indices into the train split [B], CPU),
    their ground truth and predictions [B,H,W,3], and the render outputs."""

    idx: Tensor
    gt: Tensor
    pred: Tensor
    outputs: list


def render_step(expert: Expert, data: SceneData, sampler: Sampler, step: int, per_opt: dict, shared_opt,
                background: Tensor, backend: str = "auto") -> StepViews:
    """Schedules and learning rates of `step`, the step's views, and the expert's renders of
    them. background [3]: the fixed background (a random one is drawn if the expert's
    `train.random_background`)."""
    expert.on_step(step)
    set_learning_rates(expert.learning_rates(step, data.extent), per_opt, shared_opt)
    idx = sampler.next(expert.active_frames(step, len(data.times)), step)
    gt = data.image_float("train", idx)
    if expert.config.train.random_background:
        background = torch.rand(3, device=data.device)
    views = data.splits["train"]
    pred, outputs = render_expert_views(expert, data, views.cams[idx], views.frames[idx], background, backend=backend)
    return StepViews(idx, gt, pred, outputs)


def expert_loss(expert: Expert, pred: Tensor, gt: Tensor, step: int, targets: DistillTargets | None = None,
                idx: Tensor | None = None) -> Tensor:
    """The training loss: photometric w·((1-λ)·L1 + λ·D-SSIM) with the expert's (w, λ) at
    `step` (`Expert.photometric_weighting`) plus its regularisers. pred, gt [B,H,W,3] -> scalar.
    With `targets`, Eq. 11 on the pseudo-labels of views `idx` [B] replaces the photometric term."""
    weight, ssim_lambda = expert.photometric_weighting(step)
    if targets is not None:
        gate, moe = targets.provider(idx)
        loss = distillation_loss(pred, gt, moe, gate, targets.lam, ssim_lambda)
    else:
        loss = photometric(pred, gt, ssim_lambda)
    if weight != 1.0:  # no extra kernel (and bit-identical losses) at the default weight
        loss = weight * loss
    reg = expert.regularisation(step)
    return loss if reg is None else loss + reg


def view_l1(pred: Tensor, gt: Tensor) -> Tensor:
    """Per-view mean absolute error, detached: pred, gt [B,H,W,3] -> [B] (on their device)."""
    return (pred.detach() - gt).abs().mean(dim=(1, 2, 3))


def step_optimizers(per_opt: dict, shared_opt) -> None:
    """One step of every optimiser, then clear the gradients."""
    for opt in list(per_opt.values()) + ([shared_opt] if shared_opt is not None else []):
        opt.step()
        opt.zero_grad(set_to_none=True)


def merged_info(outputs) -> dict:
    """One strategy `info` ([C,N] meta, C = every image) for several renders of the same
    Gaussians in one step (each [C,N] or, from `render_batch`, [B,C,N])."""
    grads = [o.info["means2d"].grad for o in outputs]
    grad = torch.cat([(g if g is not None else torch.zeros_like(o.info["means2d"])).flatten(0, -3)
                      for g, o in zip(grads, outputs, strict=True)])
    first = outputs[0].info
    return {
        "means2d": SimpleNamespace(grad=grad),
        "radii": torch.cat([o.info["radii"].flatten(0, -3) for o in outputs]),
        "width": first["width"],
        "height": first["height"],
        "n_cameras": sum(int(o.info["n_cameras"]) for o in outputs),
        "gaussian_ids": None,
    }


_TF32 = {"highest": ("ieee", "highest"), "high": ("tf32", "high")}  # setting -> (new API, legacy API)


@contextmanager
def matmul_precision(precision: str):
    """Run a block with float32 CUDA matmuls at `precision`: "highest" (IEEE fp32) or "high"
    (TF32 allowed), restoring the previous setting afterwards. Uses torch's
    `backends.cuda.matmul.fp32_precision` where it exists (torch >= 2.9, which deprecates
    mixing it with the legacy setter), else `set_float32_matmul_precision`. Whether TF32
    kernels are then chosen is up to the torch build: docs/performance.md."""
    if precision not in _TF32:
        raise ConfigError(f"train.matmul_precision: {precision!r} is not 'highest' or 'high'")
    new_api = getattr(torch.backends.cuda.matmul, "fp32_precision", None) is not None
    if new_api:
        previous = torch.backends.cuda.matmul.fp32_precision
        torch.backends.cuda.matmul.fp32_precision = _TF32[precision][0]
    else:
        previous = torch.get_float32_matmul_precision()
        torch.set_float32_matmul_precision(_TF32[precision][1])
    try:
        yield
    finally:
        if new_api:
            torch.backends.cuda.matmul.fp32_precision = previous
        else:
            torch.set_float32_matmul_precision(previous)


STATE_KEYS = ("step", "elapsed", "losses", "expert", "per_opt", "shared_opt", "strategy", "sampler", "rng")


def read_train_state(path: Path) -> dict | None:
    """The resumable state at `path`, or None when there is none. A state that cannot be read
    back (truncated, damaged, not a training state) is renamed to `<name>.unreadable` with a
    StateWarning, and None returned: training starts again from step 0."""
    path = Path(path)
    if not path.is_file():
        return None
    try:
        st = load_torch(path, verify=True)
        if not isinstance(st, dict) or not set(STATE_KEYS) <= st.keys():
            raise UnreadableFileError(path, "not a training state (keys missing)")
    except UnreadableFileError as exc:
        aside = path.with_name(path.name + ".unreadable")
        path.replace(aside)
        warnings.warn(StateWarning(f"{exc}; moved to {aside.name}, training starts again from step 0"),
                      stacklevel=3)
        return None
    return st


def train_expert(expert: Expert, data: SceneData, *, seed: int = 0, state_path: Path | None = None,
                 progress: Progress | None = None, backend: str = "auto",
                 max_steps: int | None = None, targets: DistillTargets | None = None) -> TrainResult:
    """Train `expert` on the scene's training views with its config's `train` settings.

    state_path: where resumable state is written every `checkpoint_every` steps; if it exists
    the run continues from it. max_steps: stop early after this many steps of this call (the
    state is saved, for tests of resumption). targets: a mixture's pseudo-labels; Eq. 11 then
    replaces the photometric loss (densification, schedules, regularisers unchanged).
    Returns a TrainResult.
    """
    with matmul_precision(expert.config.train.matmul_precision):
        return _train(expert, data, seed, state_path, progress, backend, max_steps, targets)


def _train(expert: Expert, data: SceneData, seed: int, state_path: Path | None, progress: Progress | None,
           backend: str, max_steps: int | None, targets: DistillTargets | None = None) -> TrainResult:
    cfg = expert.config.train
    device = data.device
    views = data.splits["train"]
    torch.manual_seed(seed)  # the strategy's split draws from the global generator
    sampler = expert.make_sampler(data, seed)
    strategy = expert.make_strategy()
    per_opt, shared_opt = make_optimizers(expert)
    strategy.check_sanity(expert.params, per_opt)
    strat_state = strategy.initialize_state(scene_scale=data.extent)
    start, elapsed_before, losses = 0, 0.0, []

    st = read_train_state(state_path) if state_path is not None else None
    if st is not None:
        expert.load_checkpoint(st["expert"])
        per_opt, shared_opt = make_optimizers(expert)
        for name, sd in st["per_opt"].items():
            per_opt[name].load_state_dict(sd)
        if shared_opt is not None and st.get("shared_opt"):
            shared_opt.load_state_dict(st["shared_opt"])
        strat_state = {k: (v.to(device) if isinstance(v, Tensor) else v) for k, v in st["strategy"].items()}
        sampler.load_state_dict(st["sampler"])
        torch.set_rng_state(st["rng"])
        start, elapsed_before, losses = st["step"], st["elapsed"], st["losses"]

    def save_state(step: int, elapsed: float) -> None:
        save_torch(state_path, {
            "step": step, "elapsed": elapsed, "losses": losses,
            "expert": expert.checkpoint(),
            "per_opt": {k: o.state_dict() for k, o in per_opt.items()},
            "shared_opt": shared_opt.state_dict() if shared_opt is not None else None,
            "strategy": {k: (v.cpu() if isinstance(v, Tensor) else v) for k, v in strat_state.items()},
            "sampler": sampler.state_dict(),
            "rng": torch.get_rng_state(),
        })

    reset_peak_memory(device)
    fixed_bg = torch.tensor(cfg.background, dtype=torch.float32, device=device)
    end = cfg.iterations if max_steps is None else min(cfg.iterations, start + max_steps)
    pending: list[Tensor] = []
    t0 = time.perf_counter()
    for step in range(start, end):
        sv = render_step(expert, data, sampler, step, per_opt, shared_opt, fixed_bg, backend)
        for out in sv.outputs:
            strategy.step_pre_backward(expert.params, per_opt, strat_state, step, out.info)
        loss = expert_loss(expert, sv.pred, sv.gt, step, targets, sv.idx)
        if sampler.observes:  # error-driven samplers keep per-view errors on the device (no sync)
            sampler.observe(sv.idx, view_l1(sv.pred, sv.gt))
        loss.backward()
        step_optimizers(per_opt, shared_opt)
        n_before = expert.num_gaussians
        strategy.step_post_backward(expert.params, per_opt, strat_state, step, merged_info(sv.outputs),
                                    packed=False)
        d = cfg.densify
        if d.enabled and d.reset_every > 0 and 0 < step < d.stop and step % d.reset_every == 0:
            reset_opa(expert.params, per_opt, strat_state, value=d.prune_opacity * 2.0)
        expert.after_step(step, StepContext(data, per_opt, shared_opt, strategy, strat_state, sv.outputs,
                                            sv.pred, sv.gt, views.cams[sv.idx], views.frames[sv.idx]))
        if expert.num_gaussians != n_before:
            expert.on_densify()
        pending.append(loss.detach())
        if len(pending) >= LOG_EVERY or step + 1 == end:
            losses.extend(torch.stack(pending).tolist())  # one device sync per LOG_EVERY steps
            pending.clear()
            if progress is not None:
                progress(step + 1, cfg.iterations, {"loss": losses[-1], "gaussians": expert.num_gaussians})
        if state_path is not None and cfg.checkpoint_every and (step + 1) % cfg.checkpoint_every == 0 \
                and step + 1 < cfg.iterations:
            losses.extend(torch.stack(pending).tolist() if pending else [])
            pending.clear()
            save_state(step + 1, elapsed_before + time.perf_counter() - t0)
    peak = peak_memory_mb(device)  # synchronises: the steps' kernels are done
    seconds = time.perf_counter() - t0
    done = end - start
    if state_path is not None and end < cfg.iterations:
        save_state(end, elapsed_before + seconds)
    return TrainResult(
        steps=end,
        seconds=elapsed_before + seconds,
        iters_per_second=done / seconds if seconds > 0 else 0.0,
        num_gaussians=expert.num_gaussians,
        final_loss=losses[-1] if losses else float("nan"),
        peak_memory_mb=peak,
        resumed_from=start,
        losses=losses,
    )
