"""Sparse initial point clouds with pycolmap, from known cameras (REFERENCE.md §3, §6).

Per frame of a multi-view scene: the images of all training cameras go into a fresh database
with their known PINHOLE intrinsics, SIFT features are extracted on the CPU, matched
exhaustively, and points are triangulated with the poses held fixed (COLMAP's
point_triangulator, as the original pre-processing scripts run it). Outputs, under
`<scene>/points/`:

    frame_<f:05d>.npz   xyz [P,3] float32, rgb [P,3] uint8   (Ex4DGS: frame 0; STG: all)
    merged.npz          union over frames: xyz, rgb, time [P] float32, frame [P] int32 (STG)
    downsampled.npz     voxel-downsampled union: xyz, rgb   (4DGaussians, E-D3DGS)

Frames run in parallel worker processes; each frame's cloud is written atomically as soon as
it is done, so an interrupted run resumes where it stopped (a worker left behind by a killed
parent writes nothing). A monocular scene (one view per frame) is triangulated once from its
training views together.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool
from dataclasses import asdict, dataclass, replace
from multiprocessing import get_context
from pathlib import Path
from typing import Annotated

import numpy as np

from ..config import NonNegativeInt, PositiveFloat, PositiveInt, Range
from ..errors import MoegsError
from ..io import atomic_write_json, save_npz
from .scene import Camera, PreparedScene

POINTS_DIR = "points"
CONFIG_FILE = "colmap.json"


@dataclass(frozen=True)
class ColmapConfig:
    """pycolmap settings. Defaults are COLMAP's own (the original scripts change none), except
    the downsampling rule, which follows 4DGaussians' downsample_point.py."""

    max_num_features: PositiveInt = 8192  # SIFT features per image (COLMAP default)
    max_image_size: PositiveInt = 3200  # longer images are downscaled for SIFT (COLMAP default)
    min_angle: Annotated[float, Range(0, 180)] = 1.5  # degrees, triangulation (COLMAP default)
    ignore_two_view_tracks: bool = True  # COLMAP default; False gives more (noisier) points
    max_views: PositiveInt = 200  # monocular scenes: at most this many training views (4DGaussians)
    voxel_size: PositiveFloat = 0.02  # downsampling: first voxel edge, world units (4DGaussians)
    voxel_step: PositiveFloat = 0.01  # grown by this until at most max_points remain (4DGaussians)
    max_points: PositiveInt = 40000
    workers: NonNegativeInt = 0  # worker processes; 0 = one per CPU core (at most one per frame)
    seed: NonNegativeInt = 0

    def triangulation_key(self) -> dict:
        """The settings a cached frame cloud depends on."""
        keys = ("max_num_features", "max_image_size", "min_angle", "ignore_two_view_tracks", "max_views", "seed")
        return {k: getattr(self, k) for k in keys}


@dataclass
class FrameCloud:
    """Result of one triangulation: xyz [P,3] float32, rgb [P,3] uint8, the mean time of the
    views observing each point [P] float32, and the wall time in seconds."""

    xyz: np.ndarray
    rgb: np.ndarray
    time: np.ndarray
    seconds: float


# -- one triangulation --------------------------------------------------------------------------
def triangulate_views(
    image_root: Path, names: Sequence[str], cameras: Sequence[Camera], times: Sequence[float],
    work_dir: Path, config: ColmapConfig = ColmapConfig(), threads: int = 1,
) -> FrameCloud:
    """Triangulate points seen by the images `names` (paths relative to `image_root`) whose
    cameras are known exactly. The cameras' sizes must be the images' sizes.

    Returns the points with their colours; an image set without matches gives P = 0.
    """
    import pycolmap

    start = time.perf_counter()
    pycolmap.logging.minloglevel = 2  # keep COLMAP's per-image INFO lines off the console
    work_dir.mkdir(parents=True, exist_ok=True)
    db_path = work_dir / "database.db"
    if db_path.exists():
        db_path.unlink()
    by_name = dict(zip(names, cameras, strict=True))
    time_of = dict(zip(names, times, strict=True))

    reader = pycolmap.ImageReaderOptions()
    reader.camera_model = "PINHOLE"
    extraction = pycolmap.FeatureExtractionOptions()
    extraction.num_threads = threads
    extraction.use_gpu = False
    extraction.max_image_size = config.max_image_size
    extraction.sift.max_num_features = config.max_num_features
    pycolmap.set_random_seed(config.seed)
    pycolmap.extract_features(db_path, image_root, image_names=list(names),
                              camera_mode=pycolmap.CameraMode.PER_IMAGE, reader_options=reader,
                              extraction_options=extraction, device=pycolmap.Device.cpu)
    _set_known_intrinsics(db_path, by_name)
    matching = pycolmap.FeatureMatchingOptions()
    matching.num_threads = threads
    matching.use_gpu = False
    pycolmap.match_exhaustive(db_path, matching_options=matching, device=pycolmap.Device.cpu)

    rec, time_by_id = _known_pose_reconstruction(db_path, by_name, time_of)
    options = pycolmap.IncrementalPipelineOptions()
    options.num_threads = threads
    options.triangulation.min_angle = config.min_angle
    options.triangulation.ignore_two_view_tracks = config.ignore_two_view_tracks
    out_dir = work_dir / "sparse"
    out_dir.mkdir(exist_ok=True)
    rec = pycolmap.triangulate_points(rec, db_path, image_root, out_dir, options=options)
    points = list(rec.points3D.values())
    xyz = np.array([p.xyz for p in points], dtype=np.float32).reshape(-1, 3)
    rgb = np.array([p.color for p in points], dtype=np.uint8).reshape(-1, 3)
    ptime = np.array([np.mean([time_by_id[e.image_id] for e in p.track.elements]) for p in points],
                     dtype=np.float32)
    return FrameCloud(xyz, rgb, ptime, time.perf_counter() - start)


def _set_known_intrinsics(db_path: Path, by_name: dict[str, Camera]) -> None:
    """Replace the guessed intrinsics that feature extraction wrote with the known ones."""
    import pycolmap

    db = pycolmap.Database.open(db_path)
    try:
        for image in db.read_all_images():
            cam = by_name[image.name]
            record = db.read_camera(image.camera_id)
            if (record.width, record.height) != (cam.width, cam.height):
                raise MoegsError(f"{image.name}: image is {record.width}x{record.height}, "
                                 f"camera {cam.name} is {cam.width}x{cam.height}")
            K = cam.K
            record.params = [K[0, 0], K[1, 1], K[0, 2], K[1, 2]]
            db.update_camera(record)
    finally:
        db.close()


def _known_pose_reconstruction(db_path: Path, by_name: dict[str, Camera], time_of: dict[str, float]):
    """A pycolmap Reconstruction with the database's cameras, rigs, frames and images, every
    frame posed at its known world-to-camera transform (ids are the database's)."""
    import pycolmap

    db = pycolmap.Database.open(db_path)
    try:
        rec = pycolmap.Reconstruction()
        for cam in db.read_all_cameras():
            rec.add_camera(cam)
        for rig in db.read_all_rigs():
            rec.add_rig(rig)
        images = db.read_all_images()
        frames = {f.frame_id: f for f in db.read_all_frames()}
        for image in images:
            w2c = by_name[image.name].w2c
            frame = frames[image.frame_id]
            frame.rig_from_world = pycolmap.Rigid3d(pycolmap.Rotation3d(w2c[:3, :3]), w2c[:3, 3])
            rec.add_frame(frame)
        for image in images:
            rec.add_image(image)
    finally:
        db.close()
    return rec, {im.image_id: float(time_of[im.name]) for im in images}


# -- many frames, in worker processes -------------------------------------------------------------
@dataclass(frozen=True)
class FrameJob:
    """One frame to triangulate: image paths relative to `root`, cameras as JSON dicts."""

    frame: int
    root: str
    names: tuple[str, ...]
    cameras: tuple[dict, ...]
    times: tuple[float, ...]
    out: str
    work_dir: str
    config: dict
    threads: int
    parent: int = 0  # pid of the process that asked for it when run in a worker, else 0


def _orphaned(job: FrameJob) -> bool:
    """A worker whose parent died (kill -9) must not write: a re-run may already have removed
    this scene's clouds as stale, and a late cloud from old inputs would read as cached."""
    return job.parent != 0 and os.getppid() != job.parent


def run_frame_job(job: FrameJob) -> tuple[int, int, float]:
    """Triangulate one frame and write its cloud atomically. Returns (frame, points, seconds);
    points is -1 when nothing was written because the asking process is gone."""
    if _orphaned(job):
        return job.frame, -1, 0.0
    cams = [Camera(c["name"], np.asarray(c["K"]), np.asarray(c["w2c"]), c["width"], c["height"])
            for c in job.cameras]
    work = Path(job.work_dir)
    try:
        cloud = triangulate_views(Path(job.root), job.names, cams, job.times, work,
                                  ColmapConfig(**job.config), job.threads)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    if _orphaned(job):
        return job.frame, -1, 0.0
    save_npz(job.out, xyz=cloud.xyz, rgb=cloud.rgb, time=cloud.time)
    return job.frame, len(cloud.xyz), cloud.seconds


def frame_cloud_path(frame: int) -> str:
    return f"{POINTS_DIR}/frame_{frame:05d}.npz"


def triangulate_frames(
    scene: PreparedScene, frames: Sequence[int], config: ColmapConfig = ColmapConfig(),
    on_done: Callable[[int, int, float], None] | None = None,
) -> dict[int, str]:
    """Per-frame clouds of a multi-view scene for scene frame indices `frames`, written to
    points/frame_<f>.npz (cached: frames whose file exists are not run again).

    Uses the images of the training cameras. on_done(frame, points, seconds) is called as each
    frame finishes. Returns {frame: path relative to the scene root}.
    """
    root = Path(scene.root)
    _reset_cache_if_changed(root, config)
    todo, jobs = {}, []
    work_base = Path(tempfile.mkdtemp(prefix=".colmap-", dir=root))
    try:
        for f in frames:
            rel = frame_cloud_path(f)
            todo[f] = rel
            if (root / rel).is_file():
                continue
            names, cams = [], []
            for cam_name in scene.train_cameras:
                rel_img = scene.images[cam_name][f]
                if rel_img is not None:
                    names.append(rel_img)
                    cams.append(scene.camera(cam_name).to_json())
            if len(names) < 2:
                raise MoegsError(f"{root}: frame {f} has {len(names)} training view(s); triangulation needs 2")
            jobs.append(FrameJob(f, str(root), tuple(names), tuple(cams), (float(scene.times[f]),) * len(names),
                                 str(root / rel), str(work_base / f"frame_{f:05d}"),
                                 config.triangulation_key(), 1))
        workers, threads = _pool_shape(len(jobs), config.workers)
        _run_jobs([replace(job, threads=threads) for job in jobs], workers, on_done)
    finally:
        shutil.rmtree(work_base, ignore_errors=True)
    return todo


def _run_jobs(jobs: list[FrameJob], workers: int, on_done) -> None:
    if workers <= 1 or len(jobs) <= 1:
        for job in jobs:
            result = run_frame_job(job)
            if on_done:
                on_done(*result)
        return
    # spawn: the parent may hold threads (torch, decoders); forking those is unsafe
    with ProcessPoolExecutor(max_workers=workers, mp_context=get_context("spawn")) as pool:
        futures = [pool.submit(run_frame_job, replace(job, parent=os.getpid())) for job in jobs]
        try:
            for fut in as_completed(futures):
                result = fut.result()
                if on_done:
                    on_done(*result)
        except BrokenProcessPool:
            raise MoegsError("a COLMAP worker process died (out of memory?); run again to resume, "
                             "or use fewer workers") from None
        except BaseException:
            for fut in futures:
                fut.cancel()
            raise


def _pool_shape(num_jobs: int, workers: int) -> tuple[int, int]:
    """(worker processes, threads per worker) for `num_jobs` frames on this machine."""
    cpus = os.cpu_count() or 1
    workers = workers if workers > 0 else cpus
    workers = max(1, min(workers, num_jobs))
    return workers, max(1, cpus // workers)


def _reset_cache_if_changed(root: Path, config: ColmapConfig, extra: dict | None = None) -> None:
    """Drop cached frame clouds made with other triangulation settings (or other `extra`)."""
    path = root / POINTS_DIR / CONFIG_FILE
    key = {**config.triangulation_key(), **(extra or {})}
    if path.is_file():
        try:
            same = json.loads(path.read_text()) == key
        except (OSError, json.JSONDecodeError):
            same = False
        if not same:
            for p in (root / POINTS_DIR).glob("frame_*.npz"):
                p.unlink()
    atomic_write_json(path, key)


def triangulate_monocular(
    scene: PreparedScene, frames: Sequence[int], config: ColmapConfig = ColmapConfig(),
) -> FrameCloud:
    """One cloud from the training views of a monocular scene at scene frame indices `frames`:
    at most config.max_views of them, every k-th with the smallest k that fits (4DGaussians'
    script subsamples the same way)."""
    wanted = set(frames)
    views = [(f, c) for c in scene.train_cameras for f, p in enumerate(scene.images[c]) if p is not None and f in wanted]
    views.sort()
    step = 1 if len(views) <= config.max_views else -(-len(views) // config.max_views)
    views = views[::step]
    if len(views) < 2:
        raise MoegsError(f"{scene.root}: {len(views)} training view(s) selected; triangulation needs 2")
    names = [scene.images[c][f] for f, c in views]
    cams = [scene.camera(c) for _, c in views]
    times = [float(scene.times[f]) for f, _ in views]
    _, threads = _pool_shape(1, 1)
    work = Path(tempfile.mkdtemp(prefix=".colmap-", dir=scene.root))
    try:
        return triangulate_views(Path(scene.root), names, cams, times, work, config, threads)
    finally:
        shutil.rmtree(work, ignore_errors=True)


# -- merging and downsampling ----------------------------------------------------------------------
def merge_frame_clouds(root: Path, clouds: dict[int, str], times: np.ndarray) -> dict[str, np.ndarray]:
    """Union of per-frame clouds with time tags: xyz, rgb, time [P] (the frame's time), frame [P]."""
    parts = {"xyz": [], "rgb": [], "time": [], "frame": []}
    for f in sorted(clouds):
        with np.load(root / clouds[f]) as z:
            xyz, rgb = z["xyz"], z["rgb"]
        parts["xyz"].append(xyz.astype(np.float32))
        parts["rgb"].append(rgb.astype(np.uint8))
        parts["time"].append(np.full(len(xyz), times[f], np.float32))
        parts["frame"].append(np.full(len(xyz), f, np.int32))
    dtypes = {"xyz": np.float32, "rgb": np.uint8, "time": np.float32, "frame": np.int32}
    out = {}
    for k, v in parts.items():
        empty = np.zeros((0, 3) if k in ("xyz", "rgb") else (0,), dtypes[k])
        out[k] = np.concatenate(v) if v else empty
    return out


def voxel_average(xyz: np.ndarray, rgb: np.ndarray, voxel: float) -> tuple[np.ndarray, np.ndarray]:
    """One point per occupied voxel of edge `voxel`: the mean position and colour of its points."""
    if len(xyz) == 0:
        return xyz, rgb
    keys = np.floor((xyz - xyz.min(0)) / voxel).astype(np.int64)
    _, inverse, counts = np.unique(keys, axis=0, return_inverse=True, return_counts=True)
    inverse = inverse.reshape(-1)
    sums = np.zeros((len(counts), 3))
    np.add.at(sums, inverse, xyz.astype(np.float64))
    csum = np.zeros((len(counts), 3))
    np.add.at(csum, inverse, rgb.astype(np.float64))
    return (sums / counts[:, None]).astype(np.float32), np.round(csum / counts[:, None]).astype(np.uint8)


def downsample(xyz: np.ndarray, rgb: np.ndarray, config: ColmapConfig = ColmapConfig()) -> tuple[np.ndarray, np.ndarray]:
    """4DGaussians' rule: while more than max_points remain, voxel-average with edge v, then
    grow v by voxel_step (starting at voxel_size)."""
    voxel = config.voxel_size
    while len(xyz) > config.max_points:
        xyz, rgb = voxel_average(xyz, rgb, voxel)
        voxel += config.voxel_step
    return xyz.astype(np.float32), rgb.astype(np.uint8)


def write_point_clouds(
    scene: PreparedScene, frames: Sequence[int], config: ColmapConfig = ColmapConfig(),
    on_done: Callable[[int, int, float], None] | None = None,
) -> dict:
    """Triangulate `frames` (scene frame indices) and write every cloud; returns the
    `scene.points` entry {"frames": {str(f): path}, "merged": path, "downsampled": path}."""
    root = Path(scene.root)
    for stale in root.glob(".colmap-*"):  # work folders of an earlier, killed run
        shutil.rmtree(stale, ignore_errors=True)
    if is_monocular(scene):
        _reset_cache_if_changed(root, config, {"views_of_frames": [int(f) for f in frames]})
        if not (root / frame_cloud_path(0)).is_file():
            cloud = triangulate_monocular(scene, frames, config)
            save_npz(root / frame_cloud_path(0), xyz=cloud.xyz, rgb=cloud.rgb, time=cloud.time)
            if on_done:
                on_done(0, len(cloud.xyz), cloud.seconds)
        clouds = {0: frame_cloud_path(0)}
        with np.load(root / frame_cloud_path(0)) as z:
            merged = {"xyz": z["xyz"], "rgb": z["rgb"], "time": z["time"],
                      "frame": _nearest_frame(z["time"], scene.times)}
    else:
        clouds = triangulate_frames(scene, frames, config, on_done)
        merged = merge_frame_clouds(root, clouds, scene.times)
    save_npz(root / POINTS_DIR / "merged.npz", **merged)
    xyz, rgb = downsample(merged["xyz"], merged["rgb"], config)
    save_npz(root / POINTS_DIR / "downsampled.npz", xyz=xyz, rgb=rgb)
    return {"frames": {str(f): p for f, p in sorted(clouds.items())},
            "merged": f"{POINTS_DIR}/merged.npz", "downsampled": f"{POINTS_DIR}/downsampled.npz",
            "colmap": {**asdict(config), "monocular": is_monocular(scene)}}


def is_monocular(scene: PreparedScene) -> bool:
    """True when no frame has two training views (one moving camera, HyperNeRF-style)."""
    per_frame = np.zeros(scene.num_frames, int)
    for cam in scene.train_cameras:
        per_frame += np.array([p is not None for p in scene.images[cam]], int)
    return int(per_frame.max(initial=0)) < 2


def _nearest_frame(t: np.ndarray, times: np.ndarray) -> np.ndarray:
    if len(t) == 0:
        return np.zeros(0, np.int32)
    return np.abs(t[:, None] - times[None, :]).argmin(1).astype(np.int32)
