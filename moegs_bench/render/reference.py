"""Reference rasteriser in plain torch, with gsplat 1.5.3's conventions (REFERENCE.md §5).

Runs anywhere torch runs (CPU tests and demos) and is differentiable through autograd. It
follows gsplat step by step so the two backends agree to float precision:
  projection: EWA with the 1.3x-frustum Jacobian clamp, eps2d added to the 2D covariance,
              near/far culling, opacity-aware per-axis radii (extend <= 3.33);
  binning:    gsplat's opacity-aware rectangles, outside which alpha < 1/255, so the
              result does not depend on the tile size; front to back by camera depth;
  blending:   pixel centres at +0.5, alpha = min(0.999, o*exp(-sigma)), skip alpha < 1/255,
              stop before the Gaussian that would bring transmittance to <= 1e-4.
Work and memory are proportional to the (gaussian, pixel) pairs inside those rectangles.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

ALPHA_THRESHOLD = 1.0 / 255.0
TRANSMITTANCE_MIN = 1e-4


def quat_to_rotmat(quats: Tensor) -> Tensor:
    """quats [N,4] (w,x,y,z; normalised here) -> rotation matrices [N,3,3]."""
    w, x, y, z = F.normalize(quats, dim=-1).unbind(-1)
    return torch.stack([
        1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y),
        2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x),
        2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y),
    ], dim=-1).reshape(quats.shape[:-1] + (3, 3))


def _mat_mul(a: Tensor, b: Tensor) -> Tensor:
    """Batched small-matrix product by broadcasting: [...,i,k] x [...,k,j] -> [...,i,j].

    For 2x3 and 3x3 blocks this is much faster on the CPU than bmm's per-matrix kernels.
    """
    return (a[..., :, :, None] * b[..., None, :, :]).sum(-2)


def covariance(quats: Tensor, scales: Tensor) -> Tensor:
    """World covariance R S S^T R^T. quats [N,4], scales [N,3] -> [N,3,3]."""
    M = quat_to_rotmat(quats) * scales[:, None, :]
    return _mat_mul(M, M.transpose(-1, -2))


def project(means: Tensor, quats: Tensor, scales: Tensor, opacities: Tensor,
            viewmat: Tensor, K: Tensor, width: int, height: int,
            near_plane: float = 0.01, far_plane: float = 1e10, eps2d: float = 0.3):
    """Project N Gaussians into one camera.

    Returns means2d [N,2], conics [N,3] (inverse 2D covariance a, b, c), depths [N] (camera z),
    radii [N,2] int32 (0 = culled).
    """
    R, t = viewmat[:3, :3], viewmat[:3, 3]
    mc = (means[:, None, :] * R).sum(-1) + t  # [N,3]
    cov_c = _mat_mul(_mat_mul(R, covariance(quats, scales)), R.T)  # [N,3,3]
    x, y, z = mc.unbind(-1)
    fx, fy, cx, cy = K[0, 0], K[1, 1], K[0, 2], K[1, 2]
    tan_fovx, tan_fovy = 0.5 * width / fx, 0.5 * height / fy
    # gsplat clamps the Jacobian's x/z to 1.3x the frustum to tame off-screen Gaussians
    lim_x_pos, lim_x_neg = (width - cx) / fx + 0.3 * tan_fovx, cx / fx + 0.3 * tan_fovx
    lim_y_pos, lim_y_neg = (height - cy) / fy + 0.3 * tan_fovy, cy / fy + 0.3 * tan_fovy
    z_safe = torch.where(z.abs() > 1e-8, z, torch.full_like(z, 1e-8))
    rz = 1.0 / z_safe
    tx = z_safe * torch.minimum(lim_x_pos, torch.maximum(-lim_x_neg, x * rz))
    ty = z_safe * torch.minimum(lim_y_pos, torch.maximum(-lim_y_neg, y * rz))
    zero = torch.zeros_like(z)
    J = torch.stack([
        torch.stack([fx * rz, zero, -fx * tx * rz * rz], -1),
        torch.stack([zero, fy * rz, -fy * ty * rz * rz], -1),
    ], dim=-2)  # [N,2,3]
    cov2d = _mat_mul(_mat_mul(J, cov_c), J.transpose(-1, -2))
    a = cov2d[:, 0, 0] + eps2d
    b = cov2d[:, 0, 1]
    c = cov2d[:, 1, 1] + eps2d
    det = a * c - b * b
    det_safe = torch.where(det > 0, det, torch.ones_like(det))
    conics = torch.stack([c / det_safe, -b / det_safe, a / det_safe], dim=-1)
    means2d = torch.stack([fx * x * rz + cx, fy * y * rz + cy], dim=-1)

    with torch.no_grad():  # culling and bounding boxes are not differentiable (as in gsplat)
        op = opacities.detach()
        extend = torch.clamp(torch.sqrt(2.0 * torch.log(op.clamp_min(ALPHA_THRESHOLD) / ALPHA_THRESHOLD)), max=3.33)
        rx = torch.ceil(extend * torch.sqrt(a.detach().clamp_min(0)))
        ry = torch.ceil(extend * torch.sqrt(c.detach().clamp_min(0)))
        m2 = means2d.detach()
        valid = (z >= near_plane) & (z <= far_plane) & (det > 0) & (op >= ALPHA_THRESHOLD)
        valid &= ~((rx <= 0) & (ry <= 0))
        valid &= (m2[:, 0] + rx > 0) & (m2[:, 0] - rx < width) & (m2[:, 1] + ry > 0) & (m2[:, 1] - ry < height)
        radii = torch.stack([rx, ry], -1).to(torch.int32) * valid[:, None]
    return means2d, conics, z, radii


def _pixel_pairs(means2d: Tensor, conics: Tensor, opacities: Tensor, radii: Tensor, width: int,
                 height: int):
    """Every (gaussian, pixel) pair that gsplat would blend: the pixel centre lies in the
    Gaussian's screen rectangle and alpha >= 1/255 there.

    Returns gaussian ids [P] and pixel x, y [P] (long). Outside gsplat's opacity-aware
    rectangle alpha < 1/255 anyway, so the result does not depend on gsplat's tile size.
    """
    with torch.no_grad():
        m = means2d.detach()
        gid = torch.nonzero((radii > 0).all(-1)).squeeze(1)
        r = radii[gid].to(m.dtype)
        c = m[gid]
        # pixel centres j + 0.5 within [mean - r, mean + r]
        x0 = torch.ceil(c[:, 0] - r[:, 0] - 0.5).clamp(0, width).long()
        x1 = (torch.floor(c[:, 0] + r[:, 0] - 0.5) + 1).clamp(0, width).long()
        y0 = torch.ceil(c[:, 1] - r[:, 1] - 0.5).clamp(0, height).long()
        y1 = (torch.floor(c[:, 1] + r[:, 1] - 0.5) + 1).clamp(0, height).long()
        w = (x1 - x0).clamp_min(0)
        counts = w * (y1 - y0).clamp_min(0)
        owner = torch.repeat_interleave(torch.arange(len(gid), device=m.device), counts)
        start = torch.cumsum(counts, 0) - counts
        local = torch.arange(int(counts.sum()), device=m.device) - start[owner]
        px = x0[owner] + local % w[owner]
        py = y0[owner] + local // w[owner]
        g = gid[owner]
        # drop pairs the alpha threshold would skip, before the (costly) sort
        alpha, sigma = _alpha(m[g], conics.detach()[g], opacities.detach()[g], px, py)
        keep = (sigma >= 0) & (alpha >= ALPHA_THRESHOLD)
        return g[keep], px[keep], py[keep]


def _alpha(means2d: Tensor, conics: Tensor, opacities: Tensor, px: Tensor, py: Tensor):
    """Per-pair alpha = min(0.999, o exp(-sigma)) and sigma, at pixel centres (+0.5)."""
    dx = means2d[:, 0] - (px.to(means2d.dtype) + 0.5)
    dy = means2d[:, 1] - (py.to(means2d.dtype) + 0.5)
    sigma = 0.5 * (conics[:, 0] * dx * dx + conics[:, 2] * dy * dy) + conics[:, 1] * dx * dy
    return torch.clamp(opacities * torch.exp(-sigma), max=0.999), sigma


def rasterize(means2d: Tensor, conics: Tensor, depths: Tensor, radii: Tensor, opacities: Tensor,
              values: Tensor, width: int, height: int, background: Tensor | None = None,
              groups: Tensor | None = None, n_groups: int = 1):
    """Blend per-Gaussian values into one image, front to back.

    means2d [N,2], conics [N,3], depths [N], radii [N,2] (0 = culled), opacities [N],
    values [N,D], background [D] or None. Returns image [H,W,D] and alpha [H,W,1].
    Works on the sparse list of (gaussian, pixel) pairs sorted by pixel then depth, with
    per-pixel transmittance from a segmented cumulative sum of log(1 - alpha).

    groups [N] (long, < n_groups): blend each group with its own transmittance in the same
    pass (MoE-GS Eq. 9: one projection and one sort, a colour and transmittance per expert);
    background is then [G,D] or [D], and the result image [G,H,W,D], alpha [G,H,W,1]. Each
    group's output equals blending that group alone.
    """
    N, D = values.shape
    g, px, py = _pixel_pairs(means2d, conics, opacities, radii, width, height)
    pixel = py * width + px
    if groups is not None:  # a segment per (group, pixel): groups never share transmittance
        pixel = groups.index_select(0, g) * (height * width) + pixel
    n_pix = n_groups * height * width if groups is not None else height * width
    rank = torch.empty(N, dtype=torch.long, device=values.device)
    rank[torch.argsort(depths.detach(), stable=True)] = torch.arange(N, device=values.device)
    order = torch.argsort(pixel * N + rank[g])
    g, px, py, pixel = g[order], px[order], py[order], pixel[order]

    # index_select, not x[g]: its backward (index_add) sums the pairs' gradients in index
    # order; indexing's (index_put_ with accumulate) in an order that depends on the threads
    alpha, _ = _alpha(means2d.index_select(0, g), conics.index_select(0, g), opacities.index_select(0, g),
                      px, py)  # all >= 1/255 (filtered)

    # segmented cumulative log-transmittance (float64 so long pixel lists stay exact)
    log_t = torch.log1p(-alpha.double())
    csum = torch.cumsum(log_t, 0)
    first = torch.ones_like(pixel, dtype=torch.bool)
    first[1:] = pixel[1:] != pixel[:-1]
    seg_start = torch.cummax(torch.where(first, torch.arange(len(pixel), device=pixel.device), 0), 0).values
    base = torch.where(seg_start > 0, csum.index_select(0, (seg_start - 1).clamp_min(0)),
                       torch.zeros_like(csum))
    log_incl = csum - base
    include = log_incl > math.log(TRANSMITTANCE_MIN)  # exclusive stop, as gsplat's `next_T <= 1e-4`
    weights = torch.where(include, alpha * torch.exp(log_incl - log_t).to(alpha.dtype), torch.zeros_like(alpha))

    image = values.new_zeros(n_pix, D).index_add(0, pixel, weights[:, None] * values.index_select(0, g))
    log_final = log_t.new_zeros(n_pix).index_add(0, pixel, torch.where(include, log_t, torch.zeros_like(log_t)))
    trans = torch.exp(log_final).to(values.dtype)[:, None]
    lead = (n_groups,) if groups is not None else ()
    if background is not None:
        image = (image.view(*lead, height * width, D) + trans.view(*lead, height * width, 1)
                 * (background[..., None, :] if groups is not None else background)).reshape(n_pix, D)
    return image.reshape(*lead, height, width, D), (1.0 - trans).reshape(*lead, height, width, 1)
