"""The generic training loop every expert uses: view sampling, photometric loss, learning-rate
schedules, gsplat DefaultStrategy densification (opacity resets done explicitly), progress
callbacks and resumable checkpoints."""

from __future__ import annotations

import time
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace

import torch
from gsplat.strategy.ops import reset_opa
from torch import Tensor

from ..data.load import SceneData, Views
from ..errors import ConfigError
from ..experts.base import Expert
from ..io import save_torch
from ..render.backend import RenderSettings, render, render_batch, same_layout
from .losses import photometric

ProgressFn = Callable[[int, int, dict], None]
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


class ViewSampler:
    """Draws training views: random permutations of the views in the active frame window, or
    (same_time) a random frame and `batch` of its cameras."""

    def __init__(self, views: Views, batch: int, same_time: bool, seed: int):
        self.frames = views.frames.cpu()
        self.batch, self.same_time = batch, same_time
        self.generator = torch.Generator().manual_seed(seed)
        self.queue: list[int] = []
        self.active = -1

    def next(self, active_frames: int) -> Tensor:
        if self.same_time:
            frames = torch.unique(self.frames[self.frames < active_frames])
            f = frames[torch.randint(len(frames), (1,), generator=self.generator)]
            pool = torch.nonzero(self.frames == f).squeeze(1)
            return pool[torch.randperm(len(pool), generator=self.generator)[: self.batch]]
        if active_frames != self.active:
            self.active, self.queue = active_frames, []
        out = []
        while len(out) < self.batch:
            if not self.queue:
                eligible = torch.nonzero(self.frames < active_frames).squeeze(1)
                self.queue = eligible[torch.randperm(len(eligible), generator=self.generator)].tolist()
            out.append(self.queue.pop())
        return torch.tensor(out, dtype=torch.long)

    def state_dict(self) -> dict:
        return {"generator": self.generator.get_state(), "queue": list(self.queue), "active": self.active}

    def load_state_dict(self, state: dict) -> None:
        self.generator.set_state(state["generator"])
        self.queue, self.active = list(state["queue"]), int(state["active"])


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


def expert_loss(expert: Expert, pred: Tensor, gt: Tensor, step: int) -> Tensor:
    """The training loss: photometric (1-λ)·L1 + λ·D-SSIM plus the expert's regularisers."""
    loss = photometric(pred, gt, expert.config.train.ssim_lambda)
    reg = expert.regularisation(step)
    return loss if reg is None else loss + reg


def step_optimizers(per_opt: dict, shared_opt) -> None:
    """One step of every optimiser, then clear the gradients."""
    for opt in list(per_opt.values()) + ([shared_opt] if shared_opt is not None else []):
        opt.step()
        opt.zero_grad(set_to_none=True)


def render_expert_views(expert: Expert, data: SceneData, cams: Tensor, frames: Tensor, background: Tensor,
                        settings: RenderSettings | None = None, backend: str = "auto"):
    """Render views (camera, frame) of an expert; cams, frames [B] on the CPU (no device sync).

    One group of views per distinct time (and per camera for camera-dependent experts); groups
    of one size whose Gaussians match in count are rasterised together (`render_batch`).
    Returns rgb [B,H,W,3] in the order of the views, and the render outputs.
    """
    camera_dependent = expert.camera_dependent
    groups: dict[tuple[int, int], list[int]] = {}
    for i, (c, f) in enumerate(zip(cams.tolist(), frames.tolist(), strict=True)):
        groups.setdefault((f, c if camera_dependent else -1), []).append(i)
    keys = list(groups)
    gaussians = expert.gaussians_at_times([data.times[f] for f, _ in keys],
                                          [c if c >= 0 else int(cams[groups[(f, c)][0]]) for f, c in keys])
    cameras = [data.camera_batch(cams[members]) for members in groups.values()]
    if len(gaussians) > 1 and len({len(m) for m in groups.values()}) == 1 and same_layout(gaussians):
        out = render_batch(gaussians, torch.stack([v for v, _ in cameras]), torch.stack([k for _, k in cameras]),
                           data.width, data.height, background=background, backend=backend, settings=settings)
        outputs, images = [out], out.rgb.unbind(0)  # unbind: one backward stack, not B zero-filled copies
    else:
        outputs = [render(g, viewmats, Ks, data.width, data.height, background=background, backend=backend,
                          settings=settings) for g, (viewmats, Ks) in zip(gaussians, cameras, strict=True)]
        images = [o.rgb for o in outputs]
    order_rgb = [None] * len(cams)
    for (f, _), members, rgb, (viewmats, Ks) in zip(keys, groups.values(), images, cameras, strict=True):
        rgb = expert.decode(rgb, viewmats, Ks, data.times[f])
        for i, image in zip(members, rgb.unbind(0), strict=True):
            order_rgb[i] = image
    return torch.stack(order_rgb), outputs


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


def train_expert(expert: Expert, data: SceneData, *, seed: int = 0, state_path: Path | None = None,
                 progress: ProgressFn | None = None, backend: str = "auto",
                 max_steps: int | None = None) -> TrainResult:
    """Train `expert` on the scene's training views with its config's `train` settings.

    state_path: where resumable state is written every `checkpoint_every` steps; if it exists
    the run continues from it. max_steps: stop early after this many steps of this call (the
    state is saved, for tests of resumption). Returns a TrainResult.
    """
    with matmul_precision(expert.config.train.matmul_precision):
        return _train(expert, data, seed, state_path, progress, backend, max_steps)


def _train(expert: Expert, data: SceneData, seed: int, state_path: Path | None, progress: ProgressFn | None,
           backend: str, max_steps: int | None) -> TrainResult:
    cfg = expert.config.train
    device = data.device
    views = data.splits["train"]
    torch.manual_seed(seed)  # the strategy's split draws from the global generator
    sampler = ViewSampler(views, cfg.batch_size, cfg.same_time, seed)
    strategy = expert.make_strategy()
    per_opt, shared_opt = make_optimizers(expert)
    strategy.check_sanity(expert.params, per_opt)
    strat_state = strategy.initialize_state(scene_scale=data.extent)
    start, elapsed_before, losses = 0, 0.0, []

    if state_path is not None and Path(state_path).is_file():
        st = torch.load(state_path, map_location="cpu", weights_only=False)
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

    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    fixed_bg = torch.tensor(cfg.background, dtype=torch.float32, device=device)
    num_frames = len(data.times)
    extent = data.extent
    end = cfg.iterations if max_steps is None else min(cfg.iterations, start + max_steps)
    pending: list[Tensor] = []
    t0 = time.perf_counter()
    for step in range(start, end):
        expert.on_step(step)
        set_learning_rates(expert.learning_rates(step, extent), per_opt, shared_opt)
        idx = sampler.next(expert.active_frames(step, num_frames))
        gt = data.image_float("train", idx)
        bg = torch.rand(3, device=device) if cfg.random_background else fixed_bg
        pred, outputs = render_expert_views(expert, data, views.cams[idx], views.frames[idx], bg, backend=backend)
        for out in outputs:
            strategy.step_pre_backward(expert.params, per_opt, strat_state, step, out.info)
        loss = expert_loss(expert, pred, gt, step)
        loss.backward()
        step_optimizers(per_opt, shared_opt)
        n_before = expert.num_gaussians
        strategy.step_post_backward(expert.params, per_opt, strat_state, step, merged_info(outputs),
                                    packed=False)
        d = cfg.densify
        if d.enabled and d.reset_every > 0 and 0 < step < d.stop and step % d.reset_every == 0:
            reset_opa(expert.params, per_opt, strat_state, value=d.prune_opacity * 2.0)
        expert.after_step(step, StepContext(data, per_opt, shared_opt, strategy, strat_state, outputs, pred,
                                            gt, views.cams[idx], views.frames[idx]))
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
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    seconds = time.perf_counter() - t0
    done = end - start
    if state_path is not None and end < cfg.iterations:
        save_state(end, elapsed_before + seconds)
    peak = torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else None
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
