"""Which views a training step sees.

- `ViewSampler`: random permutations of a split within the active frame window, or one random
  frame and several of its cameras (STG's same-time batches).
- `ErrorViewSampler`: E-D3DGS's protocol (JeongminB/E-D3DGS, train.py and
  utils/extra_utils.py): cameras drawn as a spaced chain (`SpacedCameras`), frames uniformly
  or, for a share of the views, by their recent L1 error, and every `multiview_every` steps one
  frame kept for a few steps so that it is seen from several cameras (`multiview_step`).

A sampler has `next(active_frames, step) -> view indices [B]` (CPU, long), `observe(idx,
losses)` (the loop reports per-view L1 when `observes` is true), `state_dict` and
`load_state_dict` (saved in the loop's checkpoints).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Protocol

import torch
from torch import Tensor

from ..config import NonNegativeFloat, NonNegativeInt, PositiveInt, UnitFloat
from .load import Views


class Sampler(Protocol):
    """What the training loop needs of a view sampler."""

    observes: bool  # True: the loop calls observe() with the per-view L1 of every step

    def next(self, active_frames: int, step: int | None = None) -> Tensor: ...

    def observe(self, idx: Tensor, losses: Tensor) -> None: ...

    def state_dict(self) -> dict: ...

    def load_state_dict(self, state: dict) -> None: ...


class ViewSampler:
    """Draws training views: random permutations of the views in the active frame window, or
    (same_time) a random frame and `batch` of its cameras."""

    observes = False  # draws never look at losses: the loop need not compute per-view ones

    def __init__(self, views: Views, batch: int, same_time: bool, seed: int):
        self.frames = views.frames.cpu()
        self.batch, self.same_time = batch, same_time
        self.generator = torch.Generator().manual_seed(seed)
        self.queue: list[int] = []
        self.active = -1

    def next(self, active_frames: int, step: int | None = None) -> Tensor:
        """Indices [batch] (CPU, long) into the split, frames < active_frames (step: unused)."""
        if self.same_time:
            frames = torch.unique(self.frames[self.frames < active_frames])
            f = frames[torch.randint(len(frames), (1,), generator=self.generator)]
            pool = torch.nonzero(self.frames == f).squeeze(1)
            return pool[torch.randperm(len(pool), generator=self.generator)[: self.batch]]
        if active_frames != self.active:
            self.active, self.queue = active_frames, []
        out = []
        while len(out) < self.batch:
            if not self.queue:
                eligible = torch.nonzero(self.frames < active_frames).squeeze(1)
                self.queue = eligible[torch.randperm(len(eligible), generator=self.generator)].tolist()
            out.append(self.queue.pop())
        return torch.tensor(out, dtype=torch.long)

    def observe(self, idx: Tensor, losses: Tensor) -> None:
        """Nothing: uniform draws need no errors."""

    def state_dict(self) -> dict:
        return {"generator": self.generator.get_state(), "queue": list(self.queue), "active": self.active}

    def load_state_dict(self, state: dict) -> None:
        self.generator.set_state(state["generator"])
        self.queue, self.active = list(state["queue"]), int(state["active"])


# -- E-D3DGS's protocol ------------------------------------------------------------------------------
@dataclass
class ErrorSampling:
    """Settings of `ErrorViewSampler`. Defaults: E-D3DGS on N3V (JeongminB/E-D3DGS at a68543e;
    files and lines in the comments)."""

    # share of the views drawn by error once `start` is reached: train.py:116 draws by error
    # on every even iteration (0: uniform frames only)
    fraction: UnitFloat = 0.5
    # first iteration (counted from 1) that may draw by error: random_until,
    # arguments/__init__.py:147 (Technicolor 60000, arguments/technicolor/default.py:73)
    start: NonNegativeInt = 10_000
    init: NonNegativeFloat = 100.0  # error of a view never seen: train.py:81-85 (unseen frames are drawn first)
    # steps between read-backs of the errors to the host (the loop reads losses back every 25
    # steps; the authors read every step, which would wait for the device at every step)
    refresh: NonNegativeInt = 25
    camera_spacing: bool = True  # cameras as a spaced chain (train.py:64-76,120; extra_utils.py:57-72)
    # every `multiview_every` iterations the step's frames are kept for the next
    # `multiview_steps` steps (seen from other cameras): num_multiview_ssim 5,
    # arguments/dynerf/default.py:38; train.py:125-128 (0: never)
    multiview_steps: NonNegativeInt = 5
    multiview_every: PositiveInt = 50

    @property
    def enabled(self) -> bool:
        """Whether any part of the protocol is on (else `ViewSampler` draws as it always did)."""
        return self.fraction > 0 or self.camera_spacing or self.multiview_steps > 0


def multiview_step(step: int, s: ErrorSampling) -> bool:
    """Whether the frames of `step` (0-based) are kept for the next step: E-D3DGS's
    `iteration >= random_until and iteration % 50 < num_multiview_ssim` (train.py:125) with
    iteration = step + 1 (the authors count from 1). These are also its SSIM steps (train.py:167)."""
    it = step + 1
    return s.multiview_steps > 0 and it >= s.start and it % s.multiview_every < s.multiview_steps


def error_quota(step: int, batch: int, s: ErrorSampling) -> int:
    """How many of the `batch` views of `step` are drawn by error: `fraction` of the views
    spread evenly over steps (batch 1, fraction 0.5: the authors' every even iteration)."""
    it = step + 1
    if s.fraction <= 0 or it < s.start:
        return 0
    return min(batch, math.floor(it * s.fraction * batch) - math.floor((it - 1) * s.fraction * batch))


def camera_centres(viewmats: Tensor) -> Tensor:
    """Camera positions from world-to-camera matrices [C,4,4] -> [C,3] (float64, CPU): -R^T t."""
    w2c = viewmats.detach().cpu().double()
    return -(w2c[:, :3, :3].transpose(1, 2) @ w2c[:, :3, 3:])[..., 0]


class SpacedCameras:
    """A chain of cameras, each drawn uniformly among those at least `min_distance` from the
    previous one (itself excluded), any camera if none is that far; `min_distance` is the median
    of the distinct pairwise distances, 0 included (E-D3DGS train.py:68-76, 120;
    utils/extra_utils.py:57-72). The chain starts after camera 0, as the authors'."""

    def __init__(self, centres: Tensor):
        """centres [K,3] of the cameras the chain picks from (positions 0..K-1)."""
        self.distances = (centres[:, None, :] - centres[None, :, :]).square().sum(-1).sqrt()  # symmetric exactly
        distinct = torch.unique(self.distances)
        self.min_distance = float(distinct[int(len(distinct) * 0.5)])
        self.last = 0

    def candidates(self, last: int) -> Tensor:
        """Positions [M] that may follow camera `last`."""
        ok = self.distances[last] >= self.min_distance
        ok[last] = False
        pool = torch.nonzero(ok).squeeze(1)
        return pool if len(pool) else torch.arange(len(self.distances))

    def next(self, generator: torch.Generator) -> int:
        """The next camera position of the chain."""
        pool = self.candidates(self.last)
        self.last = int(pool[torch.randint(len(pool), (1,), generator=generator)])
        return self.last


class ErrorViewSampler:
    """E-D3DGS's training views (see `ErrorSampling`): per view a camera (spaced chain, or
    uniform) and a frame of the active window (uniform, or for `error_quota` views by error),
    frames kept over multi-view steps.

    Errors: the latest L1 of every view (`observe`, kept on the device: no sync per step); a
    frame's error is the sum over its views, min-max normalised over the window, and a frame
    is drawn with probability proportional to it (extra_utils.py:40-54; all equal: uniform).
    The draws read a host copy of the errors refreshed every `refresh` steps.
    """

    observes = True

    def __init__(self, views: Views, batch: int, seed: int, settings: ErrorSampling,
                 centres: Tensor | None = None):
        """views: the training split; centres [C,3]: every scene camera's position (needed
        with camera_spacing)."""
        if settings.camera_spacing and centres is None:
            raise ValueError("ErrorViewSampler: camera_spacing needs the camera centres")
        self.cams, self.frames = views.cams.cpu(), views.frames.cpu()
        self.batch, self.s = batch, settings
        self.generator = torch.Generator().manual_seed(seed)
        self.camera_ids = torch.unique(self.cams)  # chain position -> scene camera
        self.lookup = torch.full((len(self.camera_ids), int(self.frames.max()) + 1), -1, dtype=torch.long)
        self.lookup[torch.searchsorted(self.camera_ids, self.cams), self.frames] = torch.arange(len(self.cams))
        self.chain = SpacedCameras(centres[self.camera_ids].double()) if settings.camera_spacing else None
        self.errors: Tensor | None = None  # [V] latest L1 per view, on the losses' device
        self.frame_errors: Tensor | None = None  # [F] host copy of the per-frame sums
        self.refreshed = -1  # step of that copy
        self.held: list[int] | None = None  # frames kept from the previous step

    # -- drawing -----------------------------------------------------------------------------------
    def next(self, active_frames: int, step: int | None = None) -> Tensor:
        """Indices [batch] (CPU, long) into the split, frames < active_frames, for `step`."""
        if step is None:
            raise ValueError("ErrorViewSampler.next needs the step")
        window = torch.unique(self.frames[self.frames < active_frames])
        frames = self.held if self.held is not None and max(self.held) < active_frames else None
        if frames is None:
            n_err = error_quota(step, self.batch, self.s)
            frames = self._by_error(window, n_err, step) + self._uniform(window, self.batch - n_err)
        self.held = frames if multiview_step(step, self.s) else None
        return torch.tensor([self._view(self._camera(), f) for f in frames], dtype=torch.long)

    def _uniform(self, window: Tensor, n: int) -> list[int]:
        """n frames of the window, uniformly with replacement (extra_utils.py:29)."""
        return window[torch.randint(len(window), (n,), generator=self.generator)].tolist()

    def _by_error(self, window: Tensor, n: int, step: int) -> list[int]:
        """n frames of the window, with probability ∝ min-max normalised frame error."""
        if n == 0:
            return []
        e = self._frame_errors(step)[window]
        lo, hi = e.min(), e.max()
        weights = (e - lo) / (hi - lo) if hi > lo else torch.ones_like(e)
        return window[torch.multinomial(weights, n, replacement=True, generator=self.generator)].tolist()

    def _frame_errors(self, step: int) -> Tensor:
        """Per-frame error sums [F] (float64, host), re-read every `refresh` steps."""
        if self.frame_errors is None or step - self.refreshed >= self.s.refresh:
            errors = self.errors.detach().double().cpu() if self.errors is not None else \
                torch.full((len(self.frames),), self.s.init, dtype=torch.float64)
            self.frame_errors = torch.zeros(self.lookup.shape[1], dtype=torch.float64).index_add_(0, self.frames, errors)
            self.refreshed = step
        return self.frame_errors

    def _camera(self) -> int:
        """A chain position: the spaced chain's next, else uniform."""
        if self.chain is not None:
            return self.chain.next(self.generator)
        return int(torch.randint(len(self.camera_ids), (1,), generator=self.generator))

    def _view(self, position: int, frame: int) -> int:
        """The view of (camera position, frame); a random view of the frame if that camera lacks it."""
        v = int(self.lookup[position, frame])
        if v >= 0:
            return v
        pool = torch.nonzero(self.frames == frame).squeeze(1)
        return int(pool[torch.randint(len(pool), (1,), generator=self.generator)])

    # -- errors ---------------------------------------------------------------------------------------
    def observe(self, idx: Tensor, losses: Tensor) -> None:
        """Record the latest L1 of views idx [B] (losses [B], any device; no host read)."""
        if self.errors is None:
            self.errors = torch.full((len(self.frames),), self.s.init, device=losses.device)
        elif self.errors.device != losses.device:
            self.errors = self.errors.to(losses.device)  # after a resume: state loads on the CPU
        # non-blocking: a blocking host-to-device copy would wait for the device
        self.errors[idx.to(self.errors.device, non_blocking=True)] = losses.detach().to(self.errors.dtype)

    # -- persistence ----------------------------------------------------------------------------------
    def state_dict(self) -> dict:
        return {
            "generator": self.generator.get_state(),
            "chain": self.chain.last if self.chain is not None else None,
            "errors": self.errors.detach().cpu() if self.errors is not None else None,
            "frame_errors": self.frame_errors, "refreshed": self.refreshed,
            "held": list(self.held) if self.held is not None else None,
        }

    def load_state_dict(self, state: dict) -> None:
        self.generator.set_state(state["generator"])
        if self.chain is not None and state["chain"] is not None:
            self.chain.last = int(state["chain"])
        self.errors, self.frame_errors = state["errors"], state["frame_errors"]
        self.refreshed = int(state["refreshed"])
        self.held = list(state["held"]) if state["held"] is not None else None


__all__ = ["Sampler", "ViewSampler", "ErrorSampling", "ErrorViewSampler", "SpacedCameras", "camera_centres",
           "multiview_step", "error_quota"]
