"""Write scenes in the exact raw layouts of N3V, Technicolor and HyperNeRF (docs/datasets.md).

Used to turn synthetic scenes into raw-dataset replicas, so that the readers and `prepare` are
exercised end to end. The low-level writers take cameras and an image function
image_fn(camera index, frame index) -> [H,W,3] uint8; `write_raw_layout` feeds them from a
prepared scene on disk.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

import numpy as np

from ..errors import ConfigError
from ..io import atomic_write_bytes, atomic_write_json, atomic_write_text, save_png
from .formats.hypernerf import camera_json
from .formats.n3v import POSES_FILE, camera_to_llff
from .formats.technicolor import PARAMS_FILE, camera_to_row, image_name
from .prepare import resize_area
from .scene import Camera, PreparedScene

ImageFn = Callable[[int, int], np.ndarray]
LAYOUTS = ("n3v", "technicolor", "hypernerf")


# -- N3V ---------------------------------------------------------------------------------------------
def encode_video(path: Path, frames: Iterable[np.ndarray], fps: int = 30, crf: int = 0,
                 pix_fmt: str = "yuv444p") -> Path:
    """Encode [H,W,3] uint8 frames as H.264 mp4 (libx264), atomically. crf 0 with yuv444p is
    lossless in YUV, so the only loss is the RGB <-> YUV rounding (about 50 dB PSNR)."""
    import av

    frames = iter(frames)
    first = next(frames)
    h, w = first.shape[:2]
    tmp = path.with_name(f".{path.name}.tmp.mp4")
    try:
        with av.open(str(tmp), "w") as container:
            stream = container.add_stream("libx264", rate=fps)
            stream.width, stream.height, stream.pix_fmt = w, h, pix_fmt
            stream.options = {"crf": str(crf), "preset": "medium"}
            for image in itertools.chain([first], frames):
                for packet in stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(image), format="rgb24")):
                    container.mux(packet)
            for packet in stream.encode():
                container.mux(packet)
        tmp.replace(path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return path


def poses_bounds(cameras: Sequence[Camera], bounds: Sequence[tuple[float, float]]) -> np.ndarray:
    """[N,17] poses_bounds array of cameras (LLFF axes) and their (near, far) bounds."""
    rows = [np.concatenate([camera_to_llff(c).reshape(-1), np.asarray(b, dtype=np.float64)])
            for c, b in zip(cameras, bounds, strict=True)]
    return np.stack(rows)


def write_n3v(out: str | Path, cameras: Sequence[Camera], num_frames: int, image_fn: ImageFn,
              bounds: Sequence[tuple[float, float]] | None = None, fps: int = 30, crf: int = 0,
              pix_fmt: str = "yuv444p") -> Path:
    """<out>/camXX.mp4 + poses_bounds.npy. Camera names must be camNN and sort in list order
    (row i of poses_bounds.npy is the i-th video by name)."""
    out = Path(out)
    names = [c.name for c in cameras]
    if names != sorted(names) or not all(n.startswith("cam") for n in names):
        raise ConfigError(f"N3V layout: camera names must be cam00, cam01, ... in order, got {names}")
    out.mkdir(parents=True, exist_ok=True)
    bounds = bounds if bounds is not None else [(0.1, 100.0)] * len(cameras)
    for ci, cam in enumerate(cameras):
        encode_video(out / f"{cam.name}.mp4", (image_fn(ci, f) for f in range(num_frames)), fps, crf, pix_fmt)
    buf = _npy_bytes(poses_bounds(cameras, bounds))
    atomic_write_bytes(out / POSES_FILE, buf)
    return out


def _npy_bytes(arr: np.ndarray) -> bytes:
    import io

    b = io.BytesIO()
    np.save(b, arr)
    return b.getvalue()


# -- Technicolor -----------------------------------------------------------------------------------------
def write_technicolor(out: str | Path, cameras: Sequence[Camera], frame_numbers: Sequence[int],
                      image_fn: ImageFn, scene_name: str | None = None) -> Path:
    """<out>/<Scene>_undist_<frame:05d>_<cam:02d>.png + cameras_parameters.txt; camera i is the
    i-th camera; frame_numbers[f] is the file frame number of frame index f."""
    out = Path(out)
    scene_name = scene_name or out.name
    out.mkdir(parents=True, exist_ok=True)
    lines = ["f cu cv ar sk qw qx qy qz tx ty tz"]
    for cam in cameras:
        lines.append(" ".join(repr(float(v)) for v in camera_to_row(cam)))
    atomic_write_text(out / PARAMS_FILE, "\n".join(lines) + "\n")
    for ci in range(len(cameras)):
        for f, number in enumerate(frame_numbers):
            save_png(out / image_name(scene_name, number, ci), image_fn(ci, f))
    return out


# -- HyperNeRF ---------------------------------------------------------------------------------------------
def write_hypernerf(out: str | Path, views: Sequence[tuple[str, Camera, int, np.ndarray]],
                    train_ids: Sequence[str], val_ids: Sequence[str] = (),
                    near: float = 0.1, far: float = 100.0, scales: Sequence[int] = (1, 2)) -> Path:
    """HyperNeRF layout from views (image id, camera at full size, warp id, full-size image).

    val_ids empty means no validation split (the readers then use every 4th image + 2).
    rgb/<k>x images are the full images area-downscaled k times.
    """
    out = Path(out)
    ids = [v[0] for v in views]
    atomic_write_json(out / "dataset.json", {
        "count": len(ids), "num_exemplars": len(train_ids), "ids": ids,
        "train_ids": list(train_ids), "val_ids": list(val_ids)})
    atomic_write_json(out / "metadata.json", {
        i: {"warp_id": int(w), "appearance_id": int(w), "camera_id": 0 if i in set(train_ids) else 1}
        for i, _, w, _ in views})
    atomic_write_json(out / "scene.json", {"scale": 1.0, "center": [0.0, 0.0, 0.0], "near": near, "far": far})
    for image_id, cam, _, image in views:
        atomic_write_json(out / "camera" / f"{image_id}.json", camera_json(cam))
        for k in scales:
            size = (image.shape[1] // k, image.shape[0] // k)
            img = resize_area(image, size)
            save_png(out / "rgb" / f"{k}x" / f"{image_id}.png", img)
    return out


# -- from a prepared scene ------------------------------------------------------------------------------------
def _load(path: Path) -> np.ndarray:
    from PIL import Image

    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"))


def scene_bounds(scene: PreparedScene) -> list[tuple[float, float]]:
    """Per camera (near, far): depth percentiles of the scene's merged points, LLFF-style, or
    (0.1, 100) without points."""
    try:
        xyz = scene.load_points("merged")["xyz"].astype(np.float64)
    except Exception:
        xyz = np.zeros((0, 3))
    out = []
    for cam in scene.cameras:
        z = (xyz @ cam.w2c[:3, :3].T + cam.w2c[:3, 3])[:, 2] if len(xyz) else np.zeros(0)
        z = z[z > 0]
        out.append((float(np.percentile(z, 0.1) * 0.9), float(np.percentile(z, 99.9) * 1.1)) if len(z) else (0.1, 100.0))
    return out


def write_raw_layout(scene: PreparedScene, layout: str, out: str | Path, first_frame: int = 0,
                     hypernerf_val_ids: bool = True, crf: int = 0) -> Path:
    """Write a prepared scene in a raw layout at `out` (the scene folder).

    n3v: every camera must have every frame. technicolor: file frame numbers start at
    `first_frame`. hypernerf: a monocular scene is written view by view; a multi-view scene as a
    vrig-like capture (per frame one training camera, cycling, plus every test camera).
    """
    out = Path(out)
    if layout not in LAYOUTS:
        raise ConfigError(f"--layout {layout!r}: expected one of {', '.join(LAYOUTS)}")
    names = [c.name for c in scene.cameras]
    if layout in ("n3v", "technicolor"):
        missing = [(n, f) for n in names for f in range(scene.num_frames) if scene.images[n][f] is None]
        if missing:
            raise ConfigError(f"--layout {layout}: needs every camera at every frame; "
                              f"{missing[0][0]} has no image at frame {missing[0][1]} (a monocular scene fits hypernerf)")

        def image_fn(ci: int, f: int) -> np.ndarray:
            return _load(scene.image_path(names[ci], f))

        if layout == "n3v":
            return write_n3v(out, scene.cameras, scene.num_frames, image_fn, scene_bounds(scene), crf=crf)
        return write_technicolor(out, scene.cameras, [first_frame + f for f in range(scene.num_frames)], image_fn)

    views, train_ids, val_ids = [], [], []
    multi = any(sum(p is not None for p in scene.images[n]) > 1 for n in scene.train_cameras)
    for f in range(scene.num_frames):
        cams = [n for n in names if scene.images[n][f] is not None]
        if multi:
            trains = [n for n in scene.train_cameras if n in cams]
            cams = ([trains[f % len(trains)]] if trains else []) + [n for n in scene.test_cameras if n in cams]
        for n in cams:
            image_id = f"{n}_{first_frame + f:05d}" if multi else n
            views.append((image_id, scene.camera(n), first_frame + f, _load(scene.image_path(n, f))))
            if n in scene.train_cameras:
                train_ids.append(image_id)
            elif n in scene.test_cameras:
                val_ids.append(image_id)
    bounds = scene_bounds(scene)
    near, far = min(b[0] for b in bounds), max(b[1] for b in bounds)
    return write_hypernerf(out, views, train_ids, val_ids if hypernerf_val_ids else (), near, far)

