"""Per-pixel pieces every router and baseline shares: camera rays, gated blending, the uniform
average, the per-pixel and per-image oracles, and gate maps as images."""

from __future__ import annotations

import torch
from torch import Tensor

# gate-map colours of experts 0..7 (then repeated): red, green, blue, yellow, magenta, cyan, ...
PALETTE = torch.tensor([
    [0.90, 0.10, 0.10], [0.10, 0.75, 0.10], [0.15, 0.30, 0.95], [0.95, 0.85, 0.10],
    [0.85, 0.20, 0.85], [0.10, 0.85, 0.85], [0.95, 0.55, 0.10], [0.55, 0.55, 0.55],
])


def pixel_rays(viewmats: Tensor, Ks: Tensor, width: int, height: int) -> tuple[Tensor, Tensor]:
    """World-space ray origin and unit direction through every pixel centre (+0.5 convention).

    viewmats [C,4,4] world-to-camera (OpenCV), Ks [C,3,3] -> origins [C,H,W,3], dirs [C,H,W,3].
    """
    dev, dt = viewmats.device, viewmats.dtype
    ys, xs = torch.meshgrid(torch.arange(height, device=dev, dtype=dt) + 0.5,
                            torch.arange(width, device=dev, dtype=dt) + 0.5, indexing="ij")
    fx, fy = Ks[:, 0, 0, None, None], Ks[:, 1, 1, None, None]
    cx, cy = Ks[:, 0, 2, None, None], Ks[:, 1, 2, None, None]
    u, v = (xs - cx) / fx, (ys - cy) / fy  # [C,H,W]
    cam_dirs = torch.stack([u, v, torch.ones_like(u)], -1)
    R, t = viewmats[:, :3, :3], viewmats[:, :3, 3]
    dirs = torch.einsum("cji,chwj->chwi", R, cam_dirs)  # R^T d: camera -> world
    dirs = dirs / dirs.norm(dim=-1, keepdim=True)
    centres = -(R.transpose(1, 2) @ t[..., None])[..., 0]
    return centres[:, None, None, :].expand_as(dirs), dirs


def softmax_gates(logits: Tensor, temperature: float) -> Tensor:
    """Gates over experts (dim 0) from logits [K,...]: softmax(logits / temperature)."""
    if temperature <= 0:
        raise ValueError(f"softmax_gates: temperature must be > 0, got {temperature}")
    return torch.softmax(logits / temperature, dim=0)


def blend(images: Tensor, gates: Tensor) -> Tensor:
    """Σ_k G_k · I_k. images [K,C,H,W,3], gates [K,C,H,W] -> [C,H,W,3]."""
    return (gates[..., None] * images).sum(0)


def blend_depth(outputs, gates: Tensor) -> Tensor:
    """Σ_k G_k · D_k: outputs K RenderOutputs (depth [C,H,W,1]), gates [K,C,H,W] -> [C,H,W]."""
    return (gates * torch.stack([o.depth[..., 0] for o in outputs])).sum(0)


def uniform_average(images: Tensor) -> Tensor:
    """Mean of the experts' images: [K,C,H,W,3] -> [C,H,W,3]."""
    return images.mean(0)


def oracle_pixel(images: Tensor, gt: Tensor) -> tuple[Tensor, Tensor]:
    """Per pixel, the expert whose colour is closest to ground truth (squared error).

    images [K,C,H,W,3], gt [C,H,W,3] -> (image [C,H,W,3], one-hot gates [K,C,H,W]).
    An upper bound of every per-pixel blend with one-hot gates, and >= each expert in PSNR.
    """
    err = (images - gt[None]).square().sum(-1)  # [K,C,H,W]
    best = err.argmin(0)
    gates = torch.nn.functional.one_hot(best, images.shape[0]).permute(3, 0, 1, 2).to(images.dtype)
    return blend(images, gates), gates


def oracle_image(images: Tensor, gt: Tensor) -> tuple[Tensor, Tensor]:
    """Per image, the expert with the lowest mean squared error (highest PSNR).

    images [K,C,H,W,3], gt [C,H,W,3] -> (image [C,H,W,3], chosen expert index [C]).
    """
    mse = (images - gt[None]).square().flatten(2).mean(-1)  # [K,C]
    best = mse.argmin(0)
    return images[best, torch.arange(images.shape[1], device=images.device)], best


def gate_image(gates: Tensor) -> Tensor:
    """Gate map as colour: Σ_k G_k · palette_k. gates [K,H,W] -> [H,W,3] in [0,1]."""
    k = gates.shape[0]
    colours = PALETTE.to(gates.device, gates.dtype)[torch.arange(k) % len(PALETTE)]
    return torch.einsum("khw,kc->hwc", gates, colours).clamp(0, 1)


__all__ = ["pixel_rays", "softmax_gates", "blend", "blend_depth", "uniform_average", "oracle_pixel", "oracle_image",
           "gate_image", "PALETTE"]
