"""Which views a training step sees: random permutations of a split within the active frame
window, or one random frame and several of its cameras (STG's same-time batches)."""

from __future__ import annotations

import torch
from torch import Tensor

from .load import Views


class ViewSampler:
    """Draws training views: random permutations of the views in the active frame window, or
    (same_time) a random frame and `batch` of its cameras."""

    def __init__(self, views: Views, batch: int, same_time: bool, seed: int):
        self.frames = views.frames.cpu()
        self.batch, self.same_time = batch, same_time
        self.generator = torch.Generator().manual_seed(seed)
        self.queue: list[int] = []
        self.active = -1

    def next(self, active_frames: int) -> Tensor:
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

    def state_dict(self) -> dict:
        return {"generator": self.generator.get_state(), "queue": list(self.queue), "active": self.active}

    def load_state_dict(self, state: dict) -> None:
        self.generator.set_state(state["generator"])
        self.queue, self.active = list(state["queue"]), int(state["active"])


__all__ = ["ViewSampler"]
