"""The one evaluation path: render every view of a split with any renderer (an expert, a
mixture, a baseline), measure it against ground truth, keep per-image rows, their means and
per-regime PSNR, and save the images.

A renderer is a function `view index -> image [H,W,3]` or `-> ViewOutput` (the image plus
named images to save beside it, e.g. gate maps). Several methods can be evaluated in one pass
(`evaluate_methods`): each view is rendered by every method before the next view, so methods
that share work per view (the baselines of a mixture share the experts' renders) do it once.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from ..data.load import SceneData
from ..io import save_png
from .metrics import LPIPSMetric, evaluate_images, mean_metrics

RENDERS = "renders"  # folder of a run's rendered test images


@dataclass
class ViewOutput:
    """One method's rendering of one view: image [H,W,3] in [0,1]; extras: images to save
    beside it, name -> [H,W,3] float in [0,1] or a label map [H,W] uint8 (written as is), to
    <save_dir>/<name>/<camera>_<frame>.png."""

    image: Tensor
    extras: dict[str, Tensor] = field(default_factory=dict)


# view index of the split -> image [H,W,3] or ViewOutput
ViewRenderer = Callable[[int], Tensor | ViewOutput]


@dataclass
class Evaluation:
    """rows: one per view (camera, frame, metrics); summary: their means and, on scenes with
    motion labels, per-regime PSNR (psnr_<regime>); seconds: wall time of the evaluation pass
    (shared by every method evaluated in the same pass)."""

    rows: list[dict]
    summary: dict[str, float]
    seconds: float = 0.0


def to_uint8(image: Tensor) -> np.ndarray:
    """[H,W,3] float in [0,1] -> uint8 array (clamped, rounded)."""
    return (image.detach().clamp(0, 1).cpu().numpy() * 255.0 + 0.5).astype(np.uint8)


def evaluate_views(render_view: ViewRenderer, data: SceneData, split: str = "test",
                   lpips: LPIPSMetric | None = None, save_dir: Path | None = None,
                   chunk: int = 4) -> Evaluation:
    """Evaluate one renderer on every view of `split` (see `evaluate_methods`)."""
    dirs = {"": save_dir} if save_dir is not None else None
    return evaluate_methods({"": render_view}, data, split, lpips, dirs, chunk)[""]


def evaluate_methods(renderers: Mapping[str, ViewRenderer], data: SceneData, split: str = "test",
                     lpips: LPIPSMetric | None = None, save_dirs: Mapping[str, Path] | None = None,
                     chunk: int = 4) -> dict[str, Evaluation]:
    """Evaluate several renderers on every view of `split`, one view at a time for all.

    renderers: method -> renderer; save_dirs: method -> folder (renders/ and the extras'
    folders are written there; methods without one save nothing); chunk: views measured
    together. Returns method -> Evaluation.
    """
    views = data.splits[split]
    names = [c.name for c in data.scene.cameras]
    save_dirs = save_dirs or {}
    rows: dict[str, list[dict]] = {m: [] for m in renderers}
    labels = views.labels
    regimes = {m: RegimeErrors(data.scene.gt.get("regimes", [])) for m in renderers} if labels is not None else None
    t0 = time.perf_counter()
    for start in range(0, len(views), chunk):
        idx = list(range(start, min(start + chunk, len(views))))
        outputs: dict[str, list[ViewOutput]] = {m: [] for m in renderers}
        with torch.no_grad():
            for i in idx:
                for method, render_view in renderers.items():
                    out = render_view(i)
                    outputs[method].append(out if isinstance(out, ViewOutput) else ViewOutput(out))
        gts = data.image_float(split, torch.tensor(idx))
        for method, outs in outputs.items():
            preds = torch.stack([o.image.clamp(0, 1) for o in outs])
            metrics = evaluate_images(preds, gts, lpips)
            if regimes is not None:
                regimes[method].add(preds, gts, labels[torch.tensor(idx, device=labels.device)])
            for j, i in enumerate(idx):
                cam, frame = names[int(views.cams[i])], int(views.frames[i])
                rows[method].append({"camera": cam, "frame": frame, **metrics[j]})
                if method in save_dirs:
                    _save_view(Path(save_dirs[method]), f"{cam}_{frame:05d}.png", outs[j])
    seconds = time.perf_counter() - t0
    out = {}
    for method, method_rows in rows.items():
        summary = mean_metrics([{k: v for k, v in r.items() if k not in ("camera", "frame")} for r in method_rows])
        if regimes is not None:
            summary.update(regimes[method].psnr())
        out[method] = Evaluation(method_rows, summary, seconds)
    return out


def _save_view(folder: Path, stem: str, out: ViewOutput) -> None:
    save_png(folder / RENDERS / stem, to_uint8(out.image))
    for name, image in out.extras.items():
        labels = image.dtype == torch.uint8  # a label map is saved as its values
        save_png(folder / name / stem, image.cpu().numpy() if labels else to_uint8(image))


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


__all__ = ["ViewOutput", "ViewRenderer", "Evaluation", "evaluate_views", "evaluate_methods", "RegimeErrors",
           "to_uint8", "RENDERS"]
