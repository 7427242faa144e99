"""Stage 2: train a router on frozen experts (one camera per step, RAdam, per-group learning
rates, (1-λ)·L1 + λ·D-SSIM), render its views for evaluation, save and load it."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import Tensor

from ..config import from_dict, to_dict
from ..data.sampling import ViewSampler
from ..eval.evaluate import ViewOutput
from ..io import load_torch, save_torch
from ..progress import Progress
from ..train.losses import photometric
from .blend import gate_image
from .pool import ExpertPool
from .routers import Router, RouterConfig, get_router

LOG_EVERY = 25  # steps between loss read-backs


@dataclass
class RouterTrainResult:
    """steps done, wall seconds, losses (one per step)."""

    steps: int
    seconds: float
    losses: list[float] = field(default_factory=list)

    @property
    def final_loss(self) -> float:
        return self.losses[-1] if self.losses else float("nan")


def make_optimizer(router: Router) -> torch.optim.Optimizer:
    """RAdam with one named group per router parameter kind (rates set every step)."""
    groups = [{"params": g["params"], "lr": 0.0, "name": g["name"]} for g in router.param_groups()]
    return torch.optim.RAdam(groups)


def train_router(router: Router, pool: ExpertPool, cfg: RouterConfig, *, seed: int = 0,
                 progress: Progress | None = None, split: str = "train",
                 start_step: int = 0) -> RouterTrainResult:
    """Train `router` for cfg.iterations steps on the pool's scene (views of `split`).

    Only the router's parameters are optimised: the experts are frozen by the pool.
    start_step: learning rates are those of steps start_step.. (fine-tuning a trained router
    continues its schedules instead of restarting them).
    """
    data = pool.data
    views = data.splits[split]
    torch.manual_seed(seed)
    sampler = ViewSampler(views, 1, False, seed)
    opt = make_optimizer(router)
    router.train()
    losses: list[float] = []
    pending: list[torch.Tensor] = []
    t0 = time.perf_counter()
    step = 0
    for step in range(cfg.iterations):
        for group, lr in zip(opt.param_groups, _rates(router, start_step + step, opt), strict=True):
            group["lr"] = lr
        idx = sampler.next(len(data.times))
        out = router(pool, int(views.cams[idx[0]]), int(views.frames[idx[0]]), cfg.temperature)
        loss = photometric(out.image, data.image_float(split, idx), cfg.ssim_lambda)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        pending.append(loss.detach())
        if len(pending) >= LOG_EVERY or step + 1 == cfg.iterations:
            losses.extend(torch.stack(pending).tolist())  # one device sync per LOG_EVERY steps
            pending.clear()
            if progress is not None:
                progress(step + 1, cfg.iterations, {"loss": losses[-1]})
            if cfg.seconds_limit > 0 and time.perf_counter() - t0 > cfg.seconds_limit:
                break
    if data.device.type == "cuda":
        torch.cuda.synchronize(data.device)
    router.eval()
    steps = step + 1 if cfg.iterations > 0 else 0
    return RouterTrainResult(steps, time.perf_counter() - t0, losses)


def _rates(router: Router, step: int, opt: torch.optim.Optimizer) -> list[float]:
    lrs = router.learning_rates(step)
    return [lrs[g["name"]] for g in opt.param_groups]


def router_renderer(router: Router, pool: ExpertPool, split: str = "test",
                    temperature: float | None = None) -> Callable[[int], ViewOutput]:
    """A renderer for evaluation: view index of `split` -> the mixture's image and its gate
    map (palette-coloured, saved as gates/). temperature: default the config's eval_temp."""
    views = pool.data.splits[split]
    temp = router.cfg.eval_temp if temperature is None else temperature

    def render_view(i: int) -> ViewOutput:
        with torch.no_grad():
            out = router(pool, int(views.cams[i]), int(views.frames[i]), temp)
        return ViewOutput(out.image[0], {"gates": gate_image(out.gates[:, 0])})

    return render_view


def router_depth_renderer(router: Router, pool: ExpertPool, temperature: float | None = None):
    """The mixture's depth for analyses: (cameras [C], frame) -> (depth [C,H,W], alpha [C,H,W]);
    a 2D blend's depth is Σ_k G_k·D_k, its alpha taken as 1 (the gates do not blend coverage)."""
    temp = router.cfg.eval_temp if temperature is None else temperature

    def render_depth(cams: Tensor, frame: int) -> tuple[Tensor, Tensor]:
        with torch.no_grad():
            depth = torch.cat([router(pool, c, frame, temp).depth for c in cams.tolist()])
        return depth, torch.ones_like(depth)

    return render_depth


def save_router(router: Router, path: Path) -> Path:
    return save_torch(path, {"name": router.name, "config": to_dict(router.cfg), "sizes": router.sizes,
                             "state": {k: v.detach().cpu() for k, v in router.state_dict().items()}})


def load_router(path: Path, device: torch.device) -> Router:
    """A router saved by `save_router`, on `device`."""
    ckpt = load_torch(path)  # UnreadableFileError naming the file when it cannot be read back
    cls = get_router(ckpt["name"])
    router = cls(ckpt["sizes"], from_dict(cls.Config, ckpt["config"]), device=device)
    router.load_state_dict(ckpt["state"])
    return router.eval()


__all__ = ["RouterTrainResult", "train_router", "make_optimizer", "router_renderer", "router_depth_renderer",
           "save_router", "load_router"]
