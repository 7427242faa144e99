"""Pseudo-labels for distillation (MoE-GS §3.4, Eq. 11): the trained mixture's image I_MoE and
gates G'_k of every training view, rendered once from a stored router and its experts and
cached on disk, then served to each expert's retraining as `train.losses.DistillTargets`.

A cache folder `<folder>/<key>/` holds

    images.npy   uint8 [V,H,W,3]    I_MoE of the V training views (split order)
    gates.npy    float16 [V,K,H,W]  G'_k of the K experts (pool order, `meta.json` names)
    meta.json    key, expert names, views (camera, frame), temperature; written last

The key is the caller's content key (router run key + scene data + code): another router or
scene gives another key, and `pseudo_labels` then renders afresh and removes older keys.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from ..data.load import SceneData, Views
from ..errors import ConfigError, MoegsError
from ..io import atomic_write_json
from ..progress import Progress
from ..train.losses import DistillTargets
from .pool import ExpertPool
from .routers import Router

META_FILE, IMAGES_FILE, GATES_FILE = "meta.json", "images.npy", "gates.npy"
FORMAT = 1  # layout version of a cache folder (part of its meta)
WEIGHTINGS = ("routing", "none")  # G'_k masks (Eq. 11) or none (the paper's "w/o weight")


@dataclass
class DistillConfig:
    """Distillation settings (MoE-GS Eq. 11)."""

    # λ of Eq. 11 (ground truth vs mixture): the paper names it but prints no value (§3.4,
    # App. G), so both supervisions weigh the same by default
    lam: float = 0.5
    # pseudo-labels up to this size are moved to the device once; larger ones are read per
    # step from the memory-mapped cache
    device_mb: float = 4096.0

    def __post_init__(self) -> None:
        if not 0.0 <= self.lam <= 1.0:
            raise ConfigError(f"--distill-lambda {self.lam}: Eq. 11's λ must lie in [0, 1]")
        if self.device_mb < 0:
            raise ConfigError(f"distillation device_mb {self.device_mb}: must not be negative")


def check_weighting(weighting: str, option: str = "--distill-weighting") -> str:
    """`weighting` if it is one of WEIGHTINGS, else ConfigError naming `option`."""
    if weighting not in WEIGHTINGS:
        raise ConfigError(f"{option} {weighting!r}: expected {' or '.join(WEIGHTINGS)}")
    return weighting


@dataclass
class PseudoLabels:
    """A cache folder opened: images uint8 [V,H,W,3] and gates float16 [V,K,H,W] (memory-mapped
    numpy arrays), the experts' names (gate order), the views (cams [V], frames [V]), whether
    this call rendered them."""

    folder: Path
    images: np.ndarray
    gates: np.ndarray
    names: list[str]
    cams: np.ndarray
    frames: np.ndarray
    seconds: float = 0.0  # how long rendering them took (when they were rendered)
    rendered: bool = False

    def expert_index(self, name: str) -> int:
        if name not in self.names:
            raise ConfigError(f"pseudo-labels in {self.folder} hold experts {', '.join(self.names)}, not {name!r}")
        return self.names.index(name)

    def targets(self, expert: str, weighting: str, device: torch.device, lam: float = 0.5,
                keep: Tensor | None = None, device_mb: float = 4096.0) -> DistillTargets:
        """Eq. 11's targets of expert `expert` for the training loop. weighting "routing": its
        gates G'_k; "none": no masks (the provider gives None). keep: bool [V] over the stored
        views, the views a temporal segment trains on (its view i is the i-th kept one).
        Arrays up to `device_mb` go to `device` once, larger ones are read per step."""
        check_weighting(weighting, "weighting")
        k = self.expert_index(expert)
        rows = np.arange(len(self.cams)) if keep is None else np.flatnonzero(keep.cpu().numpy())
        nbytes = len(rows) * self.images[0].nbytes * (1 + (2 / 3 if weighting == "routing" else 0))
        if nbytes <= device_mb * 2**20:
            images = torch.from_numpy(np.ascontiguousarray(self.images[rows])).to(device)
            gates = (torch.from_numpy(np.ascontiguousarray(self.gates[rows, k])).to(device)
                     if weighting == "routing" else None)

            def on_device(idx: Tensor) -> tuple[Tensor | None, Tensor]:
                i = idx.to(device)
                return (None if gates is None else gates[i].float()), images[i].float() / 255.0

            return DistillTargets(on_device, lam)

        def from_disk(idx: Tensor) -> tuple[Tensor | None, Tensor]:
            r = rows[idx.cpu().numpy()]
            image = torch.from_numpy(np.ascontiguousarray(self.images[r])).to(device).float() / 255.0
            if weighting != "routing":
                return None, image
            return torch.from_numpy(np.ascontiguousarray(self.gates[r, k])).to(device).float(), image

        return DistillTargets(from_disk, lam)


def segment_views(views: Views, start: int, end: int) -> Tensor:
    """bool [V]: the views of frames [start, end), the ones `SceneData.temporal_segment` keeps
    (in the same order)."""
    return (views.frames >= start) & (views.frames < end)


def render_pseudo_labels(router: Router, pool: ExpertPool, images: np.ndarray, gates: np.ndarray,
                         split: str = "train", temperature: float | None = None,
                         progress: Progress | None = None) -> None:
    """Render every view of `split` through the mixture into `images` (uint8 [V,H,W,3], I_MoE
    rounded) and `gates` (float16 [V,K,H,W], G'), e.g. memory-mapped files. temperature:
    default the router's evaluation temperature (the mixture as evaluated)."""
    views = pool.data.splits[split]
    temp = router.cfg.eval_temp if temperature is None else temperature
    router.eval()
    for i in range(len(views)):
        with torch.no_grad():
            out = router(pool, int(views.cams[i]), int(views.frames[i]), temp)
        images[i] = (out.image[0].clamp(0, 1) * 255.0).round().to(torch.uint8).cpu().numpy()
        gates[i] = out.gates[:, 0].to(torch.float16).cpu().numpy()
        if progress is not None:
            progress(i + 1, len(views), None)


def _open(folder: Path, key: str, views: Views, names: Sequence[str]) -> PseudoLabels | None:
    """The cache in `folder` if complete, made with `key`, for these views and experts."""
    meta_path = folder / META_FILE
    if not meta_path.is_file():
        return None
    try:
        meta = json.loads(meta_path.read_text())
        images = np.load(folder / IMAGES_FILE, mmap_mode="r")
        gates = np.load(folder / GATES_FILE, mmap_mode="r")
    except (OSError, ValueError):  # unreadable or truncated: rendered again
        return None
    cams, frames = views.cams.numpy(), views.frames.numpy()
    stored = np.asarray(meta.get("views", []), dtype=np.int64).reshape(-1, 2)
    if (meta.get("key") != key or meta.get("format") != FORMAT or list(meta.get("names", [])) != list(names)
            or stored.shape[0] != len(cams) or not (stored == np.stack([cams, frames], 1)).all()
            or images.shape[0] != len(cams) or gates.shape[:2] != (len(cams), len(names))):
        return None
    return PseudoLabels(folder, images, gates, list(names), cams, frames, float(meta.get("seconds", 0.0)))


def _temp_array(folder: Path, name: str, shape: tuple[int, ...], dtype) -> tuple[Path, np.ndarray]:
    """A .npy file beside `folder/name` under a temporary name, open as a writable memory map
    (filled in place: no copy of it in memory); renamed onto its name once complete."""
    fd, tmp = tempfile.mkstemp(prefix=f".{name}.", suffix=".tmp", dir=folder)
    os.close(fd)
    return Path(tmp), np.lib.format.open_memmap(tmp, mode="w+", dtype=dtype, shape=shape)


def pseudo_labels(folder: str | Path, key: str, data: SceneData, names: Sequence[str],
                  source: Callable[[], tuple[Router, ExpertPool]], *, split: str = "train",
                  temperature: float | None = None, progress: Progress | None = None) -> PseudoLabels:
    """The pseudo-labels of the views of `split` of `data` in `<folder>/<key>/`: opened when
    that cache is complete and matches (views, expert `names` in gate order), else rendered by
    the router and pool that `source()` returns (called only then) and stored there, other
    keys' folders removed. Returns them opened (memory-mapped), `rendered` telling whether this
    call rendered them."""
    views = data.splits[split]
    root = Path(folder)
    out = root / key
    if (found := _open(out, key, views, names)) is not None:
        return found
    router, pool = source()
    if list(pool.names) != list(names):
        raise ConfigError(f"pseudo-labels: the pool's experts {pool.names} are not {list(names)}")
    temp = router.cfg.eval_temp if temperature is None else temperature
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    w, h, v, k = data.width, data.height, len(views), len(names)
    temps: list[Path] = []
    t0 = time.perf_counter()
    try:  # meta.json, written last, marks the folder complete; a crash leaves no meta
        img_tmp, images = _temp_array(out, IMAGES_FILE, (v, h, w, 3), np.uint8)
        temps.append(img_tmp)
        gate_tmp, gates = _temp_array(out, GATES_FILE, (v, k, h, w), np.float16)
        temps.append(gate_tmp)
        render_pseudo_labels(router, pool, images, gates, split, temp, progress)
        images.flush()
        gates.flush()
        del images, gates
        os.replace(img_tmp, out / IMAGES_FILE)
        os.replace(gate_tmp, out / GATES_FILE)
    except BaseException:
        for t in temps:
            t.unlink(missing_ok=True)
        raise
    atomic_write_json(out / META_FILE, {
        "key": key, "format": FORMAT, "names": list(names), "temperature": temp, "split": split,
        "views": np.stack([views.cams.numpy(), views.frames.numpy()], 1).tolist(),
        "size": [w, h], "seconds": time.perf_counter() - t0})
    for old in root.iterdir():  # earlier routers' (or code's) pseudo-labels are stale
        if old.is_dir() and old.name != key:
            shutil.rmtree(old, ignore_errors=True)
    found = _open(out, key, views, names)
    if found is None:
        raise MoegsError(f"{out}: pseudo-labels could not be read back after writing")
    found.rendered = True
    return found


__all__ = ["DistillConfig", "PseudoLabels", "WEIGHTINGS", "check_weighting", "pseudo_labels",
           "render_pseudo_labels", "segment_views"]
