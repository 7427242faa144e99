"""Render speed and memory of any method, as the evaluation sees it: FPS and per-view time of
a renderer `view -> image`, and peak GPU memory while rendering, at the scene's resolution and
at the N3V test resolution 1352x1014 (the test cameras' intrinsics scaled to that size).

What is inside the timed region is written in docs/metrics.md ("Efficiency rows").
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace

import numpy as np
import torch

from ..data.load import SceneData, Views
from ..errors import ConfigError
from .evaluate import ViewOutput, ViewRenderer
from .perf import MB, measure_fps, peak_memory

# the N3V test resolution: half of the 2704x2028 videos (REFERENCE.md §3), the paper's FPS setting
N3V_SIZE = (1352, 1014)


@dataclass
class EfficiencyConfig:
    """How much rendering one measurement costs. The MoE-GS authors time one camera 500 times
    (REFERENCE.md §1); here every method is timed on up to `views` test views, `repeats` times
    each, which is cheap enough to run after every evaluation.

    warmup: untimed renders (cycling through the views) before timing at each resolution;
    views: at most this many test views, evenly spaced over the split;
    repeats: timed renders of each view, in rounds over the views (consecutive calls render
      different views when there are several); a view's time is the median of its repeats;
    n3v_size: (width, height) of the second resolution (None: only the scene's);
    on_cpu: measure on CPU too (the harness skips CPU devices unless set).
    """

    warmup: int = 3
    views: int = 20
    repeats: int = 3
    n3v_size: tuple[int, int] | None = N3V_SIZE
    on_cpu: bool = False

    def __post_init__(self):
        if self.warmup < 0 or self.views < 1 or self.repeats < 1:
            raise ConfigError(f"efficiency: warmup >= 0, views >= 1 and repeats >= 1 needed, got warmup={self.warmup}, "
                              f"views={self.views}, repeats={self.repeats}")
        if self.n3v_size is not None and min(self.n3v_size) < 1:
            raise ConfigError(f"efficiency.n3v_size: expected (width, height) >= 1, got {self.n3v_size}")


@dataclass
class Efficiency:
    """metrics: fps, render_ms, render_memory_mb (CUDA only) and the same with suffix `_n3v`;
    notes: metric -> how it was measured, or why it is missing."""

    metrics: dict[str, float] = field(default_factory=dict)
    notes: dict[str, str] = field(default_factory=dict)


def at_resolution(data: SceneData, width: int, height: int, images_of: str | None = None) -> SceneData:
    """The scene seen by cameras of `width` x `height` pixels: every camera's focal lengths and
    principal point scaled by width/W and height/H (pixel edges map to pixel edges), the same
    poses, times and views. images_of: a split whose ground-truth images are resized too
    (antialiased bilinear), for renderers that compare with them (the oracle baselines); other
    splits keep their images, and depth and label maps are dropped."""
    if (width, height) == (data.width, data.height):
        return data
    sx, sy = width / data.width, height / data.height
    scale = torch.tensor([sx, sy, 1.0], dtype=data.Ks.dtype, device=data.Ks.device)
    splits = {name: Views(v.cams, v.frames, v.images) for name, v in data.splits.items()}
    if images_of is not None:
        views = data.splits[images_of]
        resized = [torch.nn.functional.interpolate(chunk.permute(0, 3, 1, 2).float(), size=(height, width),
                                                   mode="bilinear", antialias=True, align_corners=False)
                   .round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1) for chunk in views.images.split(8)]
        splits[images_of] = Views(views.cams, views.frames, torch.cat(resized) if resized else views.images)
    return replace(data, Ks=data.Ks * scale[None, :, None], width=int(width), height=int(height), splits=splits)


def timed_views(n_views: int, at_most: int) -> list[int]:
    """Up to `at_most` view indices evenly spaced over 0..n_views-1 (first and last included)."""
    if n_views < 1:
        raise ConfigError("efficiency: the split has no views to time")
    return sorted({int(round(x)) for x in np.linspace(0, n_views - 1, min(n_views, at_most))})


def _image(out) -> torch.Tensor:
    return out.image if isinstance(out, ViewOutput) else out


def time_renderer(renderer: ViewRenderer, views: list[int], device: torch.device,
                  config: EfficiencyConfig, what: str = "") -> tuple[dict[str, float], tuple[int, int], str]:
    """Time `renderer` on `views`: config.warmup untimed calls, then config.repeats rounds over
    the views, each call synchronised and timed alone (perf.measure_fps), under a peak-memory
    block. Returns ({render_ms, fps, peak_mb?, baseline_mb?}, image (width, height), clock and
    device label)."""
    with torch.no_grad():
        shape = None
        for i in range(config.warmup):
            shape = tuple(_image(renderer(views[i % len(views)])).shape)
        per_view: dict[int, list[float]] = {v: [] for v in views}
        with peak_memory(device) as mem:
            for _ in range(config.repeats):
                for v in views:
                    result = measure_fps(lambda _, v=v: renderer(v), warmup=0, iters=1, device=device, what=what)
                    per_view[v].append(result.median_ms)
        if shape is None:
            shape = tuple(_image(renderer(views[0])).shape)
    ms = float(np.median([np.median(t) for t in per_view.values()]))
    out = {"render_ms": ms, "fps": 1e3 / ms if ms > 0 else float("inf")}
    if mem.peak_allocated_mb is not None:
        out["peak_mb"], out["baseline_mb"] = mem.peak_allocated_mb, mem.baseline_mb
    return out, (int(shape[1]), int(shape[0])), f"{result.clock} on {result.device}"


def measure_efficiency(make_renderer: Callable[[SceneData], ViewRenderer], data: SceneData,
                       split: str = "test", config: EfficiencyConfig | None = None, model_bytes: int = 0,
                       what: str = "the renderer's call") -> Efficiency:
    """FPS, per-view time and peak memory of one method.

    make_renderer(scene) -> the method's evaluation renderer (view index of `split` -> image
    [H,W,3] or ViewOutput) for that scene's cameras and resolution; it is called with `data`
    and with `at_resolution(data, *config.n3v_size, images_of=split)`.
    model_bytes: bytes of the method's own tensors on the device (parameters, buffers):
    render_memory_mb = model_bytes + the peak of what rendering allocates on top of the
    tensors live when timing begins, so the scene's images and other methods' caches on the
    same device are not counted.
    what: the steps the renderer performs (stored in the notes).
    Returns metrics fps, render_ms, render_memory_mb (CUDA) and fps_n3v, render_ms_n3v,
    render_memory_mb_n3v; notes say how they were measured or why one is missing.
    """
    config = config or EfficiencyConfig()
    views = timed_views(len(data.splits[split]), config.views)
    sizes = {"": None} if config.n3v_size is None else {"": None, "_n3v": config.n3v_size}
    out = Efficiency()
    for suffix, size in sizes.items():
        scene = data if size is None else at_resolution(data, *size, images_of=split)
        label = f"{scene.width}x{scene.height}"
        timing, (w, h), clock = time_renderer(make_renderer(scene), views, data.device, config, what)
        if (w, h) != (scene.width, scene.height):
            raise ValueError(f"efficiency: the renderer made {w}x{h} images for {label} cameras")
        out.metrics[f"fps{suffix}"], out.metrics[f"render_ms{suffix}"] = timing["fps"], timing["render_ms"]
        out.notes[f"fps{suffix}"] = (f"{label}: median over {len(views)} {split} views of each view's median of "
                                     f"{config.repeats} synchronised renders ({clock}) after {config.warmup} "
                                     f"warm-up renders; timed: {what}")
        if "peak_mb" in timing:
            out.metrics[f"render_memory_mb{suffix}"] = model_bytes / MB + timing["peak_mb"] - timing["baseline_mb"]
            out.notes[f"render_memory_mb{suffix}"] = (f"{label}: the method's tensors ({model_bytes / MB:.1f} MB) plus "
                                                      "the peak torch.cuda.max_memory_allocated above the tensors "
                                                      "live before rendering")
        else:
            out.notes[f"render_memory_mb{suffix}"] = f"unavailable on {data.device.type} (no peak-memory counter)"
        del scene  # the resized ground truth of the second size is not kept
    return out


def tensor_bytes(*modules: torch.nn.Module | torch.Tensor | None) -> int:
    """Bytes of the parameters and buffers of modules (and of plain tensors), each counted once."""
    seen: dict[int, int] = {}
    for m in modules:
        if m is None:
            continue
        tensors = [m] if isinstance(m, torch.Tensor) else [*m.parameters(), *m.buffers()]
        for t in tensors:
            seen.setdefault(t.data_ptr(), t.numel() * t.element_size())
    return sum(seen.values())


__all__ = ["EfficiencyConfig", "Efficiency", "N3V_SIZE", "at_resolution", "timed_views", "time_renderer",
           "measure_efficiency", "tensor_bytes"]
