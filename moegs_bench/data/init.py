"""`InitData`: what an expert is initialised from — a scene's point clouds, frame and camera
counts, extent and dataset tag — and nothing else (no images, no splits, no file layout)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from .load import SceneData


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
        scene = data.scene
        sets = {k for k in ("merged", "downsampled") if scene.points.get(k)}
        sets |= {f"frame:{f}" for f in (scene.points.get("frames") or {})}
        return cls(
            dataset=scene.dataset,
            num_frames=len(data.times),
            num_cameras=int(data.Ks.shape[0]),
            train_cameras=data.splits["train"].cams.unique(),
            extent=data.extent,
            device=data.device,
            point_sets=frozenset(sets),
            _load_points=scene.load_points,
        )


__all__ = ["InitData"]
