"""The Gaussians of a stored run as 3DGS PLY files (`moegs-bench export`): an expert's model,
or the fused model of a router's gates, evaluated at frames of the scene it was trained on.

A run is named by its folder, or by `<dataset>/<scene>/<method>/<variant>[/seed<k>]` under a
run store. The scene (for the frames' times) is found under `<store>/scenes` or named; it must
be the scene the run was trained on: its fingerprint must reproduce the run's content key.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..data.scene import PreparedScene, is_prepared_scene, read_scene
from ..errors import ConfigError, MoegsError
from ..experts.registry import available_experts, split_label
from ..experts.segments import load_expert
from ..moe.responsibility import METHOD as FUSED
from ..moe.responsibility import Responsibilities, fused_gaussians
from ..progress import Progress
from ..render.gaussians import Gaussians
from ..render.ply import write_ply
from .store import (
    CHECKPOINT_DIR,
    CONFIG_FILE,
    DONE_FILE,
    Run,
    RunId,
    RunStoreError,
    content_key,
    key_code,
    scene_fingerprint,
)

PLY_DIR = "ply"  # default output folder inside the run folder
SCENES_DIR = "scenes"  # where `run` prepares synthetic scenes inside a store (its --data-dir default)


@dataclass
class ExportSource:
    """What a run exports: the run, its store root, the scene it was trained on, and
    gaussians_at(t) -> the model's Gaussians at scene time t (detached)."""

    run: Run
    root: Path
    scene: PreparedScene
    gaussians_at: Callable[[float], Gaussians]

    @property
    def times(self) -> np.ndarray:
        return self.scene.times


def exportable() -> str:
    """The methods whose runs hold Gaussians, for error messages."""
    return f"expert runs ({', '.join(available_experts())}) and the fused model ({FUSED})"


def resolve_run(spec: str | Path, runs_dir: str | Path, seed: int = 0) -> tuple[Run, Path]:
    """(the completed run, its store root) named by `spec`: a run folder, or
    `<dataset>/<scene>/<method>/<variant>[/seed<k>]` under `runs_dir` (seed<seed> by default)."""
    path = Path(spec)
    if not (path / CONFIG_FILE).is_file():
        path = Path(runs_dir) / spec
        if len(Path(spec).parts) == 4:
            path = path / f"seed{int(seed)}"
    if not (path / CONFIG_FILE).is_file():
        raise ConfigError(f"RUN {spec}: no run folder there or under --runs {runs_dir} (a run folder, or "
                          "<dataset>/<scene>/<method>/<variant>[/seed<k>])")
    if not (path / DONE_FILE).is_file():
        raise ConfigError(f"RUN {spec}: the run in {path} is not complete (no {DONE_FILE})")
    try:
        run_id = RunId(**json.loads((path / CONFIG_FILE).read_text())["run"])
    except (ValueError, KeyError, TypeError) as exc:
        raise RunStoreError(f"{path / CONFIG_FILE}: run: expected the run's identity ({exc})") from None
    path = path.resolve()
    if len(path.parents) <= len(run_id.relpath.parts):
        raise RunStoreError(f"{path}: a run folder lies at <store>/{run_id.relpath}")
    return Run(path, run_id), path.parents[len(run_id.relpath.parts) - 1]


def trained_on(run: Run, scene_root: Path) -> bool:
    """Whether `run` was trained on the prepared scene at `scene_root`: its stored config with
    that scene's fingerprint and the run's code fingerprint gives the run's content key."""
    cfg = run.load_config()
    code = key_code(cfg)  # the code fingerprint its key covers
    return content_key(cfg.get("config", {}), scene_fingerprint(scene_root), code) == cfg.get("key")


def find_scene(run: Run, root: Path, scene: str | Path | None = None) -> PreparedScene:
    """The prepared scene `run` was trained on: `scene` (checked), else the one under
    `<root>/scenes` with the run's dataset, name and fingerprint."""
    rid = run.run_id
    if scene is not None:
        if not is_prepared_scene(scene):
            raise ConfigError(f"--scene {scene}: not a prepared scene folder (no scene.json)")
        if not trained_on(run, Path(scene)):
            raise ConfigError(f"--scene {scene}: not the scene run {rid.relpath} was trained on (its fingerprint "
                              "does not reproduce the run's content key)")
        return read_scene(scene, check_files=False)
    base = root / SCENES_DIR
    for path in sorted(base.rglob("scene.json")) if base.is_dir() else []:
        try:
            candidate = read_scene(path.parent, check_files=False)
            if (candidate.dataset, candidate.name) == (rid.dataset, rid.scene) and trained_on(run, path.parent):
                return candidate
        except MoegsError:  # a damaged scene elsewhere in the folder is not this run's
            continue
    raise ConfigError(f"--scene: the scene run {rid.relpath} was trained on is not under {base}; "
                      "name its prepared folder with --scene PATH")


def _expert_run(root: Path, rid: RunId, label: str, key: str) -> Run:
    """The completed run of expert `label` with content key `key` (any variant and seed)."""
    name, _ = split_label(label)
    for cfg in sorted((root / rid.dataset / rid.scene / name).glob(f"*/seed*/{CONFIG_FILE}")):
        run = Run(cfg.parent, RunId(rid.dataset, rid.scene, name, cfg.parent.parent.name, int(cfg.parent.name[4:])))
        if run.is_complete and run.load_config().get("key") == key:
            return run
    raise RunStoreError(f"{root / rid.dataset / rid.scene / name}: no completed run of expert {label!r} with key "
                        f"{key} (the fused model's experts were retrained or removed)")


def _checkpoint(run: Run, name: str) -> Path:
    path = run.dir / CHECKPOINT_DIR / name
    if not path.is_file():
        raise RunStoreError(f"{path}: file is missing")
    return path


def _fused_experts(run: Run, root: Path) -> dict[str, Run]:
    """label -> expert run of a fused run's mixture (its router run's experts, by their keys), in
    the pool's order (harness.MixtureInputs sorts the experts by label)."""
    cfg, rid = run.load_config().get("config", {}), run.run_id
    try:
        router_id = RunId(rid.dataset, rid.scene, cfg["router"], rid.variant, rid.seed)
        router_run = Run(root / router_id.relpath, router_id)
        if router_run.load_config().get("key") != cfg["router_key"]:
            raise RunStoreError(f"{router_run.dir}: the router run was retrained since the fused model was made")
        expert_keys = router_run.load_config()["config"]["experts"]
    except (KeyError, TypeError) as exc:
        raise RunStoreError(f"{run.dir / CONFIG_FILE}: config: no router or experts recorded ({exc})") from None
    return {label: _expert_run(root, rid, label, expert_keys[label]) for label in sorted(expert_keys)}


def _fused_model(run: Run, experts: dict[str, Run], device: torch.device) -> Callable[[float], Gaussians]:
    """gaussians_at(t) of a fused run: its experts' Gaussians with their responsibilities,
    combined as `moe.responsibility.fused_gaussians` (Eq. 15)."""
    models = [load_expert(_checkpoint(r, "model.pt"), device).eval() for r in experts.values()]
    state = torch.load(_checkpoint(run, "responsibilities.pt"), map_location="cpu", weights_only=True)
    resp = Responsibilities.from_state(state, device)

    def gaussians_at(t: float) -> Gaussians:
        sets = [e.gaussians_at(t) for e in models]
        for label, g, r in zip(experts, sets, resp.values, strict=True):
            if len(g) != len(r):
                raise RunStoreError(f"{run.dir}: expert {label!r} has {len(g)} Gaussians at t={t:.4f} but "
                                    f"{len(r)} responsibilities")
        return fused_gaussians(sets, resp.values)

    return gaussians_at


def load_source(run: Run, root: Path, device: torch.device, scene: str | Path | None = None) -> ExportSource:
    """What `run` exports (an expert's model or the fused model), on `device`."""
    method = run.run_id.method
    if method == FUSED:
        experts = _fused_experts(run, root)
        # checked through an expert's run: its key and recorded code version are taken together,
        # a mixture's key uses the code of when the mixture began
        prepared = find_scene(next(iter(experts.values())), root, scene)
        return ExportSource(run, root, prepared, _fused_model(run, experts, device))
    if method not in available_experts() and not (run.dir / CHECKPOINT_DIR / "model.pt").is_file():
        raise ConfigError(f"RUN {run.run_id.relpath}: method {method!r} holds no Gaussians of its own (a router or "
                          f"baseline blends its experts' images); exportable: {exportable()}")
    prepared = find_scene(run, root, scene)
    expert = load_expert(_checkpoint(run, "model.pt"), device).eval()
    return ExportSource(run, root, prepared, expert.gaussians_at)


def parse_frames(frame: int | None, frames: str | None, count: int) -> list[int]:
    """The frame indices of `--frame T` or `--frames all` in a scene of `count` frames."""
    if (frame is None) == (frames is None):
        raise ConfigError("--frame/--frames: give one of them (--frame T or --frames all)")
    if frames is not None:
        if frames != "all":
            raise ConfigError(f"--frames {frames}: expected 'all' (or use --frame T for one frame)")
        return list(range(count))
    if not 0 <= frame < count:
        raise ConfigError(f"--frame {frame}: out of range; the scene has frames 0..{count - 1}")
    return [frame]


def frame_name(frame: int) -> str:
    return f"frame_{frame:04d}.ply"


def export_frames(source: ExportSource, frames: list[int], ply: str | Path | None = None,
                  sh_degree: int | None = None, progress: Progress | None = None) -> list[Path]:
    """Write the Gaussians at each frame's time as a 3DGS PLY file. ply: a `.ply` file for a
    single frame, else the folder of frame_0000.ply ... (default `<run>/ply/`). Returns the paths."""
    folder = Path(ply) if ply is not None else source.run.dir / PLY_DIR
    single = ply is not None and len(frames) == 1 and folder.suffix.lower() == ".ply"
    out = []
    for done, f in enumerate(frames, 1):
        with torch.no_grad():
            g = source.gaussians_at(float(source.times[f]))
        out.append(write_ply(g, folder if single else folder / frame_name(f), sh_degree=sh_degree))
        if progress is not None:
            progress(done, len(frames), {"frame": f})
    return out


def export_run(spec: str | Path, runs_dir: str | Path = "runs", *, frame: int | None = None,
               frames: str | None = None, ply: str | Path | None = None, scene: str | Path | None = None,
               seed: int = 0, device: torch.device | None = None, sh_degree: int | None = None,
               progress: Progress | None = None) -> list[Path]:
    """`moegs-bench export`: resolve the run, load its model, write the PLY file(s)."""
    run, root = resolve_run(spec, runs_dir, seed)
    source = load_source(run, root, device or torch.device("cpu"), scene)
    return export_frames(source, parse_frames(frame, frames, len(source.times)), ply, sh_degree, progress)


__all__ = ["ExportSource", "PLY_DIR", "exportable", "resolve_run", "trained_on", "find_scene", "load_source",
           "parse_frames", "frame_name", "export_frames", "export_run"]
