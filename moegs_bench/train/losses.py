"""Photometric losses."""

from __future__ import annotations

from torch import Tensor

from ..eval.metrics import ssim


def l1(pred: Tensor, gt: Tensor) -> Tensor:
    return (pred - gt).abs().mean()


def photometric(pred: Tensor, gt: Tensor, ssim_lambda: float = 0.2) -> Tensor:
    """(1 - λ)·L1 + λ·(1 - SSIM), the 3DGS loss (λ = 0.2). pred, gt [B,H,W,3] in [0,1]."""
    loss = (1.0 - ssim_lambda) * l1(pred, gt)
    if ssim_lambda > 0:
        loss = loss + ssim_lambda * (1.0 - ssim(pred, gt, convention="3dgs").mean())
    return loss
