"""Raw dataset -> prepared scenes (docs/datasets.md).

    prepare_dataset(layout, src, out, ...)   find the scene folders, validate them all, prepare
    prepare_raw_scene(raw, out, options)     one RawScene -> one prepared scene per segment

Output of a scene: `<out>/<scene>/` (or `<out>/<scene>/seg<kk>/` per segment with --segment),
each a prepared scene: scene.json (written last, atomically), frames/<cam>/<frame:05d>.png
(source frame numbers) and points/ (see colmap_init). A `prepare.json` beside it records what
the images were made from; a re-run with the same inputs resumes (images and frame clouds that
exist are kept), one with other inputs starts that scene afresh.
"""

from __future__ import annotations

import json
import os
import shutil
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from dataclasses import dataclass, field
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ConfigError, MoegsError, SceneFormatError
from ..io import atomic_write_json, save_png
from ..progress import ProgressFactory, Tally, task
from .colmap_init import ColmapConfig, frame_cloud_path, is_monocular, write_point_clouds
from .datasets import DatasetSpec
from .formats import RawScene, ReadRequest, frame_times_in_range, get_format, parse_frame_range
from .scene import SCENE_FILE, PreparedScene, write_scene

PREPARE_FILE = "prepare.json"
PREPARE_VERSION = 1

# -- options ----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Resolution:
    """Output image size: "full", "WxH" (every camera), or a scale factor such as "0.5"."""

    text: str = "full"
    size: tuple[int, int] | None = None
    scale: float = 1.0

    @staticmethod
    def parse(text: str) -> Resolution:
        t = str(text).strip().lower()
        if t in ("full", "1", "1.0"):
            return Resolution("full")
        if t == "half":
            return Resolution(t, scale=0.5)
        if "x" in t:
            try:
                w, h = (int(v) for v in t.split("x"))
            except ValueError:
                raise ConfigError(f"--resolution {text!r}: expected full, WxH or a scale like 0.5") from None
            if w <= 0 or h <= 0:
                raise ConfigError(f"--resolution {text!r}: width and height must be positive")
            return Resolution(t, size=(w, h))
        try:
            s = float(t)
        except ValueError:
            raise ConfigError(f"--resolution {text!r}: expected full, WxH or a scale like 0.5") from None
        if not 0 < s <= 1:
            raise ConfigError(f"--resolution {text!r}: a scale must lie in (0, 1]")
        return Resolution(t, scale=s)

    def size_for(self, width: int, height: int) -> tuple[int, int]:
        """Output size of a width x height source image."""
        if self.size is not None:
            return self.size
        return max(1, round(width * self.scale)), max(1, round(height * self.scale))

    @property
    def downscale(self) -> int | None:
        """k when the scale is exactly 1/k (HyperNeRF's rgb/<k>x folders), else None."""
        if self.size is not None:
            return None
        k = 1.0 / self.scale
        return int(round(k)) if abs(k - round(k)) < 1e-9 else None


@dataclass(frozen=True)
class PrepareOptions:
    """What `prepare` does with one scene (CLI flags; defaults from moegs_bench/datasets/*.toml)."""

    resolution: str = "full"
    segment: int = 0  # frames per prepared scene; 0 = one scene (STG: 50, the paper's STG-dagger: 150)
    colmap: bool = True
    colmap_frames: str = "all"  # "all", "START:END[:STEP]" or "a,b,c" (source frame numbers)
    workers: int = 0  # image threads; 0 = one per CPU core
    colmap_config: ColmapConfig = field(default_factory=ColmapConfig)


@dataclass(frozen=True)
class Segment:
    """One prepared scene cut from a raw scene: source frames in [start, end)."""

    index: int | None
    name: str
    root: Path
    frame_range: tuple[int, int]
    frame_ids: list[int]


# -- frames and segments ------------------------------------------------------------------------------
def plan_segments(raw: RawScene, out_dir: Path, segment: int) -> list[Segment]:
    """One Segment for the whole range, or consecutive `segment`-frame ranges (STG-style);
    ranges that hold no frame are skipped."""
    start, end = raw.frame_range
    if segment <= 0:
        return [Segment(None, raw.name, Path(out_dir) / raw.name, (start, end), list(raw.frame_ids))]
    out, k = [], 0
    for s in range(start, end, segment):
        e = min(s + segment, end)
        ids = [f for f in raw.frame_ids if s <= f < e]
        if ids:
            out.append(Segment(k, f"{raw.name}_seg{k:02d}", Path(out_dir) / raw.name / f"seg{k:02d}", (s, e), ids))
            k += 1
    return out


def parse_colmap_frames(text: str | None) -> Callable[[int], bool]:
    """--colmap-frames -> predicate over source frame numbers."""
    t = (text or "all").strip().lower()
    if t == "all":
        return lambda f: True
    try:
        if ":" in t:
            parts = [int(p) for p in t.split(":")]
            if len(parts) not in (2, 3) or parts[1] <= parts[0] or (len(parts) == 3 and parts[2] <= 0):
                raise ValueError
            start, end, step = parts[0], parts[1], parts[2] if len(parts) == 3 else 1
            return lambda f: start <= f < end and (f - start) % step == 0
        chosen = {int(p) for p in t.split(",") if p.strip()}
        if not chosen:
            raise ValueError
        return lambda f: f in chosen
    except ValueError:
        raise ConfigError(f"--colmap-frames {text!r}: expected all, START:END[:STEP] or a list a,b,c") from None


def resize_area(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """[H,W,3] uint8 -> [h,w,3] with an area filter (each output pixel is the mean of the source
    area it covers, like OpenCV's INTER_AREA), averaged in float and rounded once."""
    w, h = size
    H, W = image.shape[:2]
    if (W, H) == (w, h):
        return image
    if W % w == 0 and H % h == 0:  # integer factor: block means (PIL's reduce, in C)
        from PIL import Image

        return np.asarray(Image.fromarray(image).reduce((W // w, H // h)))
    out = _area_axis(_area_axis(image.astype(np.float64), h, 0), w, 1)
    return np.clip(np.floor(out + 0.5), 0, 255).astype(np.uint8)


def _area_axis(x: np.ndarray, n_out: int, axis: int) -> np.ndarray:
    """Exact area averaging of `x` along `axis` to n_out samples, from the running integral."""
    x = np.moveaxis(x, axis, 0)
    n_in = x.shape[0]
    integral = np.concatenate([np.zeros_like(x[:1]), np.cumsum(x, axis=0)])
    edges = np.arange(n_out + 1) * (n_in / n_out)
    i = np.minimum(np.floor(edges).astype(int), n_in - 1)
    frac = (edges - i).reshape(-1, *([1] * (x.ndim - 1)))
    at_edges = integral[i] + frac * x[i]  # integral of the piecewise-constant signal at each edge
    return np.moveaxis((at_edges[1:] - at_edges[:-1]) * (n_out / n_in), 0, axis)


# -- one scene ------------------------------------------------------------------------------------------
def prepare_raw_scene(
    raw: RawScene, out_dir: str | Path, options: PrepareOptions = PrepareOptions(),
    progress: ProgressFactory | None = None,
) -> list[PreparedScene]:
    """Write one prepared scene per segment of `raw` and return them (scene.json written last)."""
    resolution = Resolution.parse(options.resolution)
    segments = plan_segments(raw, Path(out_dir), options.segment)
    scenes = [_scene_for_segment(raw, seg, resolution) for seg in segments]
    colmap_pick = parse_colmap_frames(options.colmap_frames)
    if options.colmap and not any(colmap_pick(f) for f in raw.frame_ids):
        raise ConfigError(f"--colmap-frames {options.colmap_frames}: none of the frames "
                          f"{raw.frame_range[0]}:{raw.frame_range[1]} of {raw.name} is selected")
    for seg, scene in zip(segments, scenes, strict=True):
        _start_scene_dir(seg.root, _fingerprint(raw, seg, scene))
    _extract_images(raw, scenes, options.workers, progress)
    for scene in scenes:
        if options.colmap:
            frames = [i for i, f in enumerate(scene.frame_ids) if colmap_pick(f)]
            if frames:
                scene.points = _colmap(scene, frames, options.colmap_config, progress)
        write_scene(scene)
    return scenes


def _scene_for_segment(raw: RawScene, seg: Segment, resolution: Resolution) -> PreparedScene:
    """The PreparedScene (metadata only) of one segment."""
    index = {f: i for i, f in enumerate(seg.frame_ids)}
    cameras, images = [], {}
    for cam in raw.cameras:
        frames = [f for f in raw.views.get(cam.name, []) if f in index]
        if not frames:
            continue  # a monocular camera outside this segment
        w, h = resolution.size_for(cam.width, cam.height)
        cameras.append(cam.scaled(w, h))
        paths: list[str | None] = [None] * len(seg.frame_ids)
        for f in frames:
            paths[index[f]] = f"frames/{cam.name}/{f:05d}.png"
        images[cam.name] = paths
    train = [c for c in raw.train_cameras if c in images]
    test = [c for c in raw.test_cameras if c in images]
    if not train:
        raise ConfigError(f"{raw.name}: frames {seg.frame_range[0]}:{seg.frame_range[1]} have no training images")
    meta: dict[str, Any] = {
        **raw.meta, "layout": raw.dataset, "frame_range": list(seg.frame_range),
        "source_scene": raw.name, "resolution": resolution.text,
    }
    if seg.index is not None:
        meta["segment"] = seg.index
    return PreparedScene(
        root=seg.root, name=seg.name, dataset=raw.dataset, cameras=cameras,
        times=frame_times_in_range(seg.frame_ids, seg.frame_range), frame_ids=list(seg.frame_ids),
        train_cameras=train, test_cameras=test, images=images, meta=meta,
    )


def _fingerprint(raw: RawScene, seg: Segment, scene: PreparedScene) -> dict:
    """What the images of a prepared scene depend on (a change means: start afresh)."""
    return {
        "version": PREPARE_VERSION, "dataset": raw.dataset, "source": raw.meta.get("source"),
        "frames": list(seg.frame_ids), "frame_range": list(seg.frame_range),
        "cameras": {c.name: [c.width, c.height] for c in scene.cameras},
    }


def _start_scene_dir(root: Path, fingerprint: dict) -> None:
    """Make `root` ready for (re-)preparing: keep outputs made from the same inputs, drop
    others, and remove scene.json so that nothing half-written reads as a valid scene."""
    marker = root / PREPARE_FILE
    if (root / SCENE_FILE).is_file() and not marker.is_file():
        raise MoegsError(f"{root} already holds a prepared scene that prepare did not make; "
                         "choose another --out")
    if marker.is_file():
        try:
            same = json.loads(marker.read_text()) == fingerprint
        except (OSError, json.JSONDecodeError):
            same = False
        if not same:
            for sub in ("frames", "points"):
                shutil.rmtree(root / sub, ignore_errors=True)
    if (root / SCENE_FILE).is_file():
        (root / SCENE_FILE).unlink()
    atomic_write_json(marker, fingerprint)


# PNG encoding holds the GIL: images of at least this many pixels are encoded in processes.
PROCESS_ENCODE_PIXELS = 512 * 384


def _extract_images(raw: RawScene, scenes: Sequence[PreparedScene], workers: int,
                    progress: ProgressFactory | None) -> None:
    """Decode, resize (area filter) and write every image that is not written yet.

    Cameras are decoded in parallel threads (the decoders release the GIL); large images are
    PNG-encoded in worker processes, since Pillow's encoder does not release it.
    """
    jobs: dict[str, list[tuple[int, Path, tuple[int, int]]]] = {}
    for scene in scenes:
        for cam in scene.cameras:
            for i, rel in enumerate(scene.images[cam.name]):
                if rel is not None:
                    jobs.setdefault(cam.name, []).append((scene.frame_ids[i], scene.root / rel, (cam.width, cam.height)))
    total = sum(len(v) for v in jobs.values())
    advance = Tally(task(progress, f"{raw.name}: images"), total).advance
    todo = {}
    for cam, items in jobs.items():
        missing = [it for it in items if not it[1].is_file()]
        advance(len(items) - len(missing))
        if missing:
            todo[cam] = missing
    if not todo:
        return
    threads = workers if workers > 0 else (os.cpu_count() or 1)
    large = max(w * h for items in todo.values() for _, _, (w, h) in items) >= PROCESS_ENCODE_PIXELS
    encoders = ProcessPoolExecutor(threads, mp_context=get_context("spawn")) if large and threads > 1 else None
    try:
        with ThreadPoolExecutor(max_workers=max(1, min(threads, len(todo)))) as pool:
            futures = [pool.submit(_extract_camera, raw, cam, todo[cam], encoders, 2 * threads, advance)
                       for cam in todo]
            for fut in futures:
                fut.result()
    finally:
        if encoders is not None:
            encoders.shutdown(cancel_futures=True)


def _extract_camera(raw: RawScene, cam: str, items: list[tuple[int, Path, tuple[int, int]]],
                    encoders: ProcessPoolExecutor | None, max_pending: int, advance) -> None:
    """Write the images `items` (frame, path, size) of one camera."""
    targets = {f: (path, size) for f, path, size in items}
    pending: deque = deque()
    written = 0
    for f, image in raw.read_frames(cam, sorted(targets)):
        path, size = targets[f]
        small = resize_area(image, size)
        if encoders is None:
            save_png(path, small)
            advance(1)
        else:
            pending.append(encoders.submit(save_png, path, small))
            while len(pending) > max_pending:  # bound the frames held in memory
                pending.popleft().result()
                advance(1)
        written += 1
    while pending:
        pending.popleft().result()
        advance(1)
    if written != len(targets):
        raise SceneFormatError(raw.meta.get("source", raw.name), cam,
                               f"{len(targets) - written} frame(s) were not delivered")


def _colmap(scene: PreparedScene, frames: list[int], config: ColmapConfig,
            progress: ProgressFactory | None) -> dict:
    monocular = is_monocular(scene)
    advance = Tally(task(progress, f"{scene.name}: COLMAP"), 1 if monocular else len(frames)).advance
    cached = 0 if monocular else sum((Path(scene.root) / frame_cloud_path(f)).is_file() for f in frames)
    advance(cached)
    return write_point_clouds(scene, frames, config, on_done=lambda f, n, s: advance(1))


# -- finding scenes and the top level ---------------------------------------------------------------------
def find_scene_dirs(layout: str, src: Path) -> list[Path]:
    """`src` itself if it is a scene of `layout`, else its sub-folders that are."""
    src = Path(src)
    if not src.is_dir():
        raise ConfigError(f"--src {src}: no such folder")
    fmt = get_format(layout)
    if fmt.detect(src):
        return [src]
    found = sorted(p for p in src.iterdir() if p.is_dir() and fmt.detect(p))
    if not found:
        raise SceneFormatError(src, None, f"no {layout} scene found (a scene folder holds {fmt.expect})")
    return found


def select_scene_dirs(layout: str, src: Path, names: Sequence[str] | None, spec: DatasetSpec) -> list[Path]:
    """Scene folders for --scenes (folder names or published names/aliases; None = all)."""
    dirs = find_scene_dirs(layout, src)
    if not names:
        return dirs
    out = []
    for name in names:
        match = [d for d in dirs if d.name == name]
        if not match:
            published = spec.find_scene(name)
            if published is not None:
                match = [d for d in dirs if spec.find_scene(d.name) is published]
        if not match:
            known = ", ".join(d.name for d in dirs)
            hint = "" if spec.find_scene(name) else f" and not a published {spec.name} scene"
            raise ConfigError(f"unknown scene {name!r}: no such scene folder in {src}{hint} (found: {known})")
        out.extend(m for m in match if m not in out)
    return out


def read_raw_scene(layout: str, scene_dir: Path, spec: DatasetSpec, frames: str | None,
                   resolution: Resolution, flags: dict[str, bool] | None = None) -> tuple[RawScene, Resolution]:
    """Read one scene folder with its dataset settings; returns the scene and the resolution
    still to apply to its images (a reader may pick pre-scaled images, e.g. HyperNeRF's rgb/<k>x)."""
    settings = spec.scene_settings(scene_dir.name)
    request = ReadRequest(
        scene_dir=scene_dir, name=settings.name,
        frames=parse_frame_range(frames) if frames else settings.frames,
        test_cameras=tuple(settings.test_cameras or ()), drop_cameras=settings.drop_cameras,
        repairs=settings.repairs, where=f"{spec.path}: scenes.{settings.name}",
        downscale=resolution.downscale, settings=dict(spec.extra), flags=dict(flags or {}),
    )
    raw, applied = get_format(layout).read(request)
    return raw, (Resolution("full") if applied > 1 and applied == resolution.downscale else resolution)


def prepare_dataset(
    layout: str, src: str | Path, out: str | Path, spec: DatasetSpec,
    scenes: Sequence[str] | None = None, frames: str | None = None,
    options: PrepareOptions = PrepareOptions(), flags: dict[str, bool] | None = None,
    progress: ProgressFactory | None = None,
) -> list[PreparedScene]:
    """Validate every selected scene of a raw dataset, then prepare them one by one.
    flags: the format's own command-line flags (RawFormat.flags), name -> value."""
    resolution = Resolution.parse(options.resolution)
    dirs = select_scene_dirs(layout, Path(src), scenes, spec)
    raws = [read_raw_scene(layout, d, spec, frames, resolution, flags) for d in dirs]
    out_scenes: list[PreparedScene] = []
    for raw, res in raws:
        opts = PrepareOptions(res.text, options.segment, options.colmap, options.colmap_frames,
                              options.workers, options.colmap_config)
        out_scenes += prepare_raw_scene(raw, out, opts, progress)
    return out_scenes
