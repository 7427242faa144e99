"""Analyses of stored runs (MoE-GS App. D and E): multi-view depth consistency and error
against the true depth for every method that renders depth, and motion trajectories of each
expert's Gaussians. Each is stored with the run it analyses (`Run.save_analysis`), reported as
that run's metrics, and reused while its settings are unchanged."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from ..data.load import SceneData
from ..eval.depth import evaluate_depth
from ..eval.trajectories import track_trajectories
from ..experts.segments import SegmentedExpert, load_expert
from ..experts.views import expert_depth_renderer
from ..io import save_npz
from ..moe.baselines import BASELINES
from ..moe.responsibility import METHOD as FUSED
from ..moe.responsibility import Responsibilities, fused_depth
from ..moe.train_router import load_router, router_depth_renderer
from ..progress import ProgressFactory, Tally, task
from .harness import MixtureInputs, StoredRun

ANALYSES = ("fusion", "mdc", "trajectories")


@dataclass(frozen=True)
class AnalysisSettings:
    """mdc_frames: MDC over this many evenly spaced frames (None: all); mdc_pairs: at most this
    many ordered camera pairs per frame (None: all); trajectory_gaussians: Gaussians tracked
    per expert; seed: of the subsamples."""

    mdc_frames: int | None = None
    mdc_pairs: int | None = None
    trajectory_gaussians: int = 2000
    seed: int = 0


def _depth_renderer(run: StoredRun, data: SceneData, inputs: MixtureInputs | None):
    """The method's depth renderer, or None for a method without depth (a baseline blend)."""
    method = run.run.run_id.method
    if method in BASELINES:
        return None
    if inputs is not None and method == FUSED:
        state = torch.load(run.run.checkpoint_path("responsibilities.pt"), map_location="cpu", weights_only=False)
        return fused_depth(inputs.pool, Responsibilities.from_state(state, data.device))
    if inputs is not None and method.startswith("moe-"):
        router = load_router(run.run.checkpoint_path("router.pt"), data.device)
        return router_depth_renderer(router, inputs.pool)
    return expert_depth_renderer(load_expert(run.run.checkpoint_path("model.pt"), data.device), data)


def run_mdc(expert_runs: Sequence[StoredRun], mixture_runs: Sequence[StoredRun], data: SceneData,
            settings: AnalysisSettings, progress: ProgressFactory | None = None) -> None:
    """MDC (Eq. 16) and depth error of every expert, router mixture and fused model, stored
    with each run as analysis `mdc` (baselines blend images, not depth: skipped)."""
    inputs = MixtureInputs(expert_runs, data) if len(expert_runs) >= 2 and mixture_runs else None
    config = {"frames": settings.mdc_frames, "pairs": settings.mdc_pairs, "seed": settings.seed}
    runs = [*expert_runs, *mixture_runs]
    tally = Tally(task(progress, "mdc"), len(runs))
    for run in runs:
        if run.run.load_analysis("mdc", config) is None and (render := _depth_renderer(run, data, inputs)):
            metrics = evaluate_depth(render, data, settings.mdc_frames, settings.mdc_pairs, settings.seed)
            notes = {} if "mdc" in metrics else {"mdc": "unavailable: no two cameras see one frame (monocular)"}
            run.run.save_analysis("mdc", metrics, config, notes)
        tally.advance()


def first_test_view(data: SceneData) -> dict[str, np.ndarray]:
    """The first test view's camera, for drawing tracks in it (report figures): view_camera
    (name), view_K [3,3], view_w2c [4,4] (world-to-camera, OpenCV), view_size [W,H]; {} when
    the scene has no test view."""
    views = data.splits.get("test")
    if views is None or len(views) == 0:
        return {}
    c = int(views.cams[0])
    return {"view_camera": np.array(data.scene.cameras[c].name), "view_K": data.Ks[c].cpu().numpy(),
            "view_w2c": data.viewmats[c].cpu().numpy(), "view_size": np.array([data.width, data.height])}


def run_trajectories(expert_runs: Sequence[StoredRun], data: SceneData, settings: AnalysisSettings,
                     progress: ProgressFactory | None = None) -> None:
    """Tracks of a sample of each expert's Gaussians over every frame, their statistics (per
    motion regime and against the true object motion on synthetic scenes), stored with each
    expert run as analysis `trajectories` (and the tracks with the first test view's camera,
    analysis/trajectories.npz)."""
    config = {"gaussians": settings.trajectory_gaussians, "seed": settings.seed}
    rel = data.scene.gt.get("trajectories")
    truth = data.scene.root / rel if rel else None  # the synthetic scenes' object motion
    tally = Tally(task(progress, "trajectories"), len(expert_runs))
    for run in expert_runs:
        if run.run.load_analysis("trajectories", config) is None:
            expert = load_expert(run.run.checkpoint_path("model.pt"), data.device)
            if isinstance(expert, SegmentedExpert):  # its Gaussians do not persist across segments
                run.run.save_analysis("trajectories", {}, config,
                                      {"traj": "unavailable: the model is one per temporal segment"})
            else:
                with torch.no_grad():
                    result = track_trajectories(expert.gaussians_at, data.times, truth=truth,
                                                n=settings.trajectory_gaussians, seed=settings.seed)
                save_npz(run.run.dir / "analysis" / "trajectories.npz", **result.arrays(),
                         **first_test_view(data))
                run.run.save_analysis("trajectories", result.metrics, config, result.notes)
        tally.advance()


__all__ = ["ANALYSES", "AnalysisSettings", "run_mdc", "run_trajectories", "first_test_view"]
