"""The steps of preparing one raw scene: reuse, resume or redo each (docs/datasets.md).

    ScenePlan                                  one prepared scene: its metadata and step keys
    run_scene_plans(raw, plans, ...)           every segment of one raw scene, frames decoded once

Steps per prepared scene, each recorded in prepare.json (`prepare_record`):
    cameras          camera files -> the cameras, times and split in scene.json
    frames/<camera>  that camera's source files -> frames/<camera>/*.png
    points           the training cameras and their frames' PNGs -> points/ (COLMAP)
A step is redone when its inputs or settings changed, and "points" reads the frames' outputs
(a digest of the PNGs), so new poses or new images give new points, while a frames step
redone to identical PNGs leaves the points as they are.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ..progress import ProgressFactory, Tally, task
from .colmap_init import (
    POINTS_DIR,
    ColmapConfig,
    frame_cloud_path,
    is_monocular,
    write_point_clouds,
)
from .extract import extract_images
from .fingerprints import digest, files_digest, value_input
from .formats import RawScene
from .prepare_record import Decision, StepKey, StepRecords
from .scene import SCENE_FILE, PreparedScene, write_scene

Log = Callable[[str], None]
CAMERAS_STEP, POINTS_STEP = "cameras", "points"
FRAMES_VERSION = 1  # bump when extraction changes its pixels (decoder use, resize filter)
POINTS_VERSION = 1  # bump when the point clouds change for the same images and settings


def frames_step(camera: str) -> str:
    return f"frames/{camera}"


@dataclass
class ScenePlan:
    """One prepared scene to make. scene: its metadata (points filled in by the run);
    cameras, frames[camera]: the keys of those steps; colmap_frames: scene frame indices to
    triangulate (None: no COLMAP); info: what prepare.json names as the scene."""

    scene: PreparedScene
    records: StepRecords
    cameras: StepKey
    frames: dict[str, StepKey]
    colmap_frames: list[int] | None
    colmap_config: ColmapConfig
    info: dict

    @property
    def root(self) -> Path:
        return Path(self.scene.root)

    def image_rels(self, camera: str) -> list[str]:
        return [rel for rel in self.scene.images[camera] if rel is not None]

    def save(self) -> None:
        self.records.save(self.info)


# -- decisions -----------------------------------------------------------------------------------
def _damaged(root: Path, recorded: dict, rels: list[str]) -> list[str]:
    """Outputs that are missing or whose size is not the recorded one."""
    out = []
    for rel in rels:
        try:
            size = (root / rel).stat().st_size
        except FileNotFoundError:
            out.append(rel)
            continue
        if recorded.get(rel) != size:
            out.append(rel)
    return out


def _frames_decisions(plan: ScenePlan) -> dict[str, Decision]:
    out = {}
    for cam, key in plan.frames.items():
        step = frames_step(cam)
        decision = plan.records.decide(step, key)
        if decision.action == "reuse":
            bad = _damaged(plan.root, plan.records.outputs(step).get("files") or {}, plan.image_rels(cam))
            if bad:
                decision = Decision("fill", f"{len(bad)} image(s) missing or changed on disk, e.g. {bad[0]}")
        out[cam] = decision
    return out


def _points_key(plan: ScenePlan, frame_digests: dict[str, str]) -> StepKey:
    """The points step depends on the training cameras (poses, intrinsics, times) and on the
    content of their frames' PNGs."""
    scene, config = plan.scene, plan.colmap_config
    cameras = {"train": [scene.camera(c).to_json() for c in scene.train_cameras],
               "times": [float(t) for t in scene.times]}
    inputs = {"cameras": value_input(cameras, "cameras")}
    inputs.update({frames_step(c): {"kind": "output", "digest": frame_digests[c]} for c in scene.train_cameras})
    settings = {**config.triangulation_key(), "voxel_size": config.voxel_size, "voxel_step": config.voxel_step,
                "max_points": config.max_points, "version": POINTS_VERSION}
    return StepKey.of(inputs, settings)


def _points_decision(plan: ScenePlan, key: StepKey) -> Decision:
    decision = plan.records.decide(POINTS_STEP, key)
    if decision.action != "reuse":
        return decision
    outputs = plan.records.outputs(POINTS_STEP)
    if outputs.get("frames") != plan.colmap_frames:
        return Decision("update", "other frames selected (--colmap-frames)")
    files = outputs.get("files") or {}
    bad = _damaged(plan.root, files, sorted(files))
    if bad or not files:
        return Decision("update", f"{len(bad)} point file(s) missing or changed on disk")
    return decision


def _recorded_digests(plan: ScenePlan) -> dict[str, str]:
    return {cam: plan.records.outputs(frames_step(cam)).get("digest", "") for cam in plan.frames}


# -- logging -------------------------------------------------------------------------------------
def _verb(decision: Decision) -> str:
    if decision.action == "redo":
        return "make" if decision.reason == "not made yet" else "redo"
    return {"resume": "resume", "fill": "complete", "update": "update"}.get(decision.action, decision.action)


def _log_frames(log: Log, name: str, decisions: dict[str, Decision]) -> None:
    groups: dict[tuple[str, str], list[str]] = {}
    for cam, d in decisions.items():
        if d.action != "reuse":
            groups.setdefault((_verb(d), d.reason), []).append(cam)
    for (verb, reason), cams in groups.items():
        label = f"frames {cams[0]}" if len(cams) == 1 else f"frames of {len(cams)} cameras ({cams[0]}, ...)"
        log(f"{name}: {label}: {verb} ({reason})")


# -- running -------------------------------------------------------------------------------------
def _begin(plan: ScenePlan, decisions: dict[str, Decision]) -> None:
    """Before a scene's steps write: drop scene.json (a scene in work never reads as valid),
    forget the records of steps to redo and remove their outputs, then mark them started."""
    root = plan.root
    (root / SCENE_FILE).unlink(missing_ok=True)
    for stale in root.glob(".colmap-*"):  # work folders of a killed COLMAP run
        shutil.rmtree(stale, ignore_errors=True)
    redo = [cam for cam, d in decisions.items() if d.action == "redo"]
    plan.records.forget(frames_step(c) for c in redo)
    plan.save()
    for cam, d in decisions.items():
        folder = root / "frames" / cam
        if d.action == "redo":
            shutil.rmtree(folder, ignore_errors=True)
        elif d.action != "reuse":
            for tmp in folder.glob(".*.tmp"):  # half-written files of a killed run
                tmp.unlink(missing_ok=True)
            if d.action == "fill":
                recorded = plan.records.outputs(frames_step(cam)).get("files") or {}
                for rel in _damaged(root, recorded, plan.image_rels(cam)):
                    (root / rel).unlink(missing_ok=True)
    for cam in redo:
        plan.records.start(frames_step(cam), plan.frames[cam])
    plan.save()


def _finish_frames(plan: ScenePlan, decisions: dict[str, Decision]) -> None:
    """Record every frames step that wrote something as done, with its outputs' digest."""
    for cam, d in decisions.items():
        if d.action == "reuse":
            continue
        rels = plan.image_rels(cam)
        files = {rel: (plan.root / rel).stat().st_size for rel in rels}
        plan.records.finish(frames_step(cam), plan.frames[cam],
                            {"files": files, "digest": files_digest(plan.root, rels)})
    plan.save()


def _colmap(plan: ScenePlan, progress: ProgressFactory | None) -> dict:
    scene, frames = plan.scene, plan.colmap_frames or []
    monocular = is_monocular(scene)
    advance = Tally(task(progress, f"{scene.name}: COLMAP"), 1 if monocular else len(frames)).advance
    cached = 0 if monocular else sum((plan.root / frame_cloud_path(f)).is_file() for f in frames)
    advance(cached)
    return write_point_clouds(scene, frames, plan.colmap_config, on_done=lambda f, n, s: advance(1))


def _run_points(plan: ScenePlan, key: StepKey, decision: Decision, progress: ProgressFactory | None,
                log: Log) -> dict:
    """The points step: reuse its record, or (re)triangulate; returns scene.json's `points`."""
    if decision.action == "reuse":
        return plan.records.outputs(POINTS_STEP).get("entry") or {}
    log(f"{plan.scene.name}: points: {_verb(decision)} ({decision.reason})")
    if decision.action == "redo":
        plan.records.forget([POINTS_STEP])
        plan.save()
        shutil.rmtree(plan.root / POINTS_DIR, ignore_errors=True)
    if decision.action != "resume":  # update/redo: what exists was made from this key
        plan.records.start(POINTS_STEP, key)
        plan.save()
    entry = _colmap(plan, progress)
    rels = sorted({*entry["frames"].values(), entry["merged"], entry["downsampled"]})
    files = {rel: (plan.root / rel).stat().st_size for rel in rels}
    plan.records.finish(POINTS_STEP, key, {"files": files, "frames": plan.colmap_frames, "entry": entry,
                                           "digest": files_digest(plan.root, rels)})
    plan.save()
    return entry


def _scene_json_current(scene: PreparedScene) -> bool:
    path = Path(scene.root) / SCENE_FILE
    try:
        return json.loads(path.read_text()) == json.loads(json.dumps(scene.to_json()))
    except (OSError, ValueError):
        return False


def run_scene_plans(raw: RawScene, plans: list[ScenePlan], workers: int = 0,
                    progress: ProgressFactory | None = None, log: Log | None = None) -> list[PreparedScene]:
    """Make the prepared scenes `plans` of `raw`: steps whose inputs are as recorded are
    reused, interrupted ones resumed, the rest redone; scene.json is written last."""
    log = log or (lambda _: None)
    decisions = [_frames_decisions(p) for p in plans]
    busy = []
    for plan, dec in zip(plans, decisions, strict=True):
        points_busy = False
        if plan.colmap_frames is not None:
            if all(d.action == "reuse" for d in dec.values()):
                key = _points_key(plan, _recorded_digests(plan))
                points_busy = _points_decision(plan, key).action != "reuse"
            else:
                points_busy = True
        busy.append(points_busy or any(d.action != "reuse" for d in dec.values()))
        cams = plan.records.decide(CAMERAS_STEP, plan.cameras)
        if cams.action == "redo" and CAMERAS_STEP in plan.records.steps:
            log(f"{plan.scene.name}: cameras: update ({cams.reason})")
        if busy[-1]:
            _begin(plan, dec)
            _log_frames(log, plan.scene.name, dec)
    if any(busy):
        extract_images(raw, [p.scene for p, b in zip(plans, busy, strict=True) if b], workers, progress)
    for plan, dec, is_busy in zip(plans, decisions, busy, strict=True):
        if is_busy:
            _finish_frames(plan, dec)
        digests = _recorded_digests(plan)
        scene = plan.scene
        points_reused = False
        if plan.colmap_frames is not None:
            key = _points_key(plan, digests)
            decision = _points_decision(plan, key)
            points_reused = decision.action == "reuse"
            scene.points = _run_points(plan, key, decision, progress, log)
        cameras_digest = digest(scene.to_json()["cameras"])
        scene.meta["content_digest"] = digest({"cameras": cameras_digest, "frames": digests,
                                               "points": plan.records.outputs(POINTS_STEP).get("digest")
                                               if plan.colmap_frames is not None else None})
        rewrite = is_busy or not _scene_json_current(scene)
        if rewrite:
            write_scene(scene)
        plan.records.finish(CAMERAS_STEP, plan.cameras, {"digest": cameras_digest})
        plan.save()
        reused = sum(d.action == "reuse" for d in dec.values())
        points = ", points" if points_reused else ""
        if not rewrite:
            log(f"{scene.name}: up to date (reused frames of {reused} camera(s){points})")
        elif reused or points:
            log(f"{scene.name}: {SCENE_FILE} written; reused frames of {reused} camera(s){points}")
    return [p.scene for p in plans]


__all__ = ["ScenePlan", "run_scene_plans", "frames_step", "FRAMES_VERSION", "POINTS_VERSION",
           "CAMERAS_STEP", "POINTS_STEP", "Log"]
