"""Writing a synthetic scene as a prepared scene, with ground truth and initial points.

Views are rendered frame by frame; each frame's files (images, depth, labels, points) are
written atomically (a temporary file renamed), so an interrupted generation resumes at the first
incomplete frame. They are not fsynced one by one (thousands of fsyncs dominated generation on
slow disks): one `os.sync()` makes them durable before scene.json is written, last, with the
usual fsync, so a folder without it is never mistaken for a finished scene; an empty file (what
a power cut can leave of an unsynced one) counts as not written.
"""

from __future__ import annotations

import io
import json
import os
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch

from ...device import resolve_device
from ...errors import ConfigError
from ...io import atomic_write_json, save_npz
from ..scene import SCENE_FILE, PreparedScene, frame_times, read_scene, write_scene
from .motion import REGIMES
from .raycast import render_views
from .rigs import RIGS, SIZES, RigLayout, SizeSpec, choose, make_rig
from .world import ACTION_HI, ACTION_LO, SCENES, SyntheticWorld, build_world

GENERATOR = "moegs_bench.data.synthetic"
GENERATOR_VERSION = 1  # bump when the same settings would render different images
MANIFEST = ".synthetic.json"  # the settings of a generation in progress or done (for resuming)
POINT_NOISE = 0.002  # point jitter, as a fraction of the scene extent (stands in for COLMAP error)


def synthetic_scene_dir(root: str | Path, scene: str, rig: str, size: str, seed: int = 0) -> Path:
    """Where a synthetic scene lives under a data folder (one naming scheme for every caller):
    <root>/synthetic/<scene>-<rig>-<size>-seed<seed>."""
    return Path(root) / "synthetic" / f"{scene}-{rig}-{size}-seed{int(seed)}"


def generate_synthetic(out: str | Path, scene: str = "mixed", rig: str = "n3v", size: str = "tiny",
                       seed: int = 0, device: str | torch.device | None = None,
                       progress: Callable[[int, int], None] | None = None) -> PreparedScene:
    """Generate a synthetic dynamic scene into the folder `out` and return its metadata.

    scene: one of SCENES; rig: one of RIGS; size: one of SIZES; seed: same seed, same bytes
    (on one device). progress(done, total) is called after every frame with the number of
    views done and in all (a resumed frame counts as done). A folder holding an
    unfinished generation with the same settings is resumed; one with the finished scene is
    returned as is; a folder holding anything else raises ConfigError.
    """
    choose("scene", scene, SCENES)
    choose("rig", rig, RIGS)
    spec = SIZES[choose("size", size, tuple(SIZES))]
    dev = resolve_device(None if device is None else str(device))
    world = build_world(scene, seed)
    layout = make_rig(rig, spec)
    times = frame_times(layout.num_frames)
    settings = {"generator": GENERATOR, "version": GENERATOR_VERSION, "scene": scene, "rig": rig,
                "size": size, "seed": int(seed)}
    out = Path(out)
    if _claim_folder(out, settings):
        return read_scene(out)
    total = sum(len(v) for v in layout.frame_views)
    done = 0
    # PNG encoding and fsync release the GIL: a few writer threads keep up with the renderer
    with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:
        for f in range(layout.num_frames):
            if not _frame_done(out, layout, spec, f):
                _write_frame(out, world, layout, f, float(times[f]), spec, seed, dev, pool)
            done += len(layout.frame_views[f])
            if progress is not None:
                progress(done, total)
    os.sync()  # the frames' files, durable at once before the merged points and scene.json
    return _finish(out, world, layout, times, settings)


# -- the output folder -----------------------------------------------------------------------
def _claim_folder(out: Path, settings: dict) -> bool:
    """Check `out` may be written with these settings and record them; True if the scene is
    already complete there."""
    if out.exists() and not out.is_dir():
        raise ConfigError(f"output folder {out} is a file; choose a folder")
    manifest = out / MANIFEST
    previous = None
    if manifest.is_file():
        try:
            previous = json.loads(manifest.read_text())
        except json.JSONDecodeError:
            previous = None
    if previous == settings:
        return (out / SCENE_FILE).is_file()
    if out.exists() and any(out.iterdir()):
        what = (f"a synthetic scene with other settings ({_describe(previous)})" if previous
                else "other files")
        raise ConfigError(f"output folder {out} already holds {what}; choose an empty folder "
                          f"or remove it to generate {_describe(settings)}")
    atomic_write_json(manifest, settings)
    return False


def _describe(settings: dict) -> str:
    return ", ".join(f"{k}={settings.get(k)}" for k in ("scene", "rig", "size", "seed"))


def _view_paths(cam: str, f: int, gt: bool = True) -> dict[str, str]:
    """Paths (relative to the scene root) of one view's files (gt: with depth and labels)."""
    paths = {"rgb": f"frames/{cam}/{f:05d}.png"}
    if gt:
        paths.update({"depth": f"gt/depth/{cam}/{f:05d}.npy", "labels": f"gt/labels/{cam}/{f:05d}.png"})
    return paths


def _has_gt(layout: RigLayout, spec: SizeSpec, cam: str) -> bool:
    """Whether camera `cam`'s views get ground-truth files (`SizeSpec.gt_views`)."""
    return spec.gt_views == "all" or cam in layout.test


def _points_path(f: int) -> str:
    return f"points/frame_{f:05d}.npz"


def _has_train_view(layout: RigLayout, f: int) -> bool:
    train = set(layout.train)
    return any(layout.cameras[c].name in train for c in layout.frame_views[f])


def _frame_done(out: Path, layout: RigLayout, spec: SizeSpec, f: int) -> bool:
    """Whether every file of frame f exists and is not empty (writes are atomic: a non-empty
    file is complete; an empty one is what a power cut leaves of an unsynced write)."""
    names = [layout.cameras[c].name for c in layout.frame_views[f]]
    paths = [p for n in names for p in _view_paths(n, f, _has_gt(layout, spec, n)).values()]
    if _has_train_view(layout, f):
        paths.append(_points_path(f))
    return all((out / p).is_file() and (out / p).stat().st_size > 0 for p in paths)


# -- one frame --------------------------------------------------------------------------------
def _write_frame(out: Path, world: SyntheticWorld, layout: RigLayout, f: int, t: float, spec,
                 seed: int, device: torch.device, pool: ThreadPoolExecutor) -> None:
    """Render and write every view of frame f and the frame's points (from training views);
    returns once every file is written."""
    train = set(layout.train)
    samples, writes = [], []
    cams = [layout.cameras[c] for c in layout.frame_views[f]]
    views = render_views(world, cams, t, spec.supersample, device, spec.chunk_rays)
    # one quantisation and one device-to-host copy per frame, not per view
    rgbs = (torch.stack([v.rgb for v in views]).clamp(0, 1) * 255).round().to(torch.uint8).cpu().numpy()
    depths = torch.stack([v.depth for v in views]).float().cpu().numpy()
    labels = torch.stack([v.labels for v in views]).cpu().numpy()
    for v, cam in enumerate(cams):
        paths = _view_paths(cam.name, f, _has_gt(layout, spec, cam.name))
        writes.append(pool.submit(_write_png, out / paths["rgb"], rgbs[v]))
        if "depth" in paths:
            writes.append(pool.submit(_write_npy, out / paths["depth"], depths[v]))
            writes.append(pool.submit(_write_png, out / paths["labels"], labels[v]))
        if cam.name in train:
            samples.append((cam, rgbs[v], depths[v]))
    if samples:
        rng = np.random.default_rng(np.random.SeedSequence([int(seed), 0x9017, f]))
        xyz, rgb = sample_points(samples, spec.points_per_frame, rng, POINT_NOISE * world.extent)
        buf = io.BytesIO()
        np.savez_compressed(buf, xyz=xyz, rgb=rgb)
        writes.append(pool.submit(_write_unsynced, out / _points_path(f), buf.getvalue()))
    for w in writes:
        w.result()  # re-raises a failed write here


def _write_unsynced(path: Path, data: bytes) -> None:
    """Write `data` to a temporary file beside `path` and rename it over `path`: atomic (never a
    half-written file under the final name) but not fsynced; `generate_synthetic` syncs once."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    try:
        tmp.write_bytes(data)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _write_png(path: Path, image: np.ndarray) -> None:
    """An [H,W,3] or [H,W] uint8 image as PNG (compression level 1, as io.save_png), unsynced."""
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="PNG", compress_level=1)
    _write_unsynced(path, buf.getvalue())


def _write_npy(path: Path, array: np.ndarray) -> None:
    buf = io.BytesIO()
    np.save(buf, np.ascontiguousarray(array, dtype=np.float32))
    _write_unsynced(path, buf.getvalue())


def sample_points(views: list, count: int, rng: np.random.Generator,
                  noise: float) -> tuple[np.ndarray, np.ndarray]:
    """Back-project `count` random pixels of views [(Camera, rgb [H,W,3] u8, depth [H,W])]
    through their depth: xyz [P,3] float32 (plus Gaussian noise of std `noise`), rgb [P,3] u8.
    Pixels are drawn without replacement, uniformly over all the views' pixels."""
    sizes = [d.size for _, _, d in views]
    picks = rng.choice(sum(sizes), size=min(count, sum(sizes)), replace=False)
    picks.sort()
    xyz, rgb = [], []
    start = 0
    for (cam, image, depth), n in zip(views, sizes, strict=True):
        mine = picks[(picks >= start) & (picks < start + n)] - start
        start += n
        i, j = np.divmod(mine, cam.width)
        z = depth[i, j].astype(np.float64)
        x_cam = np.stack([(j + 0.5 - cam.K[0, 2]) / cam.K[0, 0] * z,
                          (i + 0.5 - cam.K[1, 2]) / cam.K[1, 1] * z, z], 1)
        c2w = cam.c2w
        xyz.append(x_cam @ c2w[:3, :3].T + c2w[:3, 3])
        rgb.append(image[i, j])
    points = np.concatenate(xyz) + rng.normal(0.0, noise, size=(len(picks), 3))
    return points.astype(np.float32), np.concatenate(rgb).astype(np.uint8)


# -- the end: merged points, trajectories, scene.json ---------------------------------------------
def _finish(out: Path, world: SyntheticWorld, layout: RigLayout, times: np.ndarray,
            settings: dict) -> PreparedScene:
    names = [c.name for c in layout.cameras]
    F = layout.num_frames
    images: dict[str, list[str | None]] = {n: [None] * F for n in names}
    depth: dict[str, list[str | None]] = {n: [None] * F for n in names}
    labels: dict[str, list[str | None]] = {n: [None] * F for n in names}
    spec = SIZES[settings["size"]]
    for f, views in enumerate(layout.frame_views):
        for c in views:
            paths = _view_paths(names[c], f, _has_gt(layout, spec, names[c]))
            images[names[c]][f], depth[names[c]][f], labels[names[c]][f] = (
                paths["rgb"], paths.get("depth"), paths.get("labels"))
    frames = {str(f): _points_path(f) for f in range(F) if _has_train_view(layout, f)}
    save_npz(out / "points/merged.npz", **_merge_points(out, frames, times))
    save_npz(out / "gt/trajectories.npz", **world.trajectories(times))
    lo, hi = world.bounds
    scene = PreparedScene(
        root=out, name=world.scene, dataset="synthetic", cameras=layout.cameras, times=times,
        frame_ids=list(range(F)), train_cameras=list(layout.train), test_cameras=list(layout.test),
        images=images, points={"frames": frames, "merged": "points/merged.npz"},
        gt={"depth": depth, "labels": labels, "regimes": list(REGIMES),
            "trajectories": "gt/trajectories.npz", "depth_kind": "camera z"},
        meta={**settings, "size_spec": _spec_json(SIZES[settings["size"]]),
              "extent": world.extent, "bounds": [lo.tolist(), hi.tolist()],
              "center": world.centre.tolist(),
              "action_bounds": [ACTION_LO.tolist(), ACTION_HI.tolist()],
              "objects": [{"name": o.name, "kind": o.kind, "regime": o.regime}
                          for o in world.objects],
              "point_noise": POINT_NOISE * world.extent},
    )
    write_scene(scene)
    return scene


def _merge_points(out: Path, frames: dict[str, str], times: np.ndarray) -> dict[str, np.ndarray]:
    """Union of the per-frame points with their time and frame tags."""
    xyz, rgb, t, fr = [], [], [], []
    for key, rel in frames.items():
        with np.load(out / rel) as z:
            xyz.append(z["xyz"])
            rgb.append(z["rgb"])
        f = int(key)
        t.append(np.full(len(xyz[-1]), times[f], np.float32))
        fr.append(np.full(len(xyz[-1]), f, np.int32))
    if not xyz:
        return {"xyz": np.zeros((0, 3), np.float32), "rgb": np.zeros((0, 3), np.uint8),
                "time": np.zeros(0, np.float32), "frame": np.zeros(0, np.int32)}
    return {"xyz": np.concatenate(xyz), "rgb": np.concatenate(rgb), "time": np.concatenate(t),
            "frame": np.concatenate(fr)}


def _spec_json(spec) -> dict:
    return {k: getattr(spec, k) for k in spec.__dataclass_fields__}
