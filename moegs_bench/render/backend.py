"""`render()`: Gaussians + cameras -> images. gsplat on CUDA, the torch reference on CPU.

Both backends get the same inputs: colours are evaluated from SH here (3DGS convention,
clamp_min(SH + 0.5, 0)) and extra per-Gaussian channels are splatted in the same pass, so
an expert's RGB, depth and any router/feature channels come from one rasterisation.
"""

from __future__ import annotations

from collections.abc import Sequence
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
    (means2d [C,N,2] with gradients, radii [C,N,2], width, height, n_cameras: all images) for
    densification. From `render_batch` every leading [C] is [B,C]."""

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
    """World-space camera centres from world-to-camera matrices. [...,C,4,4] -> [...,C,3]."""
    R, t = viewmats[..., :3, :3], viewmats[..., :3, 3]
    return -(R.transpose(-1, -2) @ t[..., None])[..., 0]


def gaussian_colors(g: Gaussians, viewmats: Tensor) -> Tensor:
    """Per-camera colour of every Gaussian: [C,N,Dc] (SH evaluated towards each camera)."""
    return _colors(g.means, g.sh, g.features, g.sh_degree, viewmats)


def _colors(means: Tensor, sh: Tensor | None, features: Tensor | None, degree: int, viewmats: Tensor) -> Tensor:
    """means [*B,N,3], sh [*B,N,K,3] or features [*B,N,D], viewmats [*B,C,4,4] -> [*B,C,N,Dc]."""
    C = viewmats.shape[-3]
    if sh is None:
        return features.unsqueeze(-3).expand(*features.shape[:-2], C, *features.shape[-2:])
    dirs = means.unsqueeze(-3) - camera_centers(viewmats).unsqueeze(-2)  # [*B,C,N,3]
    return eval_sh(degree, sh.unsqueeze(-4), dirs)


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
    C = viewmats.shape[0]
    g = gaussians
    colors = gaussian_colors(g, viewmats)  # [C,N,Dc]
    dc = colors.shape[-1]
    values, bg = colors, _per_camera(background, C, dc, colors)
    if extras is not None:
        ex = extras if extras.dim() == 3 else extras[None].expand(C, -1, -1)
        values = torch.cat([values, ex.to(colors.dtype)], -1)
        bg = torch.cat([bg, _per_camera(extras_background, C, ex.shape[-1], colors)], -1)
    geometry = (g.means, g.quats, g.scales, g.opacities)
    out = _rasterize(geometry, values, bg, viewmats, Ks, width, height, backend, settings)
    if extras is not None:
        out.extras = out.rgb[..., dc:]
        out.rgb = out.rgb[..., :dc]
    return out


def render_batch(sets: Sequence[Gaussians], viewmats: Tensor, Ks: Tensor, width: int, height: int,
                 background: Tensor | None = None, backend: Backend = "auto",
                 settings: RenderSettings | None = None) -> RenderOutput:
    """Render C views of each of B Gaussian sets of one count and colour kind (e.g. one
    expert at B times) in one rasterisation: one launch sequence instead of B.

    viewmats [B,C,4,4], Ks [B,C,3,3]; background [Dc] (None: black). Returns rgb
    [B,C,H,W,Dc], depth and alpha [B,C,H,W,1]; info means2d and radii [B,C,N,2].
    """
    settings = settings or RenderSettings()
    if len(sets) != viewmats.shape[0]:
        raise ValueError(f"render_batch: {len(sets)} Gaussian sets but {viewmats.shape[0]} camera groups")
    if not same_layout(sets):
        raise ValueError("render_batch: the sets differ in count, SH degree or colour width; render them separately")
    stack = lambda name: torch.stack([getattr(g, name) for g in sets])  # noqa: E731
    means = stack("means")
    first = sets[0]
    colors = _colors(means, stack("sh") if first.sh is not None else None,
                     stack("features") if first.sh is None else None, first.sh_degree, viewmats)  # [B,C,N,Dc]
    B, C, dc = viewmats.shape[0], viewmats.shape[1], colors.shape[-1]
    bg = _per_camera(background, C, dc, colors).expand(B, C, dc)
    geometry = (means, stack("quats"), stack("scales"), stack("opacities"))
    return _rasterize(geometry, colors, bg, viewmats, Ks, width, height, backend, settings)


def same_layout(sets: Sequence[Gaussians]) -> bool:
    """Whether the sets can share one rasterisation: one count, SH degree and colour kind."""
    first = sets[0]
    return all(len(g) == len(first) and g.sh_degree == first.sh_degree and (g.sh is None) == (first.sh is None)
               and g.color_dim == first.color_dim for g in sets)


def _rasterize(geometry, values, bg, viewmats, Ks, width, height, backend, settings) -> RenderOutput:
    """geometry (means [*B,N,3], quats [*B,N,4], scales [*B,N,3], opacities [*B,N]), values
    [*B,C,N,D], bg [*B,C,D], cameras [*B,C,...] -> RenderOutput with leading dims [*B,C]."""
    which = choose_backend(geometry[0].device, backend)
    fn = _render_gsplat if which == "gsplat" else _render_reference
    image, depth, alpha, info = fn(geometry, values, bg, viewmats, Ks, width, height, settings)
    return RenderOutput(rgb=image, depth=depth, alpha=alpha, info=info)


def _per_camera(value: Tensor | None, C: int, D: int, like: Tensor) -> Tensor:
    if value is None:
        return like.new_zeros(C, D)
    value = torch.as_tensor(value, dtype=like.dtype, device=like.device)
    if value.shape[-1] < D:  # an RGB background for a wider feature render: zero extra channels
        value = torch.nn.functional.pad(value, (0, D - value.shape[-1]))
    return value.expand(C, D) if value.dim() == 1 else value


def _render_gsplat(geometry, values, bg, viewmats, Ks, width, height, s: RenderSettings):
    from gsplat import rasterization  # imported lazily: only ever reached with CUDA tensors

    out, alpha, meta = rasterization(
        *geometry, values, viewmats, Ks, width, height,
        near_plane=s.near_plane, far_plane=s.far_plane, eps2d=s.eps2d, packed=s.packed,
        render_mode="RGB+ED", backgrounds=bg, sh_degree=None,
    )
    meta["n_cameras"] = viewmats.shape[:-2].numel()  # every image of the batch, for the strategy
    return out[..., :-1], out[..., -1:], alpha, meta


def _render_reference(geometry, values, bg, viewmats, Ks, width, height, s: RenderSettings):
    batch, C, N = viewmats.shape[:-3], viewmats.shape[-3], geometry[0].shape[-2]
    means, quats, scales, opacities = (t.reshape(-1, *t.shape[len(batch):]) for t in geometry)  # [B',N,...]
    views = [(b, c) for b in range(means.shape[0]) for c in range(C)]
    vm, ks = viewmats.reshape(-1, C, 4, 4), Ks.reshape(-1, C, 3, 3)
    vals, bgs = values.reshape(-1, C, *values.shape[-2:]), bg.reshape(-1, C, bg.shape[-1])
    proj = [project(means[b], quats[b], scales[b], opacities[b], vm[b, c], ks[b, c], width, height,
                    s.near_plane, s.far_plane, s.eps2d) for b, c in views]
    # one [*B,C,N,2] tensor upstream of the images, so the strategy can read its gradient
    means2d = torch.stack([p[0] for p in proj]).view(*batch, C, N, 2)
    flat2d = means2d.reshape(-1, N, 2)
    images, depths, alphas = [], [], []
    for i, ((b, c), (_, conics, z, radii)) in enumerate(zip(views, proj, strict=True)):
        v = torch.cat([vals[b, c], z[:, None]], -1)  # depth rides along as the last channel
        full_bg = torch.cat([bgs[b, c], bgs.new_zeros(1)])
        img, alpha = rasterize(flat2d[i], conics, z, radii, opacities[b], v, width, height, full_bg)
        images.append(img[..., :-1])
        depths.append(img[..., -1:] / alpha.clamp_min(1e-10))
        alphas.append(alpha)
    info = {
        "means2d": means2d,
        "radii": torch.stack([p[3] for p in proj]).view(*batch, C, N, 2),
        "width": width,
        "height": height,
        "n_cameras": len(views),
        "gaussian_ids": None,
    }
    shape = (*batch, C, height, width)
    return (torch.stack(images).view(*shape, -1), torch.stack(depths).view(*shape, 1),
            torch.stack(alphas).view(*shape, 1), info)
