"""Readers for the raw dataset layouts (docs/datasets.md, REFERENCE.md §3).

Each reader turns one raw scene folder into a `RawScene`: cameras at the source resolution,
the selected source frame numbers, which (camera, frame) views exist, the train/test split and
a `read_frames` callable that yields the RGB pixels of one camera. `data.prepare` turns a
`RawScene` into prepared scenes; nothing here writes files.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ...errors import ConfigError
from ..scene import Camera

# read_frames(camera name, source frame numbers in increasing order) -> (frame, [H,W,3] uint8)
FrameReader = Callable[[str, Sequence[int]], Iterator[tuple[int, np.ndarray]]]


@dataclass
class RawScene:
    """One raw scene, validated and ready to be prepared.

    cameras: at the source image resolution (before any resizing).
    frame_ids: selected source frame numbers (increasing); `frame_range` = [start, end) of the
        selection, which defines the normalised times t = (id - start) / (end - start).
    views[cam]: the source frame numbers that camera `cam` recorded (all of frame_ids for a
        multi-view rig; one frame per camera for a monocular video).
    """

    name: str
    dataset: str
    cameras: list[Camera]
    frame_ids: list[int]
    frame_range: tuple[int, int]
    views: dict[str, list[int]]
    train_cameras: list[str]
    test_cameras: list[str]
    read_frames: FrameReader
    meta: dict[str, Any] = field(default_factory=dict)

    def camera(self, name: str) -> Camera:
        for cam in self.cameras:
            if cam.name == name:
                return cam
        raise KeyError(name)


def parse_frame_range(text: str | None, option: str = "--frames") -> tuple[int, int] | None:
    """'START:END' (END exclusive, source frame numbers) -> (start, end); None/'' -> None."""
    if text is None or str(text).strip() in ("", "all"):
        return None
    parts = str(text).split(":")
    try:
        if len(parts) != 2:
            raise ValueError
        start, end = int(parts[0]), int(parts[1])
    except ValueError:
        raise ConfigError(f"{option} {text!r}: expected START:END (END exclusive), e.g. 0:300") from None
    if start < 0 or end <= start:
        raise ConfigError(f"{option} {text!r}: need 0 <= START < END")
    return start, end


def frame_times_in_range(frame_ids: Sequence[int], frame_range: tuple[int, int]) -> np.ndarray:
    """Normalised times [F] in [0, 1) of source frames inside [start, end): (id - start) / (end - start)."""
    start, end = frame_range
    return (np.asarray(frame_ids, dtype=np.float64) - start) / float(end - start)


def select_frames(
    available: Sequence[int], wanted: tuple[int, int] | None, where: str, option: str = "--frames"
) -> tuple[list[int], tuple[int, int]]:
    """Frames of `available` inside `wanted` ([start, end), None = all) and the range used.

    Raises ConfigError when the range asks for frames the data does not have.
    """
    available = sorted(set(int(f) for f in available))
    if not available:
        raise ConfigError(f"{where}: no frames found")
    if wanted is None:
        return available, (available[0], available[-1] + 1)
    start, end = wanted
    if start < available[0] or end > available[-1] + 1:
        raise ConfigError(
            f"{option} {start}:{end} is outside the data of {where} "
            f"(frames {available[0]}:{available[-1] + 1} exist)"
        )
    chosen = [f for f in available if start <= f < end]
    if not chosen:
        raise ConfigError(f"{option} {start}:{end}: no frames of {where} in that range")
    return chosen, (start, end)
