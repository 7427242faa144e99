"""Single-pass multi-expert rendering (MoE-GS Eq. 9, REFERENCE.md §1).

Every expert's Gaussians are projected once and sorted into one depth-ordered list per tile,
each tagged with its expert id; blending keeps a separate transmittance, colour, depth, alpha
and extra-channel sum per expert and pixel, so each expert's output equals its own multi-pass
render (`backend.render`), up to float rounding. An expert's pixel stops only at its own
transmittance floor; a tile stops when every expert's is spent.

On CUDA: gsplat's projection and tile intersection, then this package's blending kernel
(`render/cuda/single_pass.cu`, built with torch's extension tooling at first use), with a
backward for the per-Gaussian values (colours and router channels; the geometry must be
frozen). On CPU: the torch reference (`reference.rasterize` with one group per expert).
"""

from __future__ import annotations

import functools
import os
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import Tensor

from .backend import (
    Backend,
    RenderOutput,
    RenderSettings,
    _per_camera,
    choose_backend,
    gaussian_colors,
)
from .gaussians import Gaussians
from .reference import project, rasterize

TILE_SIZE = 16  # the kernel's block is one 16x16 tile (gsplat's default tile size)
_EXPERT_SLOTS = (2, 3, 4, 8)  # compiled expert counts; K experts use the smallest slot >= K
_CHANNEL_SLOTS = (4, 8, 16, 32)  # compiled channel counts; values are zero-padded up to one


def frozen(gaussians: Sequence[Gaussians]) -> bool:
    """Whether no geometry tensor needs a gradient (the single pass differentiates only the
    per-Gaussian values: colours and extra channels)."""
    return not any(t.requires_grad for g in gaussians for t in (g.means, g.quats, g.scales, g.opacities))


def render_single_pass(gaussians: Sequence[Gaussians], viewmats: Tensor, Ks: Tensor, width: int, height: int,
                       extras: Sequence[Tensor | None] | None = None,
                       backgrounds: Sequence[Tensor | None] | None = None,
                       extras_background: Tensor | None = None, backend: Backend = "auto",
                       settings: RenderSettings | None = None) -> list[RenderOutput]:
    """Render the same C views of K Gaussian sets in one pass.

    gaussians: K sets with frozen geometry; viewmats [C,4,4], Ks [C,3,3]; extras: K tensors
    [N_k,E] or [C,N_k,E] (one E for all) or None; backgrounds: K tensors [Dc_k] / [C,Dc_k] or
    None (black); extras_background [E] or [C,E]. Returns K RenderOutputs like `render`'s
    (rgb [C,H,W,Dc_k], depth and alpha [C,H,W,1], extras [C,H,W,E] or None); info is empty
    (there is no densification of frozen experts).
    """
    settings = settings or RenderSettings()
    k = len(gaussians)
    extras = list(extras) if extras is not None else [None] * k
    backgrounds = list(backgrounds) if backgrounds is not None else [None] * k
    if len(extras) != k or len(backgrounds) != k:
        raise ValueError(f"render_single_pass: {k} Gaussian sets but {len(extras)} extras and "
                         f"{len(backgrounds)} backgrounds")
    if (extras[0] is None) != all(e is None for e in extras):
        raise ValueError("render_single_pass: give extras for every expert or for none")
    if not frozen(gaussians):
        raise ValueError("render_single_pass: the Gaussians' geometry requires grad; the single pass "
                         "differentiates colours and extra channels only (use the multi-pass renderer)")
    C = viewmats.shape[0]
    colors = [gaussian_colors(g, viewmats) for g in gaussians]  # K x [C,N_k,Dc_k]
    dcs = [c.shape[-1] for c in colors]
    dc = max(dcs)
    n_extra = 0 if extras[0] is None else extras[0].shape[-1]
    values, bgs = [], []
    for col, ex, bg in zip(colors, extras, backgrounds, strict=True):
        parts = [torch.nn.functional.pad(col, (0, dc - col.shape[-1]))]
        bg_parts = [_per_camera(bg, C, dc, col)[..., :dc]]
        if ex is not None:
            ex = ex if ex.dim() == 3 else ex[None].expand(C, -1, -1)
            parts.append(ex.to(col.dtype))
            bg_parts.append(_per_camera(extras_background, C, n_extra, col))
        parts.append(col.new_zeros(*col.shape[:-1], 1))  # depth, filled after the projection
        bg_parts.append(col.new_zeros(C, 1))
        values.append(torch.cat(parts, -1))
        bgs.append(torch.cat(bg_parts, -1))
    values = torch.cat(values, 1)  # [C,Nt,D]
    bg = torch.stack(bgs)  # [K,C,D]
    ids = torch.cat([torch.full((len(g),), i, dtype=torch.int32, device=values.device)
                     for i, g in enumerate(gaussians)])
    geometry = [torch.cat([getattr(g, name) for g in gaussians]) for name in ("means", "quats", "scales", "opacities")]
    which = choose_backend(values.device, backend)
    # the channels whose inputs need gradients: colours and/or extras, never depth (frozen geometry)
    colour_grad = any(c.requires_grad for c in colors)
    extras_grad = any(e is not None and e.requires_grad for e in extras)
    grad_channels = (0 if colour_grad else dc, dc + n_extra if extras_grad else dc)
    if which == "gsplat":
        out, alpha = _blend_cuda(geometry, ids, k, values, bg, viewmats, Ks, width, height, settings, grad_channels)
    else:
        out, alpha = _blend_reference(geometry, ids, k, values, bg, viewmats, Ks, width, height, settings)
    outputs = []
    for i in range(k):
        o, a = out[i], alpha[i]
        ex = o[..., dc:dc + n_extra] if n_extra else None
        outputs.append(RenderOutput(rgb=o[..., :dcs[i]], depth=o[..., -1:] / a.clamp_min(1e-10), alpha=a,
                                    extras=ex, info={}))
    return outputs


def _blend_reference(geometry, ids, k, values, bg, viewmats, Ks, width, height, s: RenderSettings):
    """The torch reference: one projection of all Gaussians per camera, one blend with a
    transmittance per expert (`reference.rasterize` with groups)."""
    means, quats, scales, opacities = geometry
    outs, alphas = [], []
    groups = ids.long()
    for c in range(viewmats.shape[0]):
        means2d, conics, z, radii = project(means, quats, scales, opacities, viewmats[c], Ks[c], width, height,
                                            s.near_plane, s.far_plane, s.eps2d)
        v = torch.cat([values[c, :, :-1], z[:, None].to(values.dtype)], -1)
        img, alpha = rasterize(means2d, conics, z, radii, opacities, v, width, height, bg[:, c], groups, k)
        outs.append(img)
        alphas.append(alpha)
    return torch.stack(outs, 1), torch.stack(alphas, 1)


def _blend_cuda(geometry, ids, k, values, bg, viewmats, Ks, width, height, s: RenderSettings,
                grad_channels: tuple[int, int]):
    """gsplat's projection and tile sort over all experts at once, then the blending kernel
    (its backward fills the gradient of channels [grad_channels[0], grad_channels[1]) only).
    Returns out [K,C,H,W,D] and alpha [K,C,H,W,1]."""
    from gsplat.cuda._wrapper import fully_fused_projection, isect_offset_encode, isect_tiles

    means, quats, scales, opacities = geometry
    C, d = viewmats.shape[0], values.shape[-1]
    slot_k = next((n for n in _EXPERT_SLOTS if n >= k), None)
    slot_d = next((n for n in _CHANNEL_SLOTS if n >= d), None)
    if slot_k is None or slot_d is None:
        raise ValueError(f"render_single_pass: at most {_EXPERT_SLOTS[-1]} experts and {_CHANNEL_SLOTS[-1]} "
                         f"channels on CUDA, got {k} experts and {d} channels")
    # everything but the sort's outputs is ready before isect_tiles waits for the GPU; zeros pad
    # the channels up to the slot before the last one, which the kernel fills with depth
    values = torch.nn.functional.pad(values[..., :-1].float(), (0, slot_d - d + 1)).contiguous()
    bg = torch.nn.functional.pad(bg[..., :-1].float(), (0, slot_d - d + 1, 0, 0, 0, slot_k - k)).contiguous()
    radii, means2d, depths, conics, _ = fully_fused_projection(
        means, None, quats, scales, viewmats, Ks, width, height, eps2d=s.eps2d, near_plane=s.near_plane,
        far_plane=s.far_plane, opacities=opacities)
    tw, th = -(-width // TILE_SIZE), -(-height // TILE_SIZE)
    _, isect_ids, flatten_ids = isect_tiles(means2d, radii, depths, TILE_SIZE, tw, th, n_images=C)
    offsets = isect_offset_encode(isect_ids, C, tw, th).reshape(C, th, tw)
    out, alpha = _SinglePassBlend.apply(values, depths.contiguous(), means2d.contiguous(), conics.contiguous(),
                                        opacities.float().contiguous(), ids, bg, offsets,
                                        flatten_ids.int().contiguous(), width, height, slot_k, grad_channels)
    return out[:k], alpha[:k, ..., None]  # [K,C,H,W,slot_d]: depth in the last channel


class _SinglePassBlend(torch.autograd.Function):
    """The CUDA blend as an autograd function: gradients reach the values only."""

    @staticmethod
    def forward(ctx, values, depths, means2d, conics, opacities, ids, bg, offsets, flatten_ids, width, height,
                slots, grad_channels):
        ext = extension()
        out, alpha = ext.forward(slots, means2d, conics, opacities, ids, values, depths, bg, offsets, flatten_ids,
                                 width, height)
        ctx.save_for_backward(values, means2d, conics, opacities, ids, bg, offsets, flatten_ids)
        ctx.size = (width, height, slots, grad_channels)
        return out, alpha

    @staticmethod
    def backward(ctx, grad_out, grad_alpha):
        values, means2d, conics, opacities, ids, bg, offsets, flatten_ids = ctx.saved_tensors
        width, height, slots, (g0, g1) = ctx.size
        grad_values = extension().backward(slots, means2d, conics, opacities, ids, values, bg, offsets, flatten_ids,
                                           width, height, grad_out.contiguous(), g0, g1)
        return (grad_values,) + (None,) * 12


@functools.cache
def extension():
    """The compiled blending kernel, built on first use into torch's extension cache (set
    TORCH_EXTENSIONS_DIR to move it)."""
    from torch.utils.cpp_extension import load

    source = Path(__file__).parent / "cuda" / "single_pass.cu"
    return load(name="moegs_single_pass", sources=[str(source)],
                extra_cuda_cflags=["-O3"] + (["-Xptxas", "-v"] if os.environ.get("MOEGS_VERBOSE_BUILD") == "1" else []),
                verbose=os.environ.get("MOEGS_VERBOSE_BUILD") == "1")


__all__ = ["render_single_pass", "frozen", "extension"]
