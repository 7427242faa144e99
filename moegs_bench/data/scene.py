"""The prepared-scene format (docs/data-format.md): one layout every dataset is converted to.

    <root>/scene.json                 metadata (cameras, times, split, file lists)
    <root>/frames/<camera>/<frame>.png  uint8 RGB images, one per (camera, frame) view
    <root>/points/frame_<frame>.npz   sparse points of one frame: xyz [P,3] f32, rgb [P,3] u8
    <root>/points/merged.npz          union with time tags: xyz, rgb, time [P] f32, frame [P] i32
    <root>/gt/...                     optional ground truth (depth .npy, label .png, trajectories)

`PreparedScene` is the metadata (numpy, no images); `read_scene` validates it and fails with
one `SceneFormatError` naming the file and field; `write_scene` writes scene.json atomically.
`SceneData` (see `load.py`) is the same scene with images on a device.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import SceneFormatError
from ..io import atomic_write_json

FORMAT = "moegs-scene"
VERSION = 1
SCENE_FILE = "scene.json"


@dataclass(frozen=True)
class Camera:
    """A pinhole camera. K [3,3]; w2c [4,4] world-to-camera in OpenCV axes (x right, y down,
    z forward); image size in pixels."""

    name: str
    K: np.ndarray
    w2c: np.ndarray
    width: int
    height: int

    @property
    def c2w(self) -> np.ndarray:
        return np.linalg.inv(self.w2c)

    @property
    def center(self) -> np.ndarray:
        """Camera centre in world coordinates, [3]."""
        R, t = self.w2c[:3, :3], self.w2c[:3, 3]
        return -R.T @ t

    def to_json(self) -> dict:
        return {
            "name": self.name,
            "width": int(self.width),
            "height": int(self.height),
            "K": np.asarray(self.K, dtype=float).tolist(),
            "w2c": np.asarray(self.w2c, dtype=float).tolist(),
        }

    def scaled(self, width: int, height: int) -> Camera:
        """The same camera for an image resized to width x height (intrinsics scaled)."""
        K = np.array(self.K, dtype=np.float64)
        K[0] *= width / self.width
        K[1] *= height / self.height
        return Camera(self.name, K, np.array(self.w2c, dtype=np.float64), int(width), int(height))


@dataclass
class PreparedScene:
    """Metadata of a prepared scene. Paths are relative to `root`.

    images[cam][f] is the image of camera `cam` at frame f, or None where that camera did not
    record that frame (monocular video: one camera per frame). times[f] in [0, 1).
    """

    root: Path
    name: str
    dataset: str
    cameras: list[Camera]
    times: np.ndarray
    frame_ids: list[int]
    train_cameras: list[str]
    test_cameras: list[str]
    images: dict[str, list[str | None]]
    points: dict[str, Any] = field(default_factory=dict)
    gt: dict[str, Any] = field(default_factory=dict)
    meta: dict[str, Any] = field(default_factory=dict)

    # -- lookups -------------------------------------------------------------------------
    @property
    def num_frames(self) -> int:
        return len(self.times)

    def camera(self, name: str) -> Camera:
        for cam in self.cameras:
            if cam.name == name:
                return cam
        raise KeyError(name)

    def camera_index(self, name: str) -> int:
        return [c.name for c in self.cameras].index(name)

    def views(self, split: str) -> list[tuple[int, int]]:
        """(camera index, frame index) of every image in a split ("train", "test" or "all")."""
        names = {"train": self.train_cameras, "test": self.test_cameras,
                 "all": [c.name for c in self.cameras]}[split]
        out = []
        for name in names:
            ci = self.camera_index(name)
            out += [(ci, f) for f, p in enumerate(self.images[name]) if p is not None]
        return out

    def image_path(self, cam: str, frame: int) -> Path:
        rel = self.images[cam][frame]
        if rel is None:
            raise KeyError(f"camera {cam} has no image at frame {frame}")
        return self.root / rel

    def scene_extent(self) -> float:
        """3DGS's `cameras_extent`: 1.1 x the largest distance of a camera centre from their mean."""
        centers = np.stack([c.center for c in self.cameras])
        radius = float(np.linalg.norm(centers - centers.mean(0), axis=1).max())
        if radius < 1e-6:  # one camera (or all at one place): fall back to the scene bounds
            radius = float(self.meta.get("extent", 1.0))
        return 1.1 * radius

    # -- point clouds ----------------------------------------------------------------------
    def load_points(self, which: str = "merged") -> dict[str, np.ndarray]:
        """Point cloud arrays: "merged" (xyz, rgb, time, frame), "downsampled" (xyz, rgb) or
        "frame:<f>" (xyz, rgb)."""
        if which in ("merged", "downsampled"):
            rel = self.points.get(which)
        elif which.startswith("frame:"):
            rel = self.points.get("frames", {}).get(str(int(which.split(":")[1])))
        else:
            raise ValueError(f"unknown point cloud {which!r}")
        if rel is None:
            raise SceneFormatError(self.root / SCENE_FILE, f"points.{which}", "no such point cloud")
        path = self.root / rel
        try:
            with np.load(path) as z:
                arrays = {k: z[k] for k in z.files}
        except FileNotFoundError:
            raise SceneFormatError(path, None, "point cloud file is missing") from None
        except Exception as exc:
            raise SceneFormatError(path, None, f"unreadable point cloud ({exc})") from None
        for key in ("xyz", "rgb"):
            if key not in arrays:
                raise SceneFormatError(path, key, "missing array")
        xyz = arrays["xyz"]
        if xyz.ndim != 2 or xyz.shape[1] != 3 or arrays["rgb"].shape != xyz.shape:
            raise SceneFormatError(path, "xyz", f"expected [P,3] xyz and rgb, got {xyz.shape} and {arrays['rgb'].shape}")
        n = len(xyz)
        arrays.setdefault("time", np.zeros(n, np.float32))
        arrays.setdefault("frame", np.zeros(n, np.int32))
        return arrays

    # -- serialisation ---------------------------------------------------------------------
    def to_json(self) -> dict:
        return {
            "format": FORMAT,
            "version": VERSION,
            "name": self.name,
            "dataset": self.dataset,
            "cameras": [c.to_json() for c in self.cameras],
            "frames": {"times": [float(t) for t in self.times], "ids": [int(i) for i in self.frame_ids]},
            "split": {"train": list(self.train_cameras), "test": list(self.test_cameras)},
            "images": self.images,
            "points": self.points,
            "gt": self.gt,
            "meta": self.meta,
        }


def frame_times(num_frames: int) -> np.ndarray:
    """Normalised frame times in [0, 1): t_f = f / F."""
    return np.arange(num_frames, dtype=np.float64) / max(num_frames, 1)


def write_scene(scene: PreparedScene) -> Path:
    """Write scene.json atomically (images and points are written by the producer first)."""
    return atomic_write_json(Path(scene.root) / SCENE_FILE, scene.to_json())


# -- reading and validation -----------------------------------------------------------------
def _need(obj: dict, key: str, kind, path: Path, prefix: str = ""):
    name = f"{prefix}{key}"
    if not isinstance(obj, dict) or key not in obj:
        raise SceneFormatError(path, name, "missing field")
    val = obj[key]
    if kind is not None and not isinstance(val, kind):
        kinds = kind if isinstance(kind, tuple) else (kind,)
        raise SceneFormatError(path, name, f"expected {'/'.join(k.__name__ for k in kinds)}, got {type(val).__name__}")
    return val


def _matrix(value, shape, path, name) -> np.ndarray:
    try:
        arr = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        raise SceneFormatError(path, name, f"expected a {shape[0]}x{shape[1]} matrix of numbers") from None
    if arr.shape != shape or not np.all(np.isfinite(arr)):
        raise SceneFormatError(path, name, f"expected a finite {shape[0]}x{shape[1]} matrix, got shape {arr.shape}")
    return arr


# Largest |R^T R - I| entry accepted as a rotation: float32-stored poses are far inside it.
ROTATION_ATOL = 1e-3


def rotation_problem(R) -> str | None:
    """What keeps a 3x3 matrix from being a proper rotation (finite, orthonormal within
    ROTATION_ATOL, determinant +1), or None if it is one."""
    R = np.asarray(R, dtype=np.float64)
    if R.shape != (3, 3) or not np.all(np.isfinite(R)):
        return "rotation must be a finite 3x3 matrix"
    error = float(np.abs(R.T @ R - np.eye(3)).max())
    if error > ROTATION_ATOL:
        return f"rotation is not orthonormal (|R^T R - I| up to {error:.3g})"
    det = float(np.linalg.det(R))
    if det < 0:
        return f"rotation is a reflection (determinant {det:.3f}), not a proper rotation"
    return None


def _parse_camera(obj, i: int, path: Path) -> Camera:
    p = f"cameras[{i}]."
    name = _need(obj, "name", str, path, p)
    width = _need(obj, "width", int, path, p)
    height = _need(obj, "height", int, path, p)
    if width <= 0 or height <= 0:
        raise SceneFormatError(path, f"{p}width", f"image size must be positive, got {width}x{height}")
    K = _matrix(_need(obj, "K", list, path, p), (3, 3), path, f"{p}K")
    w2c = _matrix(_need(obj, "w2c", list, path, p), (4, 4), path, f"{p}w2c")
    if K[0, 0] <= 0 or K[1, 1] <= 0:
        raise SceneFormatError(path, f"{p}K", "focal lengths must be positive")
    problem = rotation_problem(w2c[:3, :3])
    if problem:
        raise SceneFormatError(path, f"{p}w2c", f"camera {name}: {problem}")
    if not np.allclose(w2c[3], [0, 0, 0, 1]):
        raise SceneFormatError(path, f"{p}w2c", "last row must be [0, 0, 0, 1]")
    return Camera(name, K, w2c, width, height)


def _file_list(value, path: Path, name: str, num_frames: int, root: Path, check_files: bool):
    if not isinstance(value, list) or len(value) != num_frames:
        got = len(value) if isinstance(value, list) else type(value).__name__
        raise SceneFormatError(path, name, f"expected a list of {num_frames} paths (one per frame), got {got}")
    for f, rel in enumerate(value):
        if rel is None:
            continue
        if not isinstance(rel, str):
            raise SceneFormatError(path, f"{name}[{f}]", "expected a path string or null")
        if check_files and not (root / rel).is_file():
            raise SceneFormatError(root / rel, None, f"file is missing (listed in {path.name} {name}[{f}])")
    return value


def read_scene(root: str | Path, check_files: bool = True) -> PreparedScene:
    """Read and validate `<root>/scene.json`.

    Raises SceneFormatError naming the file and field on the first problem: a missing or
    malformed field, an unknown camera in the split, a listed file that does not exist.
    """
    root = Path(root)
    path = root / SCENE_FILE
    if not path.is_file():
        raise SceneFormatError(path, None, "not a prepared scene (scene.json is missing)")
    try:
        obj = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise SceneFormatError(path, None, f"invalid JSON at line {exc.lineno} column {exc.colno}: {exc.msg}") from None
    if not isinstance(obj, dict):
        raise SceneFormatError(path, None, "top level must be an object")
    if obj.get("format") != FORMAT:
        raise SceneFormatError(path, "format", f"expected {FORMAT!r}, got {obj.get('format')!r}")
    version = _need(obj, "version", int, path)
    if version > VERSION:
        raise SceneFormatError(path, "version", f"written by a newer moegs-bench (version {version} > {VERSION})")

    cams_obj = _need(obj, "cameras", list, path)
    if not cams_obj:
        raise SceneFormatError(path, "cameras", "no cameras")
    cameras = [_parse_camera(c, i, path) for i, c in enumerate(cams_obj)]
    names = [c.name for c in cameras]
    if len(set(names)) != len(names):
        raise SceneFormatError(path, "cameras", "camera names are not unique")

    frames = _need(obj, "frames", dict, path)
    times = _need(frames, "times", list, path, "frames.")
    try:
        times = np.asarray(times, dtype=np.float64)
    except (TypeError, ValueError):
        raise SceneFormatError(path, "frames.times", "expected a list of numbers") from None
    if times.ndim != 1 or len(times) == 0:
        raise SceneFormatError(path, "frames.times", "expected a non-empty list of numbers")
    if np.any(times < 0) or np.any(times >= 1) or np.any(np.diff(times) <= 0):
        raise SceneFormatError(path, "frames.times", "times must increase strictly and lie in [0, 1)")
    frame_ids = frames.get("ids", list(range(len(times))))
    if not isinstance(frame_ids, list) or len(frame_ids) != len(times):
        raise SceneFormatError(path, "frames.ids", f"expected {len(times)} frame ids")

    split = _need(obj, "split", dict, path)
    train = _need(split, "train", list, path, "split.")
    test = _need(split, "test", list, path, "split.")
    for key, lst in (("train", train), ("test", test)):
        for n in lst:
            if n not in names:
                raise SceneFormatError(path, f"split.{key}", f"unknown camera {n!r}")
    if not train:
        raise SceneFormatError(path, "split.train", "no training cameras")

    images_obj = _need(obj, "images", dict, path)
    images = {}
    for name in names:
        if name not in images_obj:
            raise SceneFormatError(path, f"images.{name}", "missing image list for this camera")
        images[name] = _file_list(images_obj[name], path, f"images.{name}", len(times), root, check_files)

    points = obj.get("points", {}) or {}
    if not isinstance(points, dict):
        raise SceneFormatError(path, "points", "expected an object")
    if check_files:
        rels = [("points.merged", points.get("merged"))]
        rels += [(f"points.frames.{k}", v) for k, v in (points.get("frames") or {}).items()]
        for name, rel in rels:
            if rel is not None and not (root / rel).is_file():
                raise SceneFormatError(root / rel, None, f"file is missing (listed in {path.name} {name})")

    gt = obj.get("gt", {}) or {}
    if not isinstance(gt, dict):
        raise SceneFormatError(path, "gt", "expected an object")
    for kind in ("depth", "labels"):
        if kind in gt:
            for name, lst in gt[kind].items():
                if name not in names:
                    raise SceneFormatError(path, f"gt.{kind}", f"unknown camera {name!r}")
                _file_list(lst, path, f"gt.{kind}.{name}", len(times), root, check_files)
    if check_files and gt.get("trajectories") and not (root / gt["trajectories"]).is_file():
        raise SceneFormatError(root / gt["trajectories"], None, "file is missing (listed in scene.json gt.trajectories)")

    return PreparedScene(
        root=root,
        name=str(obj.get("name", root.name)),
        dataset=str(obj.get("dataset", "unknown")),
        cameras=cameras,
        times=times,
        frame_ids=[int(i) for i in frame_ids],
        train_cameras=list(train),
        test_cameras=list(test),
        images=images,
        points=points,
        gt=gt,
        meta=obj.get("meta", {}) or {},
    )


def is_prepared_scene(path: str | Path) -> bool:
    return (Path(path) / SCENE_FILE).is_file()


def look_at(eye, target, up=(0.0, -1.0, 0.0)) -> np.ndarray:
    """World-to-camera [4,4] (OpenCV axes) of a camera at `eye` looking at `target`.

    `up` is the world direction that should appear up in the image (OpenCV's y points down,
    so the default treats world -y as up).
    """
    eye, target, up = (np.asarray(v, dtype=np.float64) for v in (eye, target, up))
    z = target - eye
    z /= np.linalg.norm(z)
    x = np.cross(-up, z)  # image x (right) = down x forward
    if np.linalg.norm(x) < 1e-9:
        raise ValueError("look_at: view direction is parallel to up")
    x /= np.linalg.norm(x)
    y = np.cross(z, x)
    R = np.stack([x, y, z])  # rows: camera axes in world coordinates
    w2c = np.eye(4)
    w2c[:3, :3] = R
    w2c[:3, 3] = -R @ eye
    return w2c


def intrinsics(width: int, height: int, fov_x_deg: float) -> np.ndarray:
    """PINHOLE K for a horizontal field of view, principal point at the image centre."""
    f = 0.5 * width / math.tan(math.radians(fov_x_deg) / 2)
    return np.array([[f, 0, width / 2], [0, f, height / 2], [0, 0, 1]], dtype=np.float64)
