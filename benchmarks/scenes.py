"""The synthetic scene a benchmark runs on, generated under its output folder on first use."""

from __future__ import annotations

from pathlib import Path

import torch

from moegs_bench.data.load import SceneData, load_scene
from moegs_bench.data.synthetic import generate_synthetic, synthetic_scene_dir


def synthetic_scene(out: Path, scene: str, rig: str, size: str, device: torch.device, seed: int = 0) -> SceneData:
    """The synthetic scene under out/scenes (the toolkit's naming), generated when missing,
    loaded with ground truth."""
    scene_dir = synthetic_scene_dir(Path(out) / "scenes", scene, rig, size, seed)
    generate_synthetic(scene_dir, scene=scene, rig=rig, size=size, seed=seed, device=device)
    return load_scene(scene_dir, device, with_gt=True)
