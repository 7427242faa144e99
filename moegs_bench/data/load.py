"""`SceneData`: a prepared scene with its images loaded once onto a device (uint8)."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from ..errors import SceneFormatError
from .images import read_image
from .scene import PreparedScene, read_scene


@dataclass
class Views:
    """The images of one split. cams [V] and frames [V] (CPU, long) index the scene's cameras
    and times; images [V,H,W,3] uint8 on the device; depth [V,H,W] and labels [V,H,W] when the scene has
    ground truth and it was requested."""

    cams: Tensor
    frames: Tensor
    images: Tensor
    depth: Tensor | None = None
    labels: Tensor | None = None

    def __len__(self) -> int:
        return len(self.cams)


def frame_span(times, start: int, end: int) -> tuple[float, float]:
    """The times [t0, t1) that frames [start, end) of a scene with frame times `times` [F]
    cover: t1 is the next frame's time, or 1 after the last frame."""
    return float(times[start]), float(times[end]) if end < len(times) else 1.0


@dataclass
class SceneData:
    """A scene on a device. Ks [C,3,3], viewmats [C,4,4] (float32), times [F] float32."""

    scene: PreparedScene
    device: torch.device
    Ks: Tensor
    viewmats: Tensor
    times: Tensor
    width: int
    height: int
    splits: dict[str, Views] = field(default_factory=dict)
    # frames [start, end) of `scene` this data covers, when it is a temporal segment of it
    segment: tuple[int, int] | None = None

    @property
    def extent(self) -> float:
        return self.scene.scene_extent()

    @property
    def synthetic_size(self) -> str | None:
        """The size a synthetic scene was generated at (tiny, small, full); None otherwise."""
        meta = self.scene.meta
        gen = meta.get("generator") if isinstance(meta.get("generator"), dict) else meta
        size = gen.get("size") if isinstance(gen, dict) else None
        return size if isinstance(size, str) else None

    def camera_batch(self, cams: Tensor) -> tuple[Tensor, Tensor]:
        """viewmats [B,4,4] and Ks [B,3,3] for camera indices [B]."""
        cams = cams.to(self.device)
        return self.viewmats[cams], self.Ks[cams]

    def segment_span(self, start: int, end: int) -> tuple[float, float]:
        """The times [t0, t1) that frames [start, end) cover (see `frame_span`)."""
        return frame_span(self.times, start, end)

    def temporal_segment(self, start: int, end: int) -> SceneData:
        """Frames [start, end) as a scene of their own, as a method that trains one model per
        segment sees them: times renormalised to [0, 1) over the segment, frame indices from 0,
        only those frames' views (images copied onto the device)."""
        if not 0 <= start < end <= len(self.times):
            raise ValueError(f"temporal_segment: frames {start}:{end} outside 0:{len(self.times)}")
        t0, t1 = self.segment_span(start, end)
        out = SceneData(self.scene, self.device, self.Ks, self.viewmats, (self.times[start:end] - t0) / (t1 - t0),
                        self.width, self.height, segment=(start, end))
        for split, views in self.splits.items():
            keep = (views.frames >= start) & (views.frames < end)
            on_device = keep.to(self.device)
            out.splits[split] = Views(views.cams[keep], views.frames[keep] - start, views.images[on_device],
                                      None if views.depth is None else views.depth[on_device],
                                      None if views.labels is None else views.labels[on_device])
        return out

    def image_float(self, split: str, idx: Tensor) -> Tensor:
        """Images of views `idx` as float in [0,1]: [B,H,W,3]."""
        return self.splits[split].images[idx.to(self.device)].float() / 255.0


def load_scene(root: str | Path | PreparedScene, device: torch.device,
               splits: tuple[str, ...] = ("train", "test"), with_gt: bool = False,
               workers: int = 4) -> SceneData:
    """Read (and validate) a prepared scene and load the images of `splits` onto `device`.

    All images must have one size (every dataset here has one per scene). With `with_gt`,
    ground-truth depth and labels (where the scene has them) are loaded for the test split
    (evaluation needs them there; training never reads them).
    """
    scene = root if isinstance(root, PreparedScene) else read_scene(root)
    sizes = {(c.width, c.height) for c in scene.cameras}
    if len(sizes) != 1:
        raise SceneFormatError(scene.root / "scene.json", "cameras", f"cameras have different image sizes {sorted(sizes)}")
    width, height = sizes.pop()
    Ks = torch.tensor(np.stack([c.K for c in scene.cameras]), dtype=torch.float32, device=device)
    viewmats = torch.tensor(np.stack([c.w2c for c in scene.cameras]), dtype=torch.float32, device=device)
    data = SceneData(scene, device, Ks, viewmats, torch.tensor(scene.times, dtype=torch.float32, device=device),
                     width, height)
    with ThreadPoolExecutor(max_workers=workers) as pool:
        for split in splits:
            data.splits[split] = _load_views(scene, split, device, width, height,
                                             with_gt and split == "test", pool)
    return data


def _load_views(scene: PreparedScene, split: str, device, width: int, height: int, with_gt: bool,
                pool: ThreadPoolExecutor) -> Views:
    views = scene.views(split)
    names = [c.name for c in scene.cameras]
    paths = [scene.image_path(names[c], f) for c, f in views]
    images = torch.empty(len(views), height, width, 3, dtype=torch.uint8, device=device)
    for i, (path, img) in enumerate(zip(paths, pool.map(read_image, paths), strict=False)):
        if img.shape != (height, width, 3):
            raise SceneFormatError(path, None, f"image is {img.shape[1]}x{img.shape[0]}, scene.json says {width}x{height}")
        images[i] = torch.from_numpy(img).to(device)
    out = Views(torch.tensor([c for c, _ in views], dtype=torch.long),
                torch.tensor([f for _, f in views], dtype=torch.long), images)
    if with_gt and "depth" in scene.gt:
        dpaths = [scene.root / scene.gt["depth"][names[c]][f] for c, f in views]
        out.depth = torch.from_numpy(np.stack(list(pool.map(np.load, dpaths)))).float().to(device)
    if with_gt and "labels" in scene.gt:
        lpaths = [scene.root / scene.gt["labels"][names[c]][f] for c, f in views]
        out.labels = torch.from_numpy(np.stack(list(pool.map(lambda p: read_image(p, None), lpaths)))).long().to(device)
    return out
