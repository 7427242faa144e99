"""Raw dataset -> prepared scenes (docs/datasets.md).

    prepare_dataset(layout, src, out, ...)   find the scene folders, check them all, then prepare
    plan_raw_scene(raw, out, options)        one RawScene -> a ScenePlan per segment (no writes)
    prepare_raw_scene(raw, out, options)     plan and run one RawScene

Output of a scene: `<out>/<scene>/` (or `<out>/<scene>/seg<kk>/` per segment with --segment),
each a prepared scene: scene.json (written last, atomically), frames/<cam>/<frame:05d>.png
(source frame numbers) and points/ (see colmap_init). `prepare.json` beside it records, per
step, the fingerprints of the inputs it read and its settings; a re-run redoes exactly the steps
whose inputs or settings changed (prepare_steps, prepare_record).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Annotated, Any

from ..config import NonNegativeInt, Parsed
from ..errors import ConfigError, MoegsError, SceneFormatError
from ..progress import ProgressFactory
from .colmap_init import ColmapConfig, is_monocular
from .datasets import DatasetSpec
from .extract import PROCESS_ENCODE_PIXELS, resize_area
from .fingerprints import file_fingerprint
from .formats import RawScene, ReadRequest, frame_times_in_range, get_format, parse_frame_range
from .prepare_record import PREPARE_FILE, StepKey, StepRecords
from .prepare_steps import FRAMES_VERSION, Log, ScenePlan, run_scene_plans
from .scene import SCENE_FILE, PreparedScene, rotation_problem


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

    resolution: Annotated[str, Parsed(Resolution.parse, "full, WxH or a scale in (0, 1]")] = "full"
    segment: NonNegativeInt = 0  # frames per prepared scene; 0 = one scene (STG: 50, the paper's STG-dagger: 150)
    colmap: bool = True
    colmap_frames: Annotated[str, Parsed(parse_colmap_frames, "all, START:END[:STEP] or a,b,c")] = "all"  # "all", "START:END[:STEP]" or "a,b,c" (source frame numbers)
    workers: NonNegativeInt = 0  # image threads; 0 = one per CPU core
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



# -- checking and planning one scene (nothing is written) ----------------------------------------------------
def check_cameras(raw: RawScene) -> None:
    """Every camera of `raw` must have a proper rotation, whatever reader made it (the readers
    check their own files first and name the line or field)."""
    for cam in raw.cameras:
        problem = rotation_problem(cam.w2c[:3, :3])
        if problem:
            raise SceneFormatError(raw.meta.get("source", raw.name), f"camera {cam.name}", problem)


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


class FileFingerprints:
    """Fingerprints of raw files, each file read once per prepare (segments share videos)."""

    def __init__(self):
        self._seen: dict[tuple[Path, bool], dict] = {}

    def __call__(self, path: Path, exact: bool) -> dict:
        path = Path(path)
        if (path, exact) not in self._seen:
            try:
                self._seen[(path, exact)] = file_fingerprint(path, exact)
            except OSError as exc:
                raise SceneFormatError(path, None, f"cannot read ({exc.strerror or exc})") from None
        return self._seen[(path, exact)]

    def inputs(self, paths: Sequence[Path], base: Path, exact: bool) -> dict[str, dict]:
        """name (relative to the raw scene folder) -> fingerprint, for each file."""
        out = {}
        for p in paths:
            p = Path(p)
            try:  # folders resolved, the file not: a symlinked video keeps its own name
                name = str((p.parent.resolve() / p.name).relative_to(base))
            except ValueError:
                name = str(p)
            out[name] = self(p, exact)
        return out


def _check_out_root(root: Path) -> None:
    if (root / SCENE_FILE).is_file() and not (root / PREPARE_FILE).is_file():
        raise MoegsError(f"{root} already holds a prepared scene that prepare did not make; choose another --out")
    if root.exists() and not root.is_dir():
        raise ConfigError(f"{root}: exists and is not a folder; choose another --out")


def _check_triangulable(scene: PreparedScene, frames: list[int]) -> None:
    """COLMAP needs two training views: per frame of a rig, in all of a monocular scene."""
    views = [sum(scene.images[c][f] is not None for c in scene.train_cameras) for f in frames]
    if is_monocular(scene):
        if sum(views) < 2:
            raise ConfigError(f"{scene.name}: {sum(views)} training view(s) among the frames selected for "
                              "COLMAP; triangulation needs 2 (change --colmap-frames or --segment, or pass --no-colmap)")
        return
    for f, n in zip(frames, views, strict=True):
        if n < 2:
            raise ConfigError(f"{scene.name}: frame {scene.frame_ids[f]} has {n} training view(s); triangulation "
                              "needs 2 (change --colmap-frames, or pass --no-colmap)")


def plan_raw_scene(raw: RawScene, out_dir: str | Path, options: PrepareOptions = PrepareOptions(),
                   files: FileFingerprints | None = None) -> list[ScenePlan]:
    """Check one raw scene and work out, per segment, what each step depends on. Reads the
    raw files' fingerprints and the existing prepare.json; writes nothing."""
    files = files or FileFingerprints()
    check_cameras(raw)
    resolution = Resolution.parse(options.resolution)
    segments = plan_segments(raw, Path(out_dir), options.segment)
    scenes = [_scene_for_segment(raw, seg, resolution) for seg in segments]
    colmap_pick = parse_colmap_frames(options.colmap_frames)
    if options.colmap and not any(colmap_pick(f) for f in raw.frame_ids):
        raise ConfigError(f"--colmap-frames {options.colmap_frames}: none of the frames "
                          f"{raw.frame_range[0]}:{raw.frame_range[1]} of {raw.name} is selected")
    base = Path(raw.meta.get("source", ".")).resolve()
    camera_inputs = files.inputs(raw.camera_files, base, exact=True)
    plans = []
    for seg, scene in zip(segments, scenes, strict=True):
        _check_out_root(seg.root)
        frames = {}
        for cam in scene.cameras:
            ids = [scene.frame_ids[i] for i, rel in enumerate(scene.images[cam.name]) if rel is not None]
            inputs = None if raw.frame_files is None else files.inputs(raw.frame_files(cam.name, ids), base, exact=False)
            settings = {"size": [cam.width, cam.height], "frames": ids, "resize": "area",
                        "version": FRAMES_VERSION, **raw.frame_settings.get(cam.name, {})}
            frames[cam.name] = StepKey.of(inputs, settings)
        cameras = StepKey.of(camera_inputs, {"resolution": resolution.text, "frames": list(seg.frame_ids),
                                             "frame_range": list(seg.frame_range)})
        colmap_frames = [i for i, f in enumerate(scene.frame_ids) if colmap_pick(f)] if options.colmap else None
        if colmap_frames:
            _check_triangulable(scene, colmap_frames)
        info = {"name": scene.name, "dataset": raw.dataset, "source": raw.meta.get("source"),
                "frame_range": list(seg.frame_range)}
        plans.append(ScenePlan(scene, StepRecords(seg.root), cameras, frames, colmap_frames or None,
                               options.colmap_config, info))
    return plans


def prepare_raw_scene(
    raw: RawScene, out_dir: str | Path, options: PrepareOptions = PrepareOptions(),
    progress: ProgressFactory | None = None, log: Log | None = None,
) -> list[PreparedScene]:
    """Write one prepared scene per segment of `raw` and return them (scene.json written last)."""
    plans = plan_raw_scene(raw, out_dir, options)
    return run_scene_plans(raw, plans, options.workers, progress, log)


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
    progress: ProgressFactory | None = None, log: Log | None = None,
) -> list[PreparedScene]:
    """Read and check every selected scene of a raw dataset and plan its steps, then prepare
    them one by one. flags: the format's own command-line flags (RawFormat.flags), name ->
    value; log: one line per step redone (and why) and per scene reused."""
    resolution = Resolution.parse(options.resolution)
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out}: exists and is not a folder")
    dirs = select_scene_dirs(layout, Path(src), scenes, spec)
    raws = [read_raw_scene(layout, d, spec, frames, resolution, flags) for d in dirs]
    files = FileFingerprints()
    plans, roots = [], {}
    for raw, res in raws:
        plans.append(plan_raw_scene(raw, out, replace(options, resolution=res.text), files))
        for plan in plans[-1]:
            other = roots.setdefault(plan.root, raw.meta.get("source", raw.name))
            if other != raw.meta.get("source", raw.name):
                raise ConfigError(f"{other} and {raw.meta.get('source')} would both be prepared into "
                                  f"{plan.root}; pass --scenes to choose one")
    out_scenes: list[PreparedScene] = []
    for (raw, _), scene_plans in zip(raws, plans, strict=True):
        out_scenes += run_scene_plans(raw, scene_plans, options.workers, progress, log)
    return out_scenes


__all__ = ["Resolution", "PrepareOptions", "Segment", "plan_segments", "parse_colmap_frames", "resize_area",
           "check_cameras", "plan_raw_scene", "prepare_raw_scene", "find_scene_dirs",
           "select_scene_dirs", "read_raw_scene", "prepare_dataset", "PREPARE_FILE", "PROCESS_ENCODE_PIXELS"]
