"""`render()`: Gaussians + cameras -> images. gsplat on CUDA, the torch reference on CPU.

Both backends get the same inputs: colours are evaluated from SH here (3DGS convention,
clamp_min(SH + 0.5, 0)) and extra per-Gaussian channels are splatted in the same pass, so
an expert's RGB, depth and any router/feature channels come from one rasterisation.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

import torch
from torch import Tensor

from .gaussians import Gaussians
from .reference import project, rasterize
from .sh import eval_sh

Backend = Literal["auto", "gsplat", "reference"]


@dataclass
class RenderSettings:
    """Rasteriser constants (gsplat 1.5.3 defaults, REFERENCE.md §5)."""

    near_plane: float = 0.01
    far_plane: float = 1e10
    eps2d: float = 0.3
    packed: bool = False  # [C,N] meta for the densification strategy; memory is fine at C <= 4


@dataclass
class RenderOutput:
    """rgb [C,H,W,Dc] (Dc = 3 for RGB, else the feature width); depth [C,H,W,1] expected
    camera-z depth; alpha [C,H,W,1]; extras [C,H,W,E] or None; info: rasteriser meta
    (means2d [C,N,2] with gradients, radii [C,N,2], width, height, n_cameras) for densification."""

    rgb: Tensor
    depth: Tensor
    alpha: Tensor
    extras: Tensor | None = None
    info: dict[str, Any] = field(default_factory=dict)


def choose_backend(device: torch.device, backend: Backend = "auto") -> str:
    """gsplat only with CUDA tensors: a gsplat CUDA call without CUDA would try to compile."""
    if backend == "auto":
        return "gsplat" if device.type == "cuda" else "reference"
    if backend == "gsplat" and device.type != "cuda":
        raise ValueError("the gsplat backend needs CUDA tensors; use backend='reference' on CPU")
    return backend


def camera_centers(viewmats: Tensor) -> Tensor:
    """World-space camera centres from world-to-camera matrices. [C,4,4] -> [C,3]."""
    R, t = viewmats[:, :3, :3], viewmats[:, :3, 3]
    return -(R.transpose(1, 2) @ t[..., None])[..., 0]


def gaussian_colors(g: Gaussians, viewmats: Tensor) -> Tensor:
    """Per-camera colour of every Gaussian: [C,N,Dc] (SH evaluated towards each camera)."""
    C = viewmats.shape[0]
    if g.sh is None:
        return g.features[None].expand(C, -1, -1)
    dirs = g.means[None] - camera_centers(viewmats)[:, None]  # [C,N,3]
    return eval_sh(g.sh_degree, g.sh[None], dirs)


def render(gaussians: Gaussians, viewmats: Tensor, Ks: Tensor, width: int, height: int,
           background: Tensor | None = None, extras: Tensor | None = None,
           extras_background: Tensor | None = None, backend: Backend = "auto",
           settings: RenderSettings | None = None) -> RenderOutput:
    """Render C views of one set of Gaussians.

    viewmats [C,4,4] world-to-camera (OpenCV), Ks [C,3,3]; background [Dc] or [C,Dc] (None:
    black); extras [N,E] or [C,N,E] per-Gaussian channels splatted with the colours (e.g. the
    router's weights) and extras_background [E] or [C,E] (None: zeros).
    """
    settings = settings or RenderSettings()
    C, _N = viewmats.shape[0], len(gaussians)
    colors = gaussian_colors(gaussians, viewmats)  # [C,N,Dc]
    dc = colors.shape[-1]
    values, bg = colors, _per_camera(background, C, dc, colors)
    if extras is not None:
        ex = extras if extras.dim() == 3 else extras[None].expand(C, -1, -1)
        values = torch.cat([values, ex.to(colors.dtype)], -1)
        bg = torch.cat([bg, _per_camera(extras_background, C, ex.shape[-1], colors)], -1)
    which = choose_backend(gaussians.device, backend)
    if which == "gsplat":
        image, depth, alpha, info = _render_gsplat(gaussians, values, bg, viewmats, Ks, width, height, settings)
    else:
        image, depth, alpha, info = _render_reference(gaussians, values, bg, viewmats, Ks, width, height, settings)
    return RenderOutput(
        rgb=image[..., :dc],
        depth=depth,
        alpha=alpha,
        extras=image[..., dc:] if extras is not None else None,
        info=info,
    )


def _per_camera(value: Tensor | None, C: int, D: int, like: Tensor) -> Tensor:
    if value is None:
        return like.new_zeros(C, D)
    value = torch.as_tensor(value, dtype=like.dtype, device=like.device)
    if value.shape[-1] < D:  # an RGB background for a wider feature render: zero extra channels
        value = torch.nn.functional.pad(value, (0, D - value.shape[-1]))
    return value.expand(C, D) if value.dim() == 1 else value


def _render_gsplat(g: Gaussians, values, bg, viewmats, Ks, width, height, s: RenderSettings):
    from gsplat import rasterization  # imported lazily: only ever reached with CUDA tensors

    out, alpha, meta = rasterization(
        g.means, g.quats, g.scales, g.opacities, values, viewmats, Ks, width, height,
        near_plane=s.near_plane, far_plane=s.far_plane, eps2d=s.eps2d, packed=s.packed,
        render_mode="RGB+ED", backgrounds=bg, sh_degree=None,
    )
    return out[..., :-1], out[..., -1:], alpha, meta


def _render_reference(g: Gaussians, values, bg, viewmats, Ks, width, height, s: RenderSettings):
    proj = [project(g.means, g.quats, g.scales, g.opacities, viewmats[c], Ks[c], width, height,
                    s.near_plane, s.far_plane, s.eps2d) for c in range(viewmats.shape[0])]
    # one [C,N,2] tensor upstream of the images, so the strategy can read its gradient
    means2d = torch.stack([p[0] for p in proj])
    images, depths, alphas = [], [], []
    for c, (_, conics, z, radii) in enumerate(proj):
        vals = torch.cat([values[c], z[:, None]], -1)  # depth rides along as the last channel
        full_bg = torch.cat([bg[c], bg.new_zeros(1)])
        img, alpha = rasterize(means2d[c], conics, z, radii, g.opacities, vals, width, height, full_bg)
        images.append(img[..., :-1])
        depths.append(img[..., -1:] / alpha.clamp_min(1e-10))
        alphas.append(alpha)
    info = {
        "means2d": means2d,
        "radii": torch.stack([p[3] for p in proj]),
        "width": width,
        "height": height,
        "n_cameras": viewmats.shape[0],
        "gaussian_ids": None,
    }
    return torch.stack(images), torch.stack(depths), torch.stack(alphas), info
