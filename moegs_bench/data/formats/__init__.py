"""Readers for the raw dataset layouts (docs/datasets.md, REFERENCE.md §3), and their registry.

Each reader turns one raw scene folder into a `RawScene`: cameras at the source resolution,
the selected source frame numbers, which (camera, frame) views exist, the train/test split and
a `read_frames` callable that yields the RGB pixels of one camera. `data.prepare` turns a
`RawScene` into prepared scenes; nothing here writes files.

A raw format is one module of this package that registers a `RawFormat` (its name, how to
recognise a scene folder, its reader and its own command-line flags); `moegs-bench prepare
<format>` exists for every registered format that has a moegs_bench/datasets/<format>.toml.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ...errors import ConfigError
from ..scene import Camera

# read_frames(camera name, source frame numbers in increasing order) -> (frame, [H,W,3] uint8)
FrameReader = Callable[[str, Sequence[int]], Iterator[tuple[int, np.ndarray]]]
# frame_files(camera name, source frame numbers) -> the files read_frames reads for them
FrameFiles = Callable[[str, Sequence[int]], list[Path]]


@dataclass
class RawScene:
    """One raw scene, validated and ready to be prepared.

    cameras: at the source image resolution (before any resizing).
    frame_ids: selected source frame numbers (increasing); `frame_range` = [start, end) of the
        selection, which defines the normalised times t = (id - start) / (end - start).
    views[cam]: the source frame numbers that camera `cam` recorded (all of frame_ids for a
        multi-view rig; one frame per camera for a monocular video).
    camera_files: the files the cameras, poses and split come from (fingerprinted by content).
    frame_files: the files behind a camera's frames (fingerprinted cheaply); None when the
        reader names none, and then `prepare` extracts the frames again on every run.
    frame_settings[cam]: reader settings that change a camera's pixels (Technicolor repairs).
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
    camera_files: list[Path] = field(default_factory=list)
    frame_files: FrameFiles | None = None
    frame_settings: dict[str, dict] = field(default_factory=dict)

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


# -- the registry of raw formats ----------------------------------------------------------------------
@dataclass(frozen=True)
class ReadRequest:
    """What `prepare` asks of a reader for one scene folder.

    name: the published scene name; frames: [start, end) of source frames (None: all);
    test_cameras: from the dataset file (empty: the format's default); drop_cameras and
    repairs (raw tables) from the dataset file, `where` names that entry for messages;
    downscale: k when the output is 1/k of the source size (None otherwise), for formats that
    ship pre-scaled images; settings: the dataset file's format-specific keys; flags: the
    format's command-line flags (name -> value).
    """

    scene_dir: Path
    name: str
    frames: tuple[int, int] | None = None
    test_cameras: tuple[str, ...] = ()
    drop_cameras: tuple[str, ...] = ()
    repairs: tuple[dict, ...] = ()
    where: str = ""
    downscale: int | None = None
    settings: dict[str, Any] = field(default_factory=dict)
    flags: dict[str, bool] = field(default_factory=dict)


@dataclass(frozen=True)
class RawFormat:
    """A raw dataset layout. detect(folder) -> whether it is a scene of this layout; expect:
    what such a folder holds (for errors); read(request) -> (the scene, the downscale factor
    its images already have: 1 unless the reader picked pre-scaled images); summary: one line
    for `prepare --help`; flags: boolean command-line flags, name -> help."""

    name: str
    summary: str
    expect: str
    detect: Callable[[Path], bool]
    read: Callable[[ReadRequest], tuple[RawScene, int]]
    flags: dict[str, str] = field(default_factory=dict)


FORMATS: dict[str, RawFormat] = {}


def register_format(fmt: RawFormat) -> RawFormat:
    FORMATS[fmt.name] = fmt
    return fmt


def _load_all() -> None:
    """Import every module of this package, so that each format registers itself."""
    for info in pkgutil.iter_modules(__path__):
        if not info.name.startswith("_"):
            importlib.import_module(f"{__name__}.{info.name}")


def format_names() -> list[str]:
    """The registered raw formats, sorted."""
    _load_all()
    return sorted(FORMATS)


def get_format(name: str) -> RawFormat:
    _load_all()
    if name not in FORMATS:
        raise ConfigError(f"unknown raw format {name!r} (known: {', '.join(sorted(FORMATS))})")
    return FORMATS[name]
