"""One expert made of several models, each trained on a temporal segment of the scene (STG
trains one model per 50 frames; the MoE-GS paper's STG† one per 150 N3V frames). To the rest
of the toolkit it is one expert: at time t it is the model of the segment holding t, asked at
t's place within that segment. Also `load_expert`: any stored expert model, plain or
segmented."""

from __future__ import annotations

import bisect
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import Tensor, nn

from ..io import load_torch, save_torch
from ..render.gaussians import Gaussians
from .base import Expert
from .registry import get_expert

KIND = "segments"  # the checkpoint's name field for a segmented expert


def segment_ranges(num_frames: int, frames_per_segment: int) -> list[tuple[int, int]]:
    """Consecutive [start, end) frame ranges of at most `frames_per_segment` frames covering
    0..num_frames (one range when frames_per_segment is 0 or covers every frame)."""
    if frames_per_segment <= 0 or frames_per_segment >= num_frames:
        return [(0, num_frames)]
    return [(s, min(s + frames_per_segment, num_frames)) for s in range(0, num_frames, frames_per_segment)]


class SegmentedExpert(nn.Module):
    """Models [S] (one expert class) with their time spans [S] of [t0, t1) in scene time.

    Implements what evaluation, the expert pool and routers use: `gaussians_at`,
    `gaussians_at_times`, `decode`, `camera_dependent`, `decodes_pixels`, `config` (the
    first model's), `num_gaussians` (all models together: what is stored)."""

    def __init__(self, models: Sequence[Expert], spans: Sequence[tuple[float, float]]):
        super().__init__()
        if not models or len(models) != len(spans):
            raise ValueError(f"SegmentedExpert: {len(models)} models for {len(spans)} spans")
        self.models = nn.ModuleList(models)
        self.spans = [(float(a), float(b)) for a, b in spans]
        self._starts = [a for a, _ in self.spans]

    @property
    def name(self) -> str:
        return self.models[0].name

    @property
    def config(self):
        return self.models[0].config

    @property
    def camera_dependent(self) -> bool:
        return any(m.camera_dependent for m in self.models)

    @property
    def decodes_pixels(self) -> bool:
        return any(m.decodes_pixels for m in self.models)

    @property
    def num_gaussians(self) -> int:
        return sum(m.num_gaussians for m in self.models)

    def locate(self, t: float | Tensor) -> tuple[int, Tensor]:
        """(segment index, t within that segment's span, in [0, 1)) of scene time t."""
        value = float(t)
        k = max(0, bisect.bisect_right(self._starts, value) - 1)
        t0, t1 = self.spans[k]
        return k, torch.as_tensor((value - t0) / (t1 - t0), dtype=torch.float32)

    def gaussians_at(self, t: float | Tensor, camera: int | None = None) -> Gaussians:
        k, local = self.locate(t)
        return self.models[k].gaussians_at(local.to(self._device(k)), camera=camera)

    def gaussians_at_times(self, times, cameras=None) -> list[Gaussians]:
        cameras = cameras if cameras is not None else [None] * len(times)
        return [self.gaussians_at(t, camera=c) for t, c in zip(times, cameras, strict=True)]

    def decode(self, rendered: Tensor, viewmats: Tensor, Ks: Tensor, t: Tensor) -> Tensor:
        k, local = self.locate(t)
        return self.models[k].decode(rendered, viewmats, Ks, local.to(rendered.device))

    def _device(self, k: int) -> torch.device:
        return next(iter(self.models[k].parameters())).device

    def checkpoint(self) -> dict:
        return {"name": KIND, "spans": self.spans, "models": [m.checkpoint() for m in self.models]}

    def save(self, path: str | Path) -> Path:
        return save_torch(path, self.checkpoint())


def load_expert(path: str | Path, device: torch.device) -> Expert | SegmentedExpert:
    """A stored expert model (`model.pt` of an expert run), plain or segmented, on `device`."""
    ckpt = load_torch(path)  # UnreadableFileError naming the file, not an unpickling traceback
    if ckpt.get("name") == KIND:
        models = [get_expert(c["name"]).from_checkpoint(c, device) for c in ckpt["models"]]
        return SegmentedExpert(models, ckpt["spans"])
    return get_expert(ckpt["name"]).from_checkpoint(ckpt, device)


__all__ = ["SegmentedExpert", "segment_ranges", "load_expert"]
