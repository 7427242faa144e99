"""The synthetic scene a benchmark runs on, generated under its output folder on first use."""

from __future__ import annotations

from pathlib import Path

import torch

from moegs_bench.data.load import SceneData, load_scene
from moegs_bench.data.scene import is_prepared_scene
from moegs_bench.data.synthetic import generate_synthetic


def synthetic_scene(out: Path, scene: str, rig: str, size: str, device: torch.device) -> SceneData:
    """out/scenes/<scene>-<rig>-<size>, generated when missing, loaded with ground truth."""
    scene_dir = Path(out) / "scenes" / f"{scene}-{rig}-{size}"
    if not is_prepared_scene(scene_dir):
        generate_synthetic(scene_dir, scene=scene, rig=rig, size=size, device=device)
    return load_scene(scene_dir, device, with_gt=True)
