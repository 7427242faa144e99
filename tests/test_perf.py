"""FPS timing, peak memory and storage size: structure and bookkeeping, no timing thresholds."""

from __future__ import annotations

import pytest
import torch

from moegs_bench.errors import ConfigError, MoegsError
from moegs_bench.eval.perf import (
    MB,
    FpsResult,
    measure_fps,
    peak_memory,
    peak_memory_mb,
    reset_peak_memory,
    storage_mb,
    summarize_times,
)

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")


def _counting_render():
    calls: list[int] = []

    def render(i: int) -> torch.Tensor:
        calls.append(i)
        return torch.ones(8, 8, 3) * i

    return render, calls


def test_measure_fps_excludes_warmup_and_passes_indices():
    render, calls = _counting_render()
    res = measure_fps(render, warmup=3, iters=7, device="cpu", what="ones 8x8")
    assert calls == list(range(10))  # warm-up calls first, then the timed ones, in order
    assert isinstance(res, FpsResult)
    assert res.warmup == 3 and res.iters == 7
    assert res.what == "ones 8x8" and res.device == "cpu" and res.clock == "perf_counter"
    assert res.min_ms <= res.p10_ms <= res.median_ms <= res.p90_ms <= res.max_ms
    assert res.min_ms <= res.mean_ms <= res.max_ms
    assert res.fps == pytest.approx(1e3 / res.median_ms)
    assert set(res.to_dict()) >= {"median_ms", "fps", "p10_ms", "p90_ms", "iters", "what"}


def test_measure_fps_zero_warmup_and_grad_disabled():
    seen = []
    measure_fps(lambda i: seen.append(torch.is_grad_enabled()), warmup=0, iters=2, device="cpu")
    assert seen == [False, False]


def test_measure_fps_rejects_bad_counts():
    render, calls = _counting_render()
    with pytest.raises(ConfigError, match="iters"):
        measure_fps(render, warmup=1, iters=0, device="cpu")
    with pytest.raises(ConfigError, match="warmup"):
        measure_fps(render, warmup=-1, iters=1, device="cpu")
    assert calls == []


def test_summarize_times_statistics():
    res = summarize_times([4.0, 1.0, 3.0, 2.0, 5.0], "x", "cpu", "perf_counter", warmup=2)
    assert res.median_ms == 3.0 and res.mean_ms == 3.0
    assert res.min_ms == 1.0 and res.max_ms == 5.0
    assert res.p10_ms == pytest.approx(1.4) and res.p90_ms == pytest.approx(4.6)
    assert res.fps == pytest.approx(1000.0 / 3.0) and res.iters == 5 and res.warmup == 2


def test_peak_memory_is_none_on_cpu():
    with peak_memory("cpu") as rec:
        torch.ones(1000)
    assert rec.device == "cpu"
    assert (
        rec.baseline_mb is None and rec.peak_allocated_mb is None and rec.peak_reserved_mb is None
    )
    reset_peak_memory("cpu")
    assert peak_memory_mb("cpu") is None


def test_storage_mb_file_and_folder(tmp_path):
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "a.pt").write_bytes(b"x" * (1 << 20))
    (tmp_path / "model" / "sub").mkdir()
    (tmp_path / "model" / "sub" / "b.ply").write_bytes(b"y" * (1 << 19))
    (tmp_path / "model" / "log.txt").write_bytes(b"z" * 1000)
    assert storage_mb(tmp_path / "model" / "a.pt") == pytest.approx(1.0)
    assert storage_mb(tmp_path / "model") == pytest.approx(1.5 + 1000 / MB)
    assert storage_mb(tmp_path / "model", suffixes=(".pt", ".ply")) == pytest.approx(1.5)
    with pytest.raises(MoegsError, match="nope"):
        storage_mb(tmp_path / "nope")


@pytest.mark.gpu
@needs_cuda
def test_measure_fps_cuda_events():
    x = torch.rand(512, 512, device="cuda")
    calls: list[int] = []

    def render(i: int) -> torch.Tensor:
        calls.append(i)
        return x @ x

    res = measure_fps(render, warmup=2, iters=5, device="cuda", what="matmul")
    assert calls == list(range(7))
    assert res.clock == "cuda-events" and res.device.startswith("cuda:")
    assert 0 < res.min_ms <= res.median_ms <= res.max_ms


@pytest.mark.gpu
@needs_cuda
def test_peak_memory_cuda_counts_block_allocations():
    with peak_memory("cuda") as rec:
        big = torch.empty(64 * (1 << 20), dtype=torch.uint8, device="cuda")  # 64 MB
        del big
    assert rec.baseline_mb is not None
    assert rec.peak_allocated_mb >= rec.baseline_mb + 64
    assert rec.peak_reserved_mb >= rec.peak_allocated_mb
