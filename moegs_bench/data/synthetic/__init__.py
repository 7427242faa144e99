"""Procedural dynamic scenes with ground truth: the toolkit's embedded default dataset.

Analytic primitives (ellipsoids, boxes, a floor plane, a room) with procedural textures
attached to object-local coordinates, moving in five regimes (static, smooth, fast, abrupt,
nonrigid), ray-cast in torch on CPU or CUDA and written as a prepared scene with depth,
per-pixel regime labels, object trajectories and initial point clouds (docs/synthetic.md).

    generate_synthetic(out, scene, rig, size, seed, device, progress) -> PreparedScene
        (resumes an unfinished folder, returns a finished one as is)
    synthetic_scene_dir(root, scene, rig, size, seed) -> the folder a scene is kept in
    build_world(scene, seed) -> SyntheticWorld;  make_rig(rig, size) -> RigLayout
    render_view(world, camera, t) -> ViewRender (rgb [H,W,3], depth [H,W], labels [H,W]);
    render_views(world, cameras, t) -> list[ViewRender] (the same, batched)
"""

from __future__ import annotations

from .generate import generate_synthetic, sample_points, synthetic_scene_dir
from .motion import REGIMES
from .raycast import ViewRender, render_view, render_views
from .rigs import RIGS, SIZES, RigLayout, SizeSpec, make_rig, size_spec
from .world import SCENES, SceneObject, SyntheticWorld, build_world

__all__ = [
    "REGIMES", "RIGS", "SCENES", "SIZES", "RigLayout", "SceneObject", "SizeSpec",
    "SyntheticWorld", "ViewRender", "build_world", "generate_synthetic", "make_rig",
    "render_view", "render_views", "sample_points", "size_spec", "synthetic_scene_dir",
]
