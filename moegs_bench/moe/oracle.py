"""Baselines of every mixture, measured on the same expert renders in one pass over a split:
each expert alone, the uniform average, the per-pixel oracle (per pixel, the expert closest to
ground truth: an upper bound of per-pixel routing) and the per-image oracle."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from ..eval.metrics import LPIPSMetric, evaluate_images, mean_metrics
from ..io import save_png
from .blend import gate_image, oracle_image, oracle_pixel, uniform_average
from .pool import ExpertPool
from .train_router import MoEEvaluation, to_uint8

BASELINES = ("uniform-average", "oracle-pixel", "oracle-image")


@dataclass
class BaselineEvaluation:
    """experts: label -> evaluation of that expert's own renders; baselines: method -> evaluation."""

    experts: dict[str, MoEEvaluation]
    baselines: dict[str, MoEEvaluation]

    @property
    def best_expert(self) -> tuple[str, float]:
        """(label, mean PSNR) of the expert with the highest mean PSNR."""
        name = max(self.experts, key=lambda n: self.experts[n].summary["psnr"])
        return name, self.experts[name].summary["psnr"]


def baseline_images(images: torch.Tensor, gt: torch.Tensor) -> dict[str, tuple[torch.Tensor, torch.Tensor | None]]:
    """images [K,C,H,W,3], gt [C,H,W,3] -> method -> (image [C,H,W,3], gates [K,C,H,W] or None)."""
    k = images.shape[0]
    uniform = torch.full(images.shape[:-1], 1.0 / k, dtype=images.dtype, device=images.device)
    pix, pix_gates = oracle_pixel(images, gt)
    img, _ = oracle_image(images, gt)
    return {"uniform-average": (uniform_average(images), uniform), "oracle-pixel": (pix, pix_gates),
            "oracle-image": (img, None)}


def evaluate_baselines(pool: ExpertPool, lpips: LPIPSMetric | None = None, split: str = "test",
                       experts_dir: Path | None = None, oracle_gates_dir: Path | None = None) -> BaselineEvaluation:
    """Render every view of `split` once per expert and measure experts and baselines.

    experts_dir: writes <label>/<cam>_<frame>.png per expert; oracle_gates_dir: writes
    <cam>_<frame>.png, the expert the per-pixel oracle picked (palette-coloured).
    """
    data = pool.data
    views = data.splits[split]
    names = [c.name for c in data.scene.cameras]
    labels = list(pool.names)
    rows: dict[str, list[dict]] = {n: [] for n in labels + list(BASELINES)}
    for i in range(len(views)):
        cam_i, frame = int(views.cams[i]), int(views.frames[i])
        gt = data.image_float(split, torch.tensor([i]))
        with torch.no_grad():
            images = pool.render_view(cam_i, frame).images.clamp(0, 1)  # [K,1,H,W,3]
            preds = {label: images[k] for k, label in enumerate(labels)}
            mixes = baseline_images(images, gt)
        preds.update({m: img for m, (img, _) in mixes.items()})
        measured = evaluate_images(torch.cat(list(preds.values())), gt.expand(len(preds), -1, -1, -1), lpips)
        cam = names[cam_i]
        for method, metrics in zip(preds, measured, strict=True):
            rows[method].append({"camera": cam, "frame": frame, **metrics})
        stem = f"{cam}_{frame:05d}.png"
        if experts_dir is not None:
            for k, label in enumerate(labels):
                save_png(Path(experts_dir) / label / stem, to_uint8(images[k, 0]))
        if oracle_gates_dir is not None:
            save_png(Path(oracle_gates_dir) / stem, to_uint8(gate_image(mixes["oracle-pixel"][1][:, 0])))
    evals = {m: MoEEvaluation(r, mean_metrics([{k: v for k, v in x.items() if k not in ("camera", "frame")}
                                               for x in r])) for m, r in rows.items()}
    return BaselineEvaluation({n: evals[n] for n in labels}, {m: evals[m] for m in BASELINES})


def oracle_gain_share(moe_psnr: float, best_expert_psnr: float, oracle_psnr: float) -> float | None:
    """(MoE − best expert) / (oracle − best expert) in PSNR; None when the oracle gains nothing."""
    gap = oracle_psnr - best_expert_psnr
    if gap <= 1e-9:
        return None
    return (moe_psnr - best_expert_psnr) / gap


__all__ = ["BASELINES", "BaselineEvaluation", "baseline_images", "evaluate_baselines", "oracle_gain_share"]
