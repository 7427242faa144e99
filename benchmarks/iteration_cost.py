"""Benchmark: one training iteration of the deformation experts against `static` at the same
Gaussians, as initialised from the scene (no training), for each deformation-head precision;
optionally the GPU-busy time and kernel count per iteration, and the E-D3DGS smoothness term.

    python benchmarks/iteration_cost.py --out /tmp/bench --experts 4dgs,ed3dgs \\
        --precisions float32,bfloat16 --profile
    python benchmarks/iteration_cost.py --out /tmp/bench --experts ed3dgs --max-init-points 123000

Uses the synthetic scene of benchmarks/experts_full.py (generated under --out when missing).
Prints one line per (expert, precision) and, with --profile, the top kernels of both.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch
from experts_full import _time_iterations, static_like, time_against_static
from scenes import synthetic_scene

from moegs_bench.device import default_device, synchronize
from moegs_bench.experts.ed3dgs import graph_smoothness, knn_graph, neighbour_graph, smoothness
from moegs_bench.experts.registry import expert_config, get_expert


def busy(expert, data, top: int) -> list[str]:
    """GPU-busy ms and kernels per iteration over 5 iterations (after 2), and the top kernels."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        _time_iterations(expert, data, 5, 2)
    events = [e for e in prof.key_averages() if e.device_type.name == "CUDA"]
    total = sum(e.self_device_time_total for e in events) / 7 / 1000
    count = sum(e.count for e in events) / 7
    lines = [f"  GPU busy {total:.2f} ms/iter, {count:.0f} kernels/iter"]
    for e in sorted(events, key=lambda e: -e.self_device_time_total)[:top]:
        lines.append(f"    {e.self_device_time_total / 7000:7.3f} ms {e.count / 7:6.1f}x {e.key[:90]}")
    return lines


def time_ms(fn, repeats: int, device) -> float:
    fn()
    synchronize(device)
    t0 = time.perf_counter()
    for _ in range(repeats):
        fn()
    synchronize(device)
    return (time.perf_counter() - t0) / repeats * 1000.0


def smoothness_lines(device, sizes=(60_000, 124_000), k: int = 20, dim: int = 32) -> list[str]:
    """The E-D3DGS smoothness term, forward + backward: autograd's reference vs the graph form."""
    out = []
    for n in sizes:
        gen = torch.Generator().manual_seed(0)
        pts = torch.randn(n, 3, generator=gen).to(device)
        idx, d2 = knn_graph(pts, k)
        w = torch.exp(-d2)
        graph = neighbour_graph(idx, w)
        e = torch.randn(n, dim, generator=gen).to(device).requires_grad_(True)
        ref = time_ms(lambda: smoothness(e, idx, w).backward(), 20, device)  # noqa: B023
        fast = time_ms(lambda: graph_smoothness(e, graph).backward(), 20, device)  # noqa: B023
        out.append(f"smoothness N={n}: reference {ref:.3f} ms, graph {fast:.3f} ms")
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--experts", default="4dgs,ed3dgs")
    ap.add_argument("--precisions", default="float32,bfloat16")
    ap.add_argument("--preset", default="fast")
    ap.add_argument("--size", default="full", help="synthetic size of the `mixed` scene")
    ap.add_argument("--max-init-points", type=int, default=None, help="override the preset's initial count")
    ap.add_argument("--timing-steps", type=int, default=30)
    ap.add_argument("--profile", action="store_true", help="GPU-busy time and top kernels (CUDA only)")
    ap.add_argument("--smoothness", action="store_true", help="also time the E-D3DGS smoothness term")
    args = ap.parse_args()
    device = default_device()
    data = synthetic_scene(args.out, "mixed", "n3v", args.size, device)
    lines = []
    for name in args.experts.split(","):
        for precision in args.precisions.split(","):
            over = {"mlp_precision": precision}
            if args.max_init_points is not None:
                over["max_init_points"] = args.max_init_points
            cfg = expert_config(name, args.preset, over)
            expert = get_expert(name).from_scene(data, cfg, torch.Generator().manual_seed(0))
            ms, ms_static = time_against_static(expert, data, args.timing_steps, 10)
            lines.append(f"{name} {precision}: N={expert.num_gaussians} batch={cfg.train.batch_size} "
                         f"expert {ms:.2f} ms, static {ms_static:.2f} ms, ratio {ms / ms_static:.3f}")
            print(lines[-1], flush=True)
            if args.profile and device.type == "cuda":
                lines += [f"  {name}:"] + busy(expert, data, 12)
                lines += ["  static:"] + busy(static_like(expert, data), data, 6)
            del expert
            if device.type == "cuda":
                torch.cuda.empty_cache()
    if args.smoothness:
        lines += smoothness_lines(device)
    print("\n".join(lines))


if __name__ == "__main__":
    main()
