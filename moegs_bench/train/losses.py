"""Photometric losses: the 3DGS loss every expert trains with, and the distillation loss of
MoE-GS Eq. 11 that replaces it when an expert is retrained from a mixture's pseudo-labels."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

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


def distillation_loss(pred: Tensor, gt: Tensor, moe: Tensor, gate: Tensor | None, lam: float = 0.5,
                      ssim_lambda: float = 0.2, weight: float = 1.0) -> Tensor:
    """MoE-GS Eq. 11 for one expert k:

        λ·L(G'_k·I_k, G'_k·I_GT) + (1-λ)·L((1-G'_k)·I_k, (1-G'_k)·I_MoE),

    L = weight·photometric(·, ·, ssim_lambda), the expert's own L1 + SSIM combination.
    pred (I_k), gt (I_GT), moe (I_MoE): [B,H,W,3] in [0,1]; gate (G'_k): [B,H,W] or [B,H,W,1]
    in [0,1], or None for the "w/o weight" ablation (paper Table 13): the masks are dropped, so
    λ·L(I_k, I_GT) + (1-λ)·L(I_k, I_MoE). Ground truth, I_MoE and G' are detached (targets).
    Returns a scalar; at G' ≡ 1 it is λ·L(I_k, I_GT), at G' ≡ 0 (1-λ)·L(I_k, I_MoE).
    """
    if not 0.0 <= lam <= 1.0:
        raise ValueError(f"distillation λ must lie in [0, 1], got {lam}")
    gt, moe = gt.detach(), moe.detach()
    if gate is None:
        loss = lam * photometric(pred, gt, ssim_lambda) + (1.0 - lam) * photometric(pred, moe, ssim_lambda)
    else:
        g = gate.detach()
        g = g.unsqueeze(-1) if g.dim() == pred.dim() - 1 else g
        if g.shape[:-1] != pred.shape[:-1] or g.shape[-1] != 1:
            raise ValueError(f"distillation gate {tuple(gate.shape)} does not match images {tuple(pred.shape)}")
        rest = 1.0 - g
        loss = (lam * photometric(g * pred, g * gt, ssim_lambda)
                + (1.0 - lam) * photometric(rest * pred, rest * moe, ssim_lambda))
    return loss if weight == 1.0 else weight * loss


# view indices [B] (CPU, long, into the training split) -> (G'_k [B,H,W] or None, I_MoE [B,H,W,3])
TargetProvider = Callable[[Tensor], tuple[Tensor | None, Tensor]]


@dataclass
class DistillTargets:
    """What replaces an expert's photometric loss by Eq. 11 in the training loop: the
    pseudo-labels of each training view (`provider`, on the scene's device) and λ."""

    provider: TargetProvider
    lam: float = 0.5
