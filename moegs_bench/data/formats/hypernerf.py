"""HyperNeRF (Nerfies) monocular raw layout (REFERENCE.md §3).

    <scene>/dataset.json      {"ids": [...], "train_ids": [...], "val_ids": [...]}
    <scene>/metadata.json     {id: {"warp_id": int, "camera_id": int, "appearance_id": int}}
    <scene>/scene.json        {"center": [3], "scale": s, "near": n, "far": f}
    <scene>/camera/<id>.json  orientation [3,3] (world-to-camera rotation, OpenCV axes),
                              position [3] (camera centre), focal_length, principal_point [2],
                              pixel_aspect_ratio, skew, image_size [W,H] (of rgb/1x)
    <scene>/rgb/<k>x/<id>.png images downscaled k times

Every image is its own camera. Frame = warp_id; time t = (warp_id - start) / (end - start) over
the frame range (the original code divides by the largest warp id instead; prepared times must
lie in [0, 1)). Split: train_ids / val_ids when val_ids is not empty, else every 4th image
(index i % 4 == 0) trains and the image 2 later tests, the last such one dropped, as in the
4DGaussians loader. Distortion parameters are ignored, as the original methods do.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ...errors import ConfigError, SceneFormatError
from ..images import image_size, read_image
from ..scene import Camera, rotation_problem
from . import RawFormat, RawScene, ReadRequest, register_format, select_frames

REQUIRED = ("dataset.json", "metadata.json", "scene.json")


def load_json(path: Path) -> Any:
    if not path.is_file():
        raise SceneFormatError(path, None, "file is missing")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise SceneFormatError(path, None, f"invalid JSON at line {exc.lineno} column {exc.colno}: {exc.msg}") from None


def _field(obj: Any, key: str, path: Path, kind=None):
    if not isinstance(obj, dict) or key not in obj:
        raise SceneFormatError(path, key, "missing field")
    val = obj[key]
    if kind is not None and not isinstance(val, kind):
        raise SceneFormatError(path, key, f"expected {getattr(kind, '__name__', kind)}, got {type(val).__name__}")
    return val


def _array(value: Any, shape: tuple[int, ...], path: Path, key: str) -> np.ndarray:
    try:
        arr = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        raise SceneFormatError(path, key, "expected numbers") from None
    if arr.shape != shape or not np.all(np.isfinite(arr)):
        raise SceneFormatError(path, key, f"expected finite numbers of shape {list(shape)}, got {list(arr.shape)}")
    return arr


def read_camera_json(path: Path, name: str, centered_principal_point: bool = False) -> Camera:
    """camera/<id>.json -> Camera at the rgb/1x image size."""
    obj = load_json(path)
    R = _array(_field(obj, "orientation", path), (3, 3), path, "orientation")
    problem = rotation_problem(R)
    if problem:
        raise SceneFormatError(path, "orientation", f"camera {name}: {problem}")
    position = _array(_field(obj, "position", path), (3,), path, "position")
    focal = float(_array(_field(obj, "focal_length", path), (), path, "focal_length"))
    width, height = (int(v) for v in _array(_field(obj, "image_size", path), (2,), path, "image_size"))
    aspect = float(_array(obj.get("pixel_aspect_ratio", 1.0), (), path, "pixel_aspect_ratio"))
    if focal <= 0 or aspect <= 0 or width <= 0 or height <= 0:
        raise SceneFormatError(path, "focal_length", "focal length, aspect and image size must be positive")
    if centered_principal_point:  # the 4DGaussians loader builds its camera from the FoV only
        cx, cy = width / 2.0, height / 2.0
    else:
        cx, cy = _array(_field(obj, "principal_point", path), (2,), path, "principal_point")
    K = np.array([[focal, 0.0, cx], [0.0, focal * aspect, cy], [0.0, 0.0, 1.0]])
    w2c = np.eye(4)
    w2c[:3, :3] = R
    w2c[:3, 3] = -R @ position
    return Camera(name, K, w2c, width, height)


def camera_json(cam: Camera) -> dict:
    """Camera (at the rgb/1x size) -> the camera/<id>.json object."""
    K = np.asarray(cam.K, dtype=np.float64)
    return {
        "orientation": np.asarray(cam.w2c, dtype=np.float64)[:3, :3].tolist(),
        "position": cam.center.tolist(),
        "focal_length": float(K[0, 0]),
        "principal_point": [float(K[0, 2]), float(K[1, 2])],
        "skew": float(K[0, 1]),
        "pixel_aspect_ratio": float(K[1, 1] / K[0, 0]),
        "radial_distortion": [0.0, 0.0, 0.0],
        "tangential_distortion": [0.0, 0.0],
        "image_size": [int(cam.width), int(cam.height)],
    }


def split_indices(num: int) -> tuple[list[int], list[int]]:
    """The 4DGaussians rule without val_ids: train i % 4 == 0; test = train + 2, last dropped."""
    train = list(range(0, num, 4))
    test = [i + 2 for i in train][:-1]
    return train, test


def is_hypernerf_scene(path: Path) -> bool:
    return (path / "dataset.json").is_file() or (path / "metadata.json").is_file()


def read_hypernerf(
    scene_dir: str | Path,
    frames: tuple[int, int] | None = None,
    downscale: int = 2,
    centered_principal_point: bool = False,
    name: str | None = None,
) -> RawScene:
    """Read and validate one HyperNeRF scene folder, using the images of rgb/<downscale>x.

    frames: [start, end) of warp ids (None = all). Raises SceneFormatError naming the file and
    field on the first problem.
    """
    scene_dir = Path(scene_dir)
    name = name or scene_dir.name
    for req in REQUIRED:
        if not (scene_dir / req).is_file():
            raise SceneFormatError(scene_dir / req, None, "file is missing (a HyperNeRF scene needs "
                                   + ", ".join(REQUIRED) + ")")
    ds_path, meta_path = scene_dir / "dataset.json", scene_dir / "metadata.json"
    dataset, metadata = load_json(ds_path), load_json(meta_path)
    scene_info = load_json(scene_dir / "scene.json")
    ids = [str(i) for i in _field(dataset, "ids", ds_path, list)]
    if not ids:
        raise SceneFormatError(ds_path, "ids", "no images")
    val_ids = [str(i) for i in dataset.get("val_ids") or []]
    if val_ids:
        train_set = {str(i) for i in _field(dataset, "train_ids", ds_path, list)}
        train = [i for i in ids if i in train_set]
        test = [i for i in ids if i in set(val_ids)]
        rule = "train_ids/val_ids"
    else:
        tr, te = split_indices(len(ids))
        train, test = [ids[i] for i in tr], [ids[i] for i in te if i < len(ids)]
        rule = "every 4th image trains, +2 tests"

    warps = {i: _warp(metadata, i, meta_path) for i in ids}
    _, frame_range = select_frames(list(warps.values()), frames, str(scene_dir), option="--frames")
    start, end = frame_range
    train = [i for i in train if start <= warps[i] < end]
    test = [i for i in test if start <= warps[i] < end]
    kept = [i for i in ids if i in set(train) | set(test)]
    if not train:
        raise ConfigError(f"--frames {start}:{end}: no training images of {scene_dir} in that range")

    rgb_dir = scene_dir / "rgb" / f"{downscale}x"
    if not rgb_dir.is_dir():
        raise SceneFormatError(rgb_dir, None, "image folder is missing")
    cameras = []
    for i in kept:
        img = rgb_dir / f"{i}.png"
        if not img.is_file():
            raise SceneFormatError(img, None, "file is missing (listed in dataset.json ids)")
        cam_path = scene_dir / "camera" / f"{i}.json"
        cam = read_camera_json(cam_path, i, centered_principal_point)
        w, h = image_size(img)
        if abs(w * downscale - cam.width) > downscale or abs(h * downscale - cam.height) > downscale:
            raise SceneFormatError(img, None, f"image is {w}x{h}, but {cam_path.name} has image_size "
                                   f"{cam.width}x{cam.height}, about {cam.width / downscale:.0f}x"
                                   f"{cam.height / downscale:.0f} in rgb/{downscale}x")
        cameras.append(cam.scaled(w, h))  # intrinsics in pixels of the stored images

    def read_frames(camera: str, fids: Sequence[int]) -> Iterator[tuple[int, np.ndarray]]:
        for f in fids:
            if f != warps[camera]:
                raise KeyError(f"image {camera} has no frame {f}")
            yield f, read_image(rgb_dir / f"{camera}.png")

    return RawScene(
        name=name, dataset="hypernerf", cameras=cameras,
        frame_ids=sorted({warps[i] for i in kept}), frame_range=frame_range,
        views={i: [warps[i]] for i in kept}, train_cameras=train, test_cameras=test,
        read_frames=read_frames,
        meta={"source": str(scene_dir.resolve()), "rgb": f"rgb/{downscale}x", "split_rule": rule,
              "camera_ids": {i: _camera_id(metadata, i) for i in kept},
              **{k: scene_info[k] for k in ("center", "scale", "near", "far") if isinstance(scene_info, dict) and k in scene_info}},
        camera_files=[scene_dir / r for r in REQUIRED] + [scene_dir / "camera" / f"{i}.json" for i in kept],
        frame_files=lambda camera, fids: [rgb_dir / f"{camera}.png"],
    )


def _warp(metadata: Any, image_id: str, path: Path) -> int:
    entry = _field(metadata, image_id, path, dict)
    warp = entry.get("warp_id", entry.get("time_id"))
    if not isinstance(warp, int) or warp < 0:
        raise SceneFormatError(path, f"{image_id}.warp_id", "expected a non-negative integer")
    return warp


def _camera_id(metadata: dict, image_id: str) -> int:
    val = metadata[image_id].get("camera_id", 0)
    return int(val) if isinstance(val, int) else 0


def available_downscales(scene_dir: Path) -> list[int]:
    """The k of every rgb/<k>x folder, sorted."""
    out = []
    for p in (scene_dir / "rgb").glob("*x"):
        if p.is_dir() and p.name[:-1].isdigit():
            out.append(int(p.name[:-1]))
    return sorted(out)


def _read(req: ReadRequest) -> tuple[RawScene, int]:
    """Reads rgb/<k>x when the output is 1/k of the full size and that folder exists."""
    have = available_downscales(req.scene_dir)
    use = req.downscale if req.downscale is not None and req.downscale in have else 1
    if use not in have:
        raise SceneFormatError(req.scene_dir / "rgb" / f"{use}x", None, "image folder is missing")
    centered = bool(req.settings.get("centered_principal_point", False))
    return read_hypernerf(req.scene_dir, req.frames, use, centered, req.name), use


register_format(RawFormat(
    "hypernerf", "HyperNeRF: dataset/metadata/scene/camera json + rgb/<k>x -> prepared scenes (rgb/2x, "
    "frames = warp ids, split from val_ids or every 4th image).",
    "dataset.json, metadata.json, scene.json, camera/ and rgb/", is_hypernerf_scene, _read,
))
