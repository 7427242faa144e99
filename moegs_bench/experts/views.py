"""An expert's images of views (camera, frame): the Gaussians at each view's time,
rasterised together where they can be, decoded to RGB. Training and evaluation both render
through here."""

from __future__ import annotations

import torch
from torch import Tensor

from ..data.load import SceneData
from ..render.backend import RenderSettings, render, render_batch, same_layout
from .base import Expert


def render_expert_views(expert: Expert, data: SceneData, cams: Tensor, frames: Tensor, background: Tensor,
                        settings: RenderSettings | None = None, backend: str = "auto"):
    """Render views (camera, frame) of an expert; cams, frames [B] on the CPU (no device sync).

    One group of views per distinct time (and per camera for camera-dependent experts); groups
    of one size whose Gaussians match in count are rasterised together (`render_batch`).
    Returns rgb [B,H,W,3] in the order of the views, and the render outputs.
    """
    camera_dependent = expert.camera_dependent
    groups: dict[tuple[int, int], list[int]] = {}
    for i, (c, f) in enumerate(zip(cams.tolist(), frames.tolist(), strict=True)):
        groups.setdefault((f, c if camera_dependent else -1), []).append(i)
    keys = list(groups)
    gaussians = expert.gaussians_at_times([data.times[f] for f, _ in keys],
                                          [c if c >= 0 else int(cams[groups[(f, c)][0]]) for f, c in keys])
    cameras = [data.camera_batch(cams[members]) for members in groups.values()]
    if len(gaussians) > 1 and len({len(m) for m in groups.values()}) == 1 and same_layout(gaussians):
        out = render_batch(gaussians, torch.stack([v for v, _ in cameras]), torch.stack([k for _, k in cameras]),
                           data.width, data.height, background=background, backend=backend, settings=settings)
        outputs, images = [out], out.rgb.unbind(0)  # unbind: one backward stack, not B zero-filled copies
    else:
        outputs = [render(g, viewmats, Ks, data.width, data.height, background=background, backend=backend,
                          settings=settings) for g, (viewmats, Ks) in zip(gaussians, cameras, strict=True)]
        images = [o.rgb for o in outputs]
    order_rgb = [None] * len(cams)
    for (f, _), members, rgb, (viewmats, Ks) in zip(keys, groups.values(), images, cameras, strict=True):
        rgb = expert.decode(rgb, viewmats, Ks, data.times[f])
        for i, image in zip(members, rgb.unbind(0), strict=True):
            order_rgb[i] = image
    return torch.stack(order_rgb), outputs


def expert_view_renderer(expert: Expert, data: SceneData, split: str = "test",
                         background: tuple[float, float, float] = (0.0, 0.0, 0.0),
                         backend: str = "auto"):
    """view index of `split` -> the expert's image of it, [H,W,3] (one rasterisation)."""
    views = data.splits[split]
    bg = torch.tensor(background, dtype=torch.float32, device=data.device)

    def render_view(i: int) -> Tensor:
        rgb, _ = render_expert_views(expert, data, views.cams[i:i + 1], views.frames[i:i + 1], bg,
                                     backend=backend)
        return rgb[0]

    return render_view


def expert_depth_renderer(expert: Expert, data: SceneData, backend: str = "auto"):
    """The expert's depth for analyses: (cameras [C], frame) -> (camera-z depth [C,H,W],
    alpha [C,H,W]); one rasterisation for all cameras unless the expert is camera-dependent."""

    def render_depth(cams: Tensor, frame: int) -> tuple[Tensor, Tensor]:
        with torch.no_grad():
            if expert.camera_dependent:
                outs = [render(expert.gaussians_at(data.times[frame], camera=c), *data.camera_batch(torch.tensor([c])),
                               data.width, data.height, backend=backend) for c in cams.tolist()]
                return torch.cat([o.depth[..., 0] for o in outs]), torch.cat([o.alpha[..., 0] for o in outs])
            out = render(expert.gaussians_at(data.times[frame]), *data.camera_batch(cams), data.width, data.height,
                         backend=backend)
        return out.depth[..., 0], out.alpha[..., 0]

    return render_depth


__all__ = ["render_expert_views", "expert_view_renderer", "expert_depth_renderer"]
