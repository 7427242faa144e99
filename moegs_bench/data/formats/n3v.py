"""Neural 3D Video (N3V / DyNeRF) raw layout (REFERENCE.md §3).

    <scene>/cam00.mp4 ... camNN.mp4   synchronised videos (2704x2028, 30 fps)
    <scene>/poses_bounds.npy          [N,17]: per camera a 3x5 matrix [R | c | hwf] (row-major)
                                      followed by near and far bounds

The 3x3 block is camera-to-world with columns [down, right, back] (LLFF axes), c the camera
centre, hwf = [H, W, focal]. Row i belongs to the i-th video in sorted name order, as in the
original pre-processing scripts. Cameras are PINHOLE with the principal point at the centre.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np

from ...errors import ConfigError, SceneFormatError
from ..scene import Camera, rotation_problem
from . import RawFormat, RawScene, ReadRequest, register_format, select_frames

POSES_FILE = "poses_bounds.npy"


# -- pose conversion ------------------------------------------------------------------------
def llff_to_camera(pose: np.ndarray, name: str) -> Camera:
    """One [3,5] LLFF pose [R_llff | centre | hwf] -> Camera (OpenCV axes) at the hwf size."""
    pose = np.asarray(pose, dtype=np.float64)
    down, right, back, centre = pose[:, 0], pose[:, 1], pose[:, 2], pose[:, 3]
    h, w, focal = pose[:, 4]
    R_c2w = np.stack([right, down, -back], axis=1)  # OpenCV camera axes [right, down, forward]
    w2c = np.eye(4)
    w2c[:3, :3] = R_c2w.T
    w2c[:3, 3] = -R_c2w.T @ centre
    K = np.array([[focal, 0.0, w / 2.0], [0.0, focal, h / 2.0], [0.0, 0.0, 1.0]])
    return Camera(name, K, w2c, int(round(w)), int(round(h)))


def camera_to_llff(cam: Camera) -> np.ndarray:
    """Camera -> [3,5] LLFF pose. Needs fx == fy and the principal point at the image centre
    (what the N3V layout can express); raises ValueError otherwise."""
    K = np.asarray(cam.K, dtype=np.float64)
    if not np.isclose(K[0, 0], K[1, 1], rtol=1e-9):
        raise ValueError(f"{cam.name}: the N3V layout needs fx == fy, got {K[0, 0]} and {K[1, 1]}")
    if not (np.isclose(K[0, 2], cam.width / 2, atol=1e-9) and np.isclose(K[1, 2], cam.height / 2, atol=1e-9)):
        raise ValueError(f"{cam.name}: the N3V layout needs the principal point at the image centre")
    R_c2w = np.asarray(cam.w2c, dtype=np.float64)[:3, :3].T
    right, down, forward = R_c2w[:, 0], R_c2w[:, 1], R_c2w[:, 2]
    pose = np.zeros((3, 5))
    pose[:, 0], pose[:, 1], pose[:, 2] = down, right, -forward
    pose[:, 3] = cam.center
    pose[:, 4] = [cam.height, cam.width, K[0, 0]]
    return pose


def read_poses_bounds(path: Path, names: Sequence[str] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """poses_bounds.npy -> poses [N,3,5], bounds [N,2]; SceneFormatError on a bad file.

    names: the camera of each row (the videos in name order), for messages; every rotation
    block must be a proper rotation (a reflection, determinant -1, is rejected here rather
    than by whatever reads the prepared scene)."""
    if not path.is_file():
        raise SceneFormatError(path, None, "file is missing (an N3V scene needs poses_bounds.npy)")
    try:
        arr = np.load(path, allow_pickle=False)
    except Exception as exc:
        raise SceneFormatError(path, None, f"unreadable numpy file ({exc})") from None
    if arr.ndim != 2 or arr.shape[1] != 17 or len(arr) == 0:
        raise SceneFormatError(path, None, f"expected an [N,17] array, got shape {list(arr.shape)}")
    try:
        arr = arr.astype(np.float64)
    except (TypeError, ValueError):
        raise SceneFormatError(path, None, f"expected numbers, got dtype {arr.dtype}") from None
    poses = arr[:, :15].reshape(-1, 3, 5)
    for i, row in enumerate(arr):
        if not np.all(np.isfinite(row)):
            raise SceneFormatError(path, _row_name(i, names), "contains non-finite values (NaN or inf)")
        if np.any(poses[i, :, 4] <= 0):
            raise SceneFormatError(path, _row_name(i, names), "hwf: height, width and focal must be positive")
        problem = rotation_problem(poses[i, :, :3])
        if problem:
            raise SceneFormatError(path, _row_name(i, names), problem)
    return poses, arr[:, 15:17]


def _row_name(i: int, names: Sequence[str] | None) -> str:
    """'row i (camXX)' when the row's camera is known, else 'row i'."""
    return f"row {i} ({names[i]})" if names is not None and i < len(names) else f"row {i}"


# -- videos ----------------------------------------------------------------------------------
def video_info(path: Path) -> tuple[int, int, int]:
    """(frame count from the container header or 0 if unknown, width, height) of one video."""
    import av

    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise SceneFormatError(path, None, "no video stream")
            stream = container.streams.video[0]
            return int(stream.frames or 0), int(stream.codec_context.width), int(stream.codec_context.height)
    except SceneFormatError:
        raise
    except Exception as exc:
        raise SceneFormatError(path, None, f"unreadable video ({exc})") from None


def iter_video_frames(path: Path, frame_ids: Sequence[int]) -> Iterator[tuple[int, np.ndarray]]:
    """Decode `path` (threaded) and yield (frame number, [H,W,3] uint8 RGB) for `frame_ids`.

    Frames are numbered in decoding order from 0, as the original extraction scripts do.
    Raises SceneFormatError if the video ends before the last wanted frame or cannot be decoded.
    """
    import av

    wanted = sorted(set(int(f) for f in frame_ids))
    if not wanted:
        return
    want, last, index = set(wanted), wanted[-1], -1
    try:
        with av.open(str(path)) as container:
            stream = container.streams.video[0]
            stream.thread_type = "AUTO"  # frame + slice threads in the decoder
            for index, frame in enumerate(container.decode(stream)):
                if index in want:
                    yield index, frame.to_ndarray(format="rgb24")
                if index >= last:
                    return
    except SceneFormatError:
        raise
    except Exception as exc:
        raise SceneFormatError(path, None, f"cannot decode video at frame {index + 1} ({exc})") from None
    raise SceneFormatError(path, None, f"video is too short: it has {index + 1} frames, frame {last} is needed")


# -- the reader ---------------------------------------------------------------------------------
def find_videos(scene_dir: Path) -> list[Path]:
    return sorted(p for p in scene_dir.glob("cam*.mp4") if p.is_file())


def is_n3v_scene(path: Path) -> bool:
    return (path / POSES_FILE).is_file() or bool(find_videos(path))


def read_n3v(
    scene_dir: str | Path,
    frames: tuple[int, int] | None = None,
    test_cameras: Sequence[str] = ("cam00",),
    drop_cameras: Sequence[str] = (),
    name: str | None = None,
) -> RawScene:
    """Read and validate one N3V scene folder.

    frames: [start, end) of source frames (None = all frames every video has; then all videos
    must agree on their frame count). drop_cameras are removed after pairing poses with videos
    (coffee_martini's cam13). Raises SceneFormatError / ConfigError naming the file or option.
    """
    scene_dir = Path(scene_dir)
    name = name or scene_dir.name
    videos = find_videos(scene_dir)
    poses, bounds = read_poses_bounds(scene_dir / POSES_FILE, [v.stem for v in videos])
    if not videos:
        raise SceneFormatError(scene_dir, None, "no cam*.mp4 videos found")
    if len(videos) != len(poses):
        raise SceneFormatError(scene_dir / POSES_FILE, None,
                               f"has {len(poses)} poses but the folder has {len(videos)} cam*.mp4 videos")

    infos = {v.stem: (v, *video_info(v)) for v in videos}
    cameras, near_far = [], {}
    for pose, bound, video in zip(poses, bounds, videos, strict=True):
        cam = llff_to_camera(pose, video.stem)
        _, _, vw, vh = infos[video.stem]
        if abs(vw / vh - cam.width / cam.height) > 0.01 * cam.width / cam.height:
            raise SceneFormatError(video, None, f"video is {vw}x{vh} but poses_bounds.npy says "
                                   f"{cam.width}x{cam.height} (different aspect ratio)")
        cameras.append(cam.scaled(vw, vh))  # intrinsics in pixels of the decoded frames
        near_far[video.stem] = [float(bound[0]), float(bound[1])]
    cameras = [c for c in cameras if c.name not in set(drop_cameras)]
    names = [c.name for c in cameras]
    for cam in test_cameras:
        if cam not in names:
            raise ConfigError(f"test camera {cam!r} is not among the videos of {scene_dir} ({', '.join(names)})")

    counts = {n: infos[n][1] for n in names}
    frame_ids, frame_range = _select_video_frames(scene_dir, counts, frames)
    view = {n: list(frame_ids) for n in names}

    def read_frames(camera: str, ids: Sequence[int]) -> Iterator[tuple[int, np.ndarray]]:
        return iter_video_frames(infos[camera][0], ids)

    return RawScene(
        name=name, dataset="n3v", cameras=cameras, frame_ids=frame_ids, frame_range=frame_range,
        views=view, train_cameras=[n for n in names if n not in test_cameras],
        test_cameras=list(test_cameras), read_frames=read_frames,
        meta={"source": str(scene_dir.resolve()), "near_far": near_far,
              "dropped_cameras": [c for c in drop_cameras if c in infos]},
        camera_files=[scene_dir / POSES_FILE], frame_files=lambda camera, ids: [infos[camera][0]],
    )


def _select_video_frames(scene_dir: Path, counts: dict[str, int], frames: tuple[int, int] | None):
    """Frame numbers to use, checked against every video's header frame count."""
    known = {n: c for n, c in counts.items() if c > 0}
    if frames is not None:
        for cam, count in known.items():
            if count < frames[1]:
                raise SceneFormatError(scene_dir / f"{cam}.mp4", None,
                                       f"video has {count} frames, frames {frames[0]}:{frames[1]} were asked for")
        if known:
            return select_frames(range(min(known.values())), frames, str(scene_dir))
        return list(range(frames[0], frames[1])), frames
    if not known:
        raise SceneFormatError(scene_dir, None, "video headers do not give a frame count; pass --frames START:END")
    if len(set(known.values())) > 1:
        listing = ", ".join(f"{n}: {c}" for n, c in sorted(known.items()))
        raise SceneFormatError(scene_dir, None, f"videos have inconsistent frame counts ({listing}); "
                               "pass --frames START:END")
    return select_frames(range(min(known.values())), None, str(scene_dir))


def _read(req: ReadRequest) -> tuple[RawScene, int]:
    drop = () if req.flags.get("keep_dropped_cameras") else req.drop_cameras
    return read_n3v(req.scene_dir, req.frames, req.test_cameras or ("cam00",), drop, req.name), 1


register_format(RawFormat(
    "n3v", "N3V: camXX.mp4 + poses_bounds.npy -> prepared scenes (default half size, frames 0:300, test cam00).",
    "poses_bounds.npy and cam*.mp4", is_n3v_scene, _read,
    {"keep_dropped_cameras": "Keep cameras the dataset file drops (coffee_martini cam13)."},
))
