"""Stage 2: train a router on frozen experts (one camera per step, RAdam, per-group learning
rates, (1-λ)·L1 + λ·D-SSIM), evaluate it on a split, save it."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from ..config import from_dict, to_dict
from ..eval.metrics import LPIPSMetric, evaluate_images, mean_metrics
from ..io import save_png, save_torch
from ..train.loop import ProgressFn, ViewSampler
from ..train.losses import photometric
from .blend import gate_image
from .pool import ExpertPool
from .routers import Router, RouterConfig, RouterOutput, get_router

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
                 progress: ProgressFn | None = None, split: str = "train") -> RouterTrainResult:
    """Train `router` for cfg.iterations steps on the pool's scene (views of `split`).

    Only the router's parameters are optimised: the experts are frozen by the pool.
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
        for group, lr in zip(opt.param_groups, _rates(router, step, opt), strict=True):
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


def router_view(router: Router, pool: ExpertPool, split: str, temperature: float) -> Callable[[int], RouterOutput]:
    """view index of `split` -> RouterOutput (no gradients)."""
    views = pool.data.splits[split]

    def render_view(i: int) -> RouterOutput:
        with torch.no_grad():
            return router(pool, int(views.cams[i]), int(views.frames[i]), temperature)

    return render_view


@dataclass
class MoEEvaluation:
    """Per-image rows (camera, frame, metrics) and their means."""

    rows: list[dict]
    summary: dict[str, float]


def evaluate_router(router: Router, pool: ExpertPool, temperature: float, lpips: LPIPSMetric | None = None,
                    split: str = "test", save_dir: Path | None = None) -> MoEEvaluation:
    """Metrics of the mixture on every view of `split`; with save_dir, writes
    renders/<cam>_<frame>.png and gates/<cam>_<frame>.png (palette-coloured gate map)."""
    data = pool.data
    views = data.splits[split]
    names = [c.name for c in data.scene.cameras]
    render_view = router_view(router, pool, split, temperature)
    rows = []
    for i in range(len(views)):
        out = render_view(i)
        pred = out.image[0].clamp(0, 1)
        metrics = evaluate_images(pred[None], data.image_float(split, torch.tensor([i])), lpips)[0]
        cam, frame = names[int(views.cams[i])], int(views.frames[i])
        rows.append({"camera": cam, "frame": frame, **metrics})
        if save_dir is not None:
            stem = f"{cam}_{frame:05d}.png"
            save_png(Path(save_dir) / "renders" / stem, to_uint8(pred))
            save_png(Path(save_dir) / "gates" / stem, to_uint8(gate_image(out.gates[:, 0])))
    summary = mean_metrics([{k: v for k, v in r.items() if k not in ("camera", "frame")} for r in rows])
    return MoEEvaluation(rows, summary)


def to_uint8(image: torch.Tensor) -> np.ndarray:
    """[H,W,3] float in [0,1] -> uint8 array."""
    return (image.detach().clamp(0, 1).cpu().numpy() * 255.0 + 0.5).astype(np.uint8)


def save_router(router: Router, path: Path) -> Path:
    return save_torch(path, {"name": router.name, "config": to_dict(router.cfg), "sizes": router.sizes,
                             "state": {k: v.detach().cpu() for k, v in router.state_dict().items()}})


def load_router(path: Path, device: torch.device) -> Router:
    """A router saved by `save_router`, on `device`."""
    ckpt = torch.load(path, map_location="cpu", weights_only=False)
    cls = get_router(ckpt["name"])
    router = cls(ckpt["sizes"], from_dict(RouterConfig, ckpt["config"]), device=device)
    router.load_state_dict(ckpt["state"])
    return router.eval()


__all__ = ["RouterTrainResult", "train_router", "make_optimizer", "router_view", "MoEEvaluation",
           "evaluate_router", "save_router", "load_router", "to_uint8"]
