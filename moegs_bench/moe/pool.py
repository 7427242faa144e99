"""`ExpertPool`: the frozen experts of a mixture, rendered for one view at a time.

Stage 2 never changes an expert: every expert parameter has requires_grad False, Gaussians
are produced under no_grad (detached) and cached per frame (and camera, for camera-dependent
experts) within a memory budget, and decoded colours are detached.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from ..data.load import SceneData
from ..errors import ConfigError
from ..experts.base import Expert
from ..render.backend import RenderOutput
from ..render.gaussians import Gaussians
from ..render.multi_expert import render_experts, resolve_mode


@dataclass
class ExpertViews:
    """One view rendered by every expert: images [K,1,H,W,3] (detached RGB), the raw render
    outputs (with extras when asked), viewmats [1,4,4], Ks [1,3,3] and the time t (scalar)."""

    images: Tensor
    outputs: list[RenderOutput]
    viewmats: Tensor
    Ks: Tensor
    t: Tensor


def _nbytes(g: Gaussians) -> int:
    return sum(v.numel() * v.element_size() for v in vars(g).values() if isinstance(v, Tensor))


class ExpertPool:
    """K frozen experts on one scene.

    experts: trained Expert modules (moved to data.device and frozen here); names: their labels;
    cache_mb: memory for cached per-frame Gaussians (0: no cache); render_mode: "auto",
    "single-pass" or "multi-pass" (`render.multi_expert.render_experts`).
    """

    def __init__(self, experts: Sequence[Expert], names: Sequence[str], data: SceneData,
                 backend: str = "auto", cache_mb: float = 2048.0, render_mode: str = "auto"):
        if len(experts) != len(names) or len(experts) < 1:
            raise ValueError(f"ExpertPool: {len(experts)} experts and {len(names)} names")
        self.experts = [e.to(data.device).eval().requires_grad_(False) for e in experts]
        self.names = list(names)
        self.data = data
        self.backend = backend
        resolve_mode(render_mode, experts=[])  # a bad mode fails here, not at the first render
        self.render_mode = render_mode  # "auto" is resolved per call
        self.backgrounds = [torch.tensor(e.config.train.background, dtype=torch.float32, device=data.device)
                            for e in self.experts]
        self.cache_bytes = int(cache_mb * 2**20)
        self._cache: OrderedDict[tuple[int, int, int], Gaussians] = OrderedDict()
        self._cached = 0

    def __len__(self) -> int:
        return len(self.experts)

    @property
    def sizes(self) -> list[int]:
        """Number of Gaussians of every expert (router parameters are sized by these)."""
        return [len(self.gaussians(k, 0, 0)) for k in range(len(self))]

    def gaussians(self, k: int, frame: int, cam: int) -> Gaussians:
        """Expert k's detached Gaussians at frame `frame` (as seen from camera `cam`)."""
        expert = self.experts[k]
        key = (k, frame, cam if expert.camera_dependent else -1)
        if key in self._cache:
            self._cache.move_to_end(key)
            return self._cache[key]
        with torch.no_grad():
            g = expert.gaussians_at(self.data.times[frame], camera=cam).detach()
        size = _nbytes(g)
        if size <= self.cache_bytes:
            while self._cached + size > self.cache_bytes:  # least recently used first
                _, old = self._cache.popitem(last=False)
                self._cached -= _nbytes(old)
            self._cache[key] = g
            self._cached += size
        return g

    def check_concatenable(self, option: str, what: str) -> None:
        """ConfigError (naming `option` and the expert) unless every expert's Gaussians can be
        rendered together in one set: RGB or SH colours of one kind, no per-pixel decoder."""
        for k, (name, expert) in enumerate(zip(self.names, self.experts, strict=True)):
            g = self.gaussians(k, 0, 0)
            if expert.decodes_pixels or (g.sh is None and g.features.shape[1] != 3):
                raise ConfigError(f"{option}: expert {name!r} splats learned features decoded per pixel; "
                                  f"{what} can only concatenate RGB/SH experts")
        if len({self.gaussians(k, 0, 0).sh is None for k in range(len(self))}) > 1:
            raise ConfigError(f"{option}: the experts mix SH and RGB-feature colours; {what} needs one colour kind")

    def view_gaussians(self, cam: int, frame: int) -> list[Gaussians]:
        """Every expert's detached Gaussians for view (cam, frame)."""
        return [self.gaussians(k, frame, cam) for k in range(len(self))]

    def render_view(self, cam: int, frame: int, extras: Sequence[Tensor] | None = None,
                    extras_background: Tensor | None = None,
                    gaussians: list[Gaussians] | None = None, background: Tensor | None = None) -> ExpertViews:
        """Every expert's render of one view, in one pass or one rasterisation per expert
        (`render_mode`).

        extras: K per-Gaussian tensors [N_k,E] splatted in the same pass as colour and depth;
        gaussians: the view's Gaussians if the caller already has them (view_gaussians);
        background [3]: one colour behind every expert (default: each expert's own, the one it
        was trained and evaluated on).
        """
        viewmats, Ks = self.data.camera_batch(torch.tensor([cam]))
        t = self.data.times[frame]
        gs = gaussians if gaussians is not None else self.view_gaussians(cam, frame)
        outs = render_experts(gs, viewmats, Ks, self.data.width, self.data.height, extras=extras,
                              backgrounds=self.backgrounds if background is None else background,
                              extras_background=extras_background, backend=self.backend, mode=self.render_mode)
        with torch.no_grad():
            images = torch.stack([e.decode(o.rgb.detach(), viewmats, Ks, t)
                                  for e, o in zip(self.experts, outs, strict=True)])
        return ExpertViews(images, outs, viewmats, Ks, t)


__all__ = ["ExpertPool", "ExpertViews"]
