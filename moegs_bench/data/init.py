"""`InitData`: what an expert is initialised from — a scene's point clouds, frame and camera
counts, extent and dataset tag — and nothing else (no images, no splits, no file layout)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from .load import SceneData, frame_span


@dataclass(frozen=True)
class InitData:
    """dataset: the dataset tag (n3v, technicolor, ...) for per-dataset defaults;
    num_frames, num_cameras: the scene's counts; train_cameras [T] long: indices of the
    cameras with training views; extent: scene radius; device: where the expert lives;
    point_sets: the point clouds `points` can load ("merged", "downsampled", "frame:<f>")."""

    dataset: str
    num_frames: int
    num_cameras: int
    train_cameras: Tensor
    extent: float
    device: torch.device
    point_sets: frozenset[str]
    _load_points: Callable[[str], dict[str, np.ndarray]]

    def has_points(self, which: str) -> bool:
        return which in self.point_sets

    def points(self, which: str = "merged") -> dict[str, np.ndarray]:
        """Point cloud arrays: "merged" (xyz, rgb, time, frame), "downsampled" (xyz, rgb) or
        "frame:<f>" (xyz, rgb); SceneFormatError naming the scene file if it has none."""
        return self._load_points(which)

    @classmethod
    def from_scene(cls, data: SceneData) -> InitData:
        """What `data` offers; for a temporal segment, the points of its frames only, with
        their frame indices and times in the segment's terms."""
        scene = data.scene
        start, end = data.segment if data.segment is not None else (0, len(data.times))
        frames = {int(f) for f in (scene.points.get("frames") or {})}
        sets = {k for k in ("merged", "downsampled") if scene.points.get(k)}
        sets |= {f"frame:{f - start}" for f in frames if start <= f < end}
        load = scene.load_points
        if data.segment is not None:
            load = _segment_points(scene.load_points, start, end, frame_span(scene.times, start, end))
        return cls(
            dataset=scene.dataset,
            num_frames=len(data.times),
            num_cameras=int(data.Ks.shape[0]),
            train_cameras=data.splits["train"].cams.unique(),
            extent=data.extent,
            device=data.device,
            point_sets=frozenset(sets),
            _load_points=load,
        )


def _segment_points(load: Callable[[str], dict[str, np.ndarray]], start: int, end: int,
                    span: tuple[float, float]) -> Callable[[str], dict[str, np.ndarray]]:
    """A point loader for frames [start, end): per-frame clouds by segment frame index; the
    merged cloud cut to those frames, frames and times renormalised like the segment's."""
    t0, t1 = span

    def segment_load(which: str) -> dict[str, np.ndarray]:
        if which.startswith("frame:"):
            return load(f"frame:{int(which.split(':')[1]) + start}")
        pts = load(which)
        if "frame" not in pts:
            return pts  # a cloud without frames (downsampled) serves every segment
        keep = (pts["frame"] >= start) & (pts["frame"] < end)
        out = {k: v[keep] for k, v in pts.items()}
        out["frame"] = out["frame"] - start
        if "time" in out:
            out["time"] = ((out["time"] - t0) / (t1 - t0)).astype(out["time"].dtype)
        return out

    return segment_load


__all__ = ["InitData"]
