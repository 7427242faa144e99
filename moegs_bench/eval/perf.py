"""Speed and memory measurements: FPS of a render call, peak GPU memory, model storage size.

What each number means and what is inside the timed region is written in docs/metrics.md.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..device import default_device, synchronize
from ..errors import ConfigError, MoegsError

MB = float(1 << 20)  # "MB" in this project is 2^20 bytes (MiB), as GPU memory tools report

# the MoE-GS authors render 500 times and discard the first 101 (REFERENCE.md §1)
DEFAULT_WARMUP = 101
DEFAULT_ITERS = 399


@dataclass(frozen=True)
class FpsResult:
    """Timing of `iters` synchronised calls of a render function after `warmup` discarded ones.

    All times in milliseconds per call; fps = 1000 / median_ms.
    """

    what: str
    device: str
    clock: str
    warmup: int
    iters: int
    median_ms: float
    mean_ms: float
    min_ms: float
    p10_ms: float
    p90_ms: float
    max_ms: float
    fps: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _device_label(device: torch.device) -> str:
    """'cpu' or 'cuda:0 (NVIDIA H100 80GB HBM3)' for result records."""
    if device.type != "cuda":
        return str(device)
    index = device.index if device.index is not None else torch.cuda.current_device()
    return f"cuda:{index} ({torch.cuda.get_device_name(index)})"


def _time_cuda(
    fn: Callable[[int], Any], first: int, count: int, device: torch.device
) -> list[float]:
    """Milliseconds of calls first..first+count-1, CUDA events, synchronised after each call."""
    times = []
    with torch.cuda.device(device):
        start = torch.cuda.Event(enable_timing=True)
        end = torch.cuda.Event(enable_timing=True)
        for i in range(first, first + count):
            start.record()
            fn(i)
            end.record()
            end.synchronize()  # one render at a time: latency, not queued throughput
            times.append(start.elapsed_time(end))
    return times


def _time_host(
    fn: Callable[[int], Any], first: int, count: int, device: torch.device
) -> list[float]:
    """Milliseconds of calls first..first+count-1 by the host clock, synchronised each call."""
    times = []
    for i in range(first, first + count):
        t0 = time.perf_counter()
        fn(i)
        synchronize(device)
        times.append((time.perf_counter() - t0) * 1e3)
    return times


def summarize_times(
    times_ms: list[float], what: str, device: str, clock: str, warmup: int
) -> FpsResult:
    """FpsResult from per-call times (median, mean, extremes, 10th and 90th percentiles)."""
    t = np.asarray(times_ms, dtype=np.float64)
    median = float(np.median(t))
    return FpsResult(
        what=what,
        device=device,
        clock=clock,
        warmup=warmup,
        iters=len(t),
        median_ms=median,
        mean_ms=float(t.mean()),
        min_ms=float(t.min()),
        p10_ms=float(np.percentile(t, 10)),
        p90_ms=float(np.percentile(t, 90)),
        max_ms=float(t.max()),
        fps=1e3 / median if median > 0 else float("inf"),
    )


def measure_fps(
    render_fn: Callable[[int], Any],
    warmup: int = DEFAULT_WARMUP,
    iters: int = DEFAULT_ITERS,
    device: str | torch.device | None = None,
    what: str = "render_fn",
) -> FpsResult:
    """Time `render_fn` one call at a time and report the median.

    render_fn(i) is called with the call index i = 0 .. warmup+iters-1 (cycle test views with
    it), under torch.no_grad(); calls 0..warmup-1 warm up (allocator, kernel caches, JIT) and
    are not timed.
    device: where the work runs; CUDA -> CUDA events, otherwise the host's perf_counter.
    what: a description of what render_fn does (stored with the result).
    """
    if warmup < 0:
        raise ConfigError(f"measure_fps: warmup must be >= 0, got {warmup}")
    if iters < 1:
        raise ConfigError(f"measure_fps: iters must be >= 1, got {iters}")
    dev = torch.device(device) if device is not None else default_device()
    with torch.no_grad():
        for i in range(warmup):
            render_fn(i)
        synchronize(dev)
        if dev.type == "cuda":
            times, clock = _time_cuda(render_fn, warmup, iters, dev), "cuda-events"
        else:
            times, clock = _time_host(render_fn, warmup, iters, dev), "perf_counter"
    return summarize_times(times, what, _device_label(dev), clock, warmup)


@dataclass
class PeakMemory:
    """GPU memory seen inside a `peak_memory` block, in MB (2^20 bytes); None on CPU.

    baseline_mb: allocated by tensors when the block began (e.g. the model already loaded).
    peak_allocated_mb: torch.cuda.max_memory_allocated during the block (includes baseline):
      the number tables report as "peak GPU memory".
    peak_reserved_mb: torch.cuda.max_memory_reserved (the caching allocator's pool; >= the
      allocated peak, closer to what nvidia-smi shows).
    """

    device: str
    baseline_mb: float | None = None
    peak_allocated_mb: float | None = None
    peak_reserved_mb: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def reset_peak_memory(device: str | torch.device) -> None:
    """Start a new peak: torch.cuda.reset_peak_memory_stats (no-op off CUDA)."""
    dev = torch.device(device)
    if dev.type == "cuda":
        synchronize(dev)
        torch.cuda.reset_peak_memory_stats(dev)


def peak_memory_mb(device: str | torch.device) -> float | None:
    """torch.cuda.max_memory_allocated since the last reset, in MB; None off CUDA."""
    dev = torch.device(device)
    if dev.type != "cuda":
        return None
    synchronize(dev)
    return torch.cuda.max_memory_allocated(dev) / MB


@contextmanager
def peak_memory(device: str | torch.device) -> Iterator[PeakMemory]:
    """Measure peak GPU memory of the enclosed block; fields are filled when the block ends."""
    dev = torch.device(device)
    record = PeakMemory(device=str(dev))
    if dev.type != "cuda":
        yield record
        return
    reset_peak_memory(dev)
    record.baseline_mb = torch.cuda.memory_allocated(dev) / MB
    try:
        yield record
    finally:
        record.peak_allocated_mb = peak_memory_mb(dev)
        record.peak_reserved_mb = torch.cuda.max_memory_reserved(dev) / MB


def storage_mb(path: str | os.PathLike, suffixes: tuple[str, ...] | None = None) -> float:
    """Size of a saved model in MB (2^20 bytes): one file, or every file under a folder.

    suffixes: count only files with these endings (e.g. (".pt", ".ply")); None counts all.
    Symbolic links to folders are not followed, so nothing is counted twice.
    """
    p = Path(path)
    if not p.exists():
        raise MoegsError(f"{p}: no such file or folder to measure the storage size of")
    if p.is_file():
        files = [p]
    else:
        files = [Path(root) / name for root, _, names in os.walk(p) for name in names]
        files = [f for f in files if f.is_file()]
    if suffixes is not None:
        files = [f for f in files if f.name.endswith(tuple(suffixes))]
    return sum(f.stat().st_size for f in files) / MB
