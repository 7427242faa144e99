"""Technicolor light-field video raw layout (REFERENCE.md §3).

    <scene>/<Scene>_undist_<frame:05d>_<cam:02d>.png   16 cameras (4x4 rig), 2048x1088
    <scene>/cameras_parameters.txt                     one header line, then one row per camera:
        f cx cy aspect skew qw qx qy qz tx ty tz       (world-to-camera, COLMAP convention)

Row i is camera i (named cam<ii>). The undistorted images use a pinhole model with the real,
off-centre principal point; fy = f * aspect (aspect is 1 in the published files, where the
original scripts use fy = f). Skew is recorded but not modelled (it is 0 in the published files).
"""

from __future__ import annotations

import re
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ...errors import ConfigError, SceneFormatError
from ..images import image_size, read_image
from ..scene import Camera
from . import RawFormat, RawScene, ReadRequest, register_format, select_frames

PARAMS_FILE = "cameras_parameters.txt"
IMAGE_RE = re.compile(r"^(?P<scene>.+)_undist_(?P<frame>\d{5})_(?P<cam>\d{2})\.png$")
NUM_COLUMNS = 12


@dataclass(frozen=True)
class Repair:
    """A broken upstream image: camera `camera` at `frame` is completed from `source_frame`."""

    camera: int
    frame: int
    source_frame: int


# -- rotation helpers -------------------------------------------------------------------------
def quat_to_rotmat(q: Sequence[float]) -> np.ndarray:
    """Unit quaternion (qw, qx, qy, qz) -> rotation matrix [3,3] (normalised first)."""
    w, x, y, z = np.asarray(q, dtype=np.float64) / np.linalg.norm(q)
    return np.array([
        [1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)],
        [2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)],
        [2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)],
    ])


def rotmat_to_quat(R: np.ndarray) -> np.ndarray:
    """Rotation matrix [3,3] -> unit quaternion (qw, qx, qy, qz) with qw >= 0."""
    R = np.asarray(R, dtype=np.float64)
    # Largest-eigenvector method: stable for every rotation (no branch on the trace).
    Rxx, Ryx, Rzx, Rxy, Ryy, Rzy, Rxz, Ryz, Rzz = R.flat
    K = np.array([
        [Rxx - Ryy - Rzz, 0, 0, 0],
        [Ryx + Rxy, Ryy - Rxx - Rzz, 0, 0],
        [Rzx + Rxz, Rzy + Ryz, Rzz - Rxx - Ryy, 0],
        [Ryz - Rzy, Rzx - Rxz, Rxy - Ryx, Rxx + Ryy + Rzz],
    ]) / 3.0
    vals, vecs = np.linalg.eigh(K)
    q = vecs[[3, 0, 1, 2], np.argmax(vals)]
    return -q if q[0] < 0 else q


# -- cameras_parameters.txt ---------------------------------------------------------------------
def read_camera_parameters(path: Path) -> np.ndarray:
    """cameras_parameters.txt -> [C,12] float rows; SceneFormatError naming line and column."""
    if not path.is_file():
        raise SceneFormatError(path, None, "file is missing (a Technicolor scene needs cameras_parameters.txt)")
    lines = path.read_text().splitlines()
    rows = []
    for lineno, line in enumerate(lines[1:], start=2):  # line 1 is the header
        if not line.strip():
            continue
        fields = line.split()
        if len(fields) != NUM_COLUMNS:
            raise SceneFormatError(path, f"line {lineno}",
                                   f"expected {NUM_COLUMNS} columns (f cx cy aspect skew qw qx qy qz tx ty tz), got {len(fields)}")
        try:
            row = [float(v) for v in fields]
        except ValueError:
            raise SceneFormatError(path, f"line {lineno}", "expected numbers") from None
        if not np.all(np.isfinite(row)) or row[0] <= 0 or row[3] <= 0:
            raise SceneFormatError(path, f"line {lineno}", "focal length and aspect must be positive and finite")
        if np.linalg.norm(row[5:9]) < 1e-8:  # any other quaternion is a rotation once normalised, as in COLMAP
            raise SceneFormatError(path, f"line {lineno} (cam{len(rows):02d})", "quaternion qw qx qy qz is zero")
        rows.append(row)
    if not rows:
        raise SceneFormatError(path, None, "no camera rows after the header line")
    return np.asarray(rows)


def row_to_camera(row: np.ndarray, name: str, width: int, height: int) -> Camera:
    """One parameters row -> Camera at the full image size."""
    f, cx, cy, aspect = row[:4]
    K = np.array([[f, 0.0, cx], [0.0, f * aspect, cy], [0.0, 0.0, 1.0]])
    w2c = np.eye(4)
    w2c[:3, :3] = quat_to_rotmat(row[5:9])
    w2c[:3, 3] = row[9:12]
    return Camera(name, K, w2c, width, height)


def camera_to_row(cam: Camera) -> list[float]:
    """Camera -> the 12 numbers of its cameras_parameters.txt row."""
    K = np.asarray(cam.K, dtype=np.float64)
    q = rotmat_to_quat(np.asarray(cam.w2c)[:3, :3])
    t = np.asarray(cam.w2c, dtype=np.float64)[:3, 3]
    return [K[0, 0], K[0, 2], K[1, 2], K[1, 1] / K[0, 0], K[0, 1], *q, *t]


# -- images ---------------------------------------------------------------------------------------
def image_name(scene: str, frame: int, cam: int) -> str:
    return f"{scene}_undist_{frame:05d}_{cam:02d}.png"


def scan_images(scene_dir: Path) -> tuple[str, dict[int, set[int]]]:
    """(scene prefix of the file names, {camera index: set of frame numbers})."""
    prefixes, found = set(), {}
    for p in scene_dir.iterdir():
        m = IMAGE_RE.match(p.name)
        if m:
            prefixes.add(m["scene"])
            found.setdefault(int(m["cam"]), set()).add(int(m["frame"]))
    if not found:
        raise SceneFormatError(scene_dir, None, "no <Scene>_undist_<frame>_<cam>.png images found")
    if len(prefixes) > 1:
        raise SceneFormatError(scene_dir, None, f"images of several scenes in one folder: {sorted(prefixes)}")
    return prefixes.pop(), found


_TRUNCATED_LOCK = threading.Lock()  # PIL's truncated-image switch is process-wide


def load_truncated_png(path: Path) -> np.ndarray:
    """Decode what a truncated PNG holds; the missing part is zero."""
    from PIL import Image, ImageFile

    with _TRUNCATED_LOCK:
        old = ImageFile.LOAD_TRUNCATED_IMAGES
        ImageFile.LOAD_TRUNCATED_IMAGES = True
        try:
            with Image.open(path) as im:
                return np.asarray(im.convert("RGB"))
        except Exception as exc:
            raise SceneFormatError(path, None, f"unreadable image, even as a truncated file ({exc})") from None
        finally:
            ImageFile.LOAD_TRUNCATED_IMAGES = old


def repaired_image(path: Path, source: Path) -> tuple[np.ndarray, bool]:
    """The image at `path`, or, if it is broken, its decodable part with the zero pixels taken
    from `source` (the neighbouring frame), as the original pre-processing does.
    Returns (image, whether it was repaired)."""
    try:
        return read_image(path), False
    except SceneFormatError:
        pass
    partial, ref = load_truncated_png(path), read_image(source)
    if partial.shape != ref.shape:
        raise SceneFormatError(path, None, f"broken image and its replacement {source.name} differ in size")
    return np.where(partial == 0, ref, partial), True


# -- the reader ---------------------------------------------------------------------------------
def is_technicolor_scene(path: Path) -> bool:
    return (path / PARAMS_FILE).is_file() or any(IMAGE_RE.match(p.name) for p in path.glob("*_undist_*.png"))


def read_technicolor(
    scene_dir: str | Path,
    frames: tuple[int, int] | None = None,
    test_cameras: Sequence[str] = ("cam10",),
    repairs: Sequence[Repair] = (),
    name: str | None = None,
) -> RawScene:
    """Read and validate one Technicolor scene folder.

    frames: [start, end) of the frame numbers in the file names (None = every frame all
    cameras have). Every camera must have every selected frame. `repairs` lists broken
    upstream images that are completed from a neighbouring frame when they fail to decode.
    """
    scene_dir = Path(scene_dir)
    name = name or scene_dir.name
    params_path = scene_dir / PARAMS_FILE
    rows = read_camera_parameters(params_path)
    prefix, found = scan_images(scene_dir)
    num = len(rows)
    extra = sorted(set(found) - set(range(num)))
    if extra:
        raise SceneFormatError(params_path, None,
                               f"has {num} camera rows but images exist for camera {extra[0]:02d}")
    missing_cams = [c for c in range(num) if c not in found]
    if missing_cams:
        raise SceneFormatError(scene_dir, None, f"no images of camera {missing_cams[0]:02d} "
                               f"({num} cameras in {PARAMS_FILE})")
    frame_ids, frame_range = _select_frames(scene_dir, prefix, found, frames)

    first = scene_dir / image_name(prefix, frame_ids[0], 0)
    width, height = image_size(first)
    for ci in range(num):  # headers only: a wrong size is found before anything is written
        for f in frame_ids:
            path = scene_dir / image_name(prefix, f, ci)
            if image_size(path) != (width, height):
                w, h = image_size(path)
                raise SceneFormatError(path, None, f"image is {w}x{h}, {first.name} is {width}x{height}")
    names = [f"cam{i:02d}" for i in range(num)]
    cameras = [row_to_camera(r, n, width, height) for r, n in zip(rows, names, strict=True)]
    for cam in test_cameras:
        if cam not in names:
            raise ConfigError(f"test camera {cam!r} is not a camera of {scene_dir} (cam00..cam{num - 1:02d})")
    repair_map = {(r.camera, r.frame): r.source_frame for r in repairs}

    def frame_files(camera: str, ids: Sequence[int]) -> list[Path]:
        """The images of `ids`, and a repaired image's source frame where it exists (it is
        read only if the broken image fails to decode)."""
        ci = names.index(camera)
        out = [scene_dir / image_name(prefix, f, ci) for f in ids]
        sources = [scene_dir / image_name(prefix, repair_map[(ci, f)], ci) for f in ids if (ci, f) in repair_map]
        return out + [p for p in sources if p.is_file()]

    def read_frames(camera: str, ids: Sequence[int]) -> Iterator[tuple[int, np.ndarray]]:
        ci = names.index(camera)
        for f in ids:
            path = scene_dir / image_name(prefix, f, ci)
            if (ci, f) in repair_map:
                img, _ = repaired_image(path, scene_dir / image_name(prefix, repair_map[(ci, f)], ci))
            else:
                img = read_image(path)
            if img.shape[:2] != (height, width):
                raise SceneFormatError(path, None, f"image is {img.shape[1]}x{img.shape[0]}, expected {width}x{height}")
            yield f, img

    return RawScene(
        name=name, dataset="technicolor", cameras=cameras, frame_ids=frame_ids, frame_range=frame_range,
        views={n: list(frame_ids) for n in names}, train_cameras=[n for n in names if n not in test_cameras],
        test_cameras=list(test_cameras), read_frames=read_frames,
        meta={"source": str(scene_dir.resolve()), "file_prefix": prefix, "skew": [float(r[4]) for r in rows],
              "repairs": [{"camera": r.camera, "frame": r.frame, "source_frame": r.source_frame} for r in repairs]},
        camera_files=[params_path], frame_files=frame_files,
        frame_settings={names[r.camera]: {"repairs": sorted([f, g] for (c, f), g in repair_map.items()
                                                            if c == r.camera)}
                        for r in repairs if r.camera < num},
    )


def _select_frames(scene_dir: Path, prefix: str, found: dict[int, set[int]], frames: tuple[int, int] | None):
    """Frames to use; every camera must have each of them (else one error naming the file)."""
    all_frames = set().union(*found.values())
    chosen, frame_range = select_frames(sorted(all_frames), frames, str(scene_dir))
    if frames is not None and len(chosen) != frames[1] - frames[0]:
        gap = next(f for f in range(*frames) if f not in all_frames)
        raise SceneFormatError(scene_dir / image_name(prefix, gap, 0), None,
                               f"file is missing (frames {frames[0]}:{frames[1]} were asked for)")
    for cam, have in sorted(found.items()):
        for f in chosen:
            if f not in have:
                raise SceneFormatError(scene_dir / image_name(prefix, f, cam), None,
                                       "file is missing (cameras have inconsistent frame counts)")
    return chosen, frame_range


def parse_repairs(items: Sequence[dict], where: str) -> list[Repair]:
    """Repairs from dataset TOML tables {camera, frame, source_frame}."""
    out = []
    for i, item in enumerate(items):
        try:
            out.append(Repair(int(item["camera"]), int(item["frame"]), int(item["source_frame"])))
        except (KeyError, TypeError, ValueError):
            raise ConfigError(f"{where}: repairs[{i}] needs integer camera, frame and source_frame") from None
    return out


def _read(req: ReadRequest) -> tuple[RawScene, int]:
    repairs = parse_repairs(req.repairs, req.where)
    return read_technicolor(req.scene_dir, req.frames, req.test_cameras or ("cam10",), repairs, req.name), 1


register_format(RawFormat(
    "technicolor", "Technicolor: <Scene>_undist_<frame>_<cam>.png + cameras_parameters.txt -> prepared "
    "scenes (full size, the published 50-frame range per scene, test cam10).",
    "cameras_parameters.txt and *_undist_*.png", is_technicolor_scene, _read,
))
