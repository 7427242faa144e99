"""Frame extraction: decode a raw scene's frames, resize them (area filter) and write PNGs.

    extract_images(raw, scenes, workers, progress)   every listed image not on disk yet
    resize_area(image, size)                         the area filter (OpenCV's INTER_AREA)
"""

from __future__ import annotations

import os
from collections import deque
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from multiprocessing import get_context
from pathlib import Path

import numpy as np

from ..errors import SceneFormatError
from ..io import save_png
from ..progress import ProgressFactory, Tally, task
from .formats import RawScene
from .scene import PreparedScene


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


# PNG encoding holds the GIL: images of at least this many pixels are encoded in processes.
PROCESS_ENCODE_PIXELS = 512 * 384


def extract_images(raw: RawScene, scenes: Sequence[PreparedScene], workers: int,
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


__all__ = ["extract_images", "resize_area", "PROCESS_ENCODE_PIXELS"]
