"""Evaluate any renderer on a split the same way: render each view, measure, keep the rows."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from ..data.load import SceneData
from ..io import save_png
from .metrics import LPIPSMetric, evaluate_images, mean_metrics

# view index -> rendered image [H,W,3] float in [0,1]
ViewRenderer = Callable[[int], Tensor]


@dataclass
class Evaluation:
    """Per-image rows (camera, frame, metrics) and their means."""

    rows: list[dict]
    summary: dict[str, float]
    notes: dict[str, str] = field(default_factory=dict)


def evaluate_views(render_view: ViewRenderer, data: SceneData, split: str = "test",
                   lpips: LPIPSMetric | None = None, save_dir: Path | None = None,
                   chunk: int = 4) -> Evaluation:
    """Render every view of `split`, compute metrics against ground truth, average.

    save_dir: if given, rendered images are written there as <camera>_<frame>.png.
    """
    views = data.splits[split]
    names = [c.name for c in data.scene.cameras]
    rows: list[dict] = []
    regimes = RegimeErrors(data.scene.gt.get("regimes", [])) if views.labels is not None else None
    for start in range(0, len(views), chunk):
        idx = list(range(start, min(start + chunk, len(views))))
        with torch.no_grad():
            preds = torch.stack([render_view(i).clamp(0, 1) for i in idx])
        gts = data.image_float(split, torch.tensor(idx))
        metrics = evaluate_images(preds, gts, lpips)
        if regimes is not None:
            regimes.add(preds, gts, views.labels[torch.tensor(idx, device=views.labels.device)])
        for j, i in enumerate(idx):
            cam, frame = names[int(views.cams[i])], int(views.frames[i])
            rows.append({"camera": cam, "frame": frame, **metrics[j]})
            if save_dir is not None:
                img = (preds[j].detach().cpu().numpy() * 255.0 + 0.5).astype(np.uint8)
                save_png(Path(save_dir) / f"{cam}_{frame:05d}.png", img)
    summary = mean_metrics([{k: v for k, v in r.items() if k not in ("camera", "frame")} for r in rows])
    if regimes is not None:
        summary.update(regimes.psnr())
    return Evaluation(rows, summary)


class RegimeErrors:
    """Per-motion-regime PSNR from ground-truth label maps: squared error pooled over every
    pixel of a regime in all images, then 10·log10(1/MSE) (metrics named psnr_<regime>)."""

    def __init__(self, names: list[str]):
        self.names = list(names)
        self.sq = torch.zeros(len(names), dtype=torch.float64)
        self.count = torch.zeros(len(names), dtype=torch.float64)

    def add(self, preds: Tensor, gts: Tensor, labels: Tensor) -> None:
        """preds, gts [B,H,W,3] in [0,1]; labels [B,H,W] regime ids."""
        err = (preds.clamp(0, 1) - gts).square().sum(-1).double().flatten()
        lab = labels.flatten().to(err.device)
        n = len(self.names)
        self.sq += torch.bincount(lab, weights=err, minlength=n)[:n].cpu()
        self.count += 3 * torch.bincount(lab, minlength=n)[:n].double().cpu()

    def psnr(self) -> dict[str, float]:
        out = {}
        for i, name in enumerate(self.names):
            if self.count[i] > 0:
                mse = max(float(self.sq[i] / self.count[i]), 1e-12)
                out[f"psnr_{name}"] = -10.0 * math.log10(mse)
        return out


def expert_view_renderer(expert, data: SceneData, split: str = "test",
                         background: tuple[float, float, float] = (0.0, 0.0, 0.0),
                         backend: str = "auto") -> ViewRenderer:
    """A ViewRenderer for one expert (its Gaussians at the view's time, one rasterisation)."""
    from ..train.loop import render_expert_views

    views = data.splits[split]
    bg = torch.tensor(background, dtype=torch.float32, device=data.device)

    def render_view(i: int) -> Tensor:
        rgb, _ = render_expert_views(expert, data, views.cams[i:i + 1], views.frames[i:i + 1], bg,
                                     backend=backend)
        return rgb[0]

    return render_view
