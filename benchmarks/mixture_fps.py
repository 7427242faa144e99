"""Benchmark: one full mixture frame (every expert's Gaussians at the view's time, their
renders with the router's channels, VAPR's Φ, gates and blend) per test view, broken down by
stage, for the inference path (frozen experts' cached tensors, the router's fused `mix`) and
the training path run without gradients (`--paths reference`), at 1352x1014 by default (the
test cameras' intrinsics scaled).

    # on the GPU machine: the stored mixture of the synthetic full scene (trained when missing)
    python benchmarks/mixture_fps.py --runs runs --scene mixed --size full
    # CPU smoke run: tiny scene, untrained experts, a few frames, op counts per stage
    python benchmarks/mixture_fps.py --runs /tmp/mfps --size tiny --init-only --width 160 \\
        --height 120 --warmup 1 --iters 3 --profile

Every stage is timed alone with a synchronisation after it (the breakdown); `total` is the
whole frame with one synchronisation at its end (the frame rate). Times are medians over the
views (each view timed `--iters` times after `--warmup` calls). `--profile` counts the
top-level aten ops of one frame per stage with the torch profiler (CPU activity).
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import torch
from scenes import synthetic_scene

from moegs_bench.bench.harness import MixtureInputs, run_labeled_expert, run_router
from moegs_bench.bench.store import RunStore
from moegs_bench.device import default_device, synchronize
from moegs_bench.eval.efficiency import at_resolution
from moegs_bench.experts.registry import expert_config, get_expert, split_label
from moegs_bench.moe.pool import ExpertPool
from moegs_bench.moe.routers import build_router, router_config
from moegs_bench.moe.train_router import load_router


def mixture(args, data):
    """(experts, labels, router): from the run store (trained there when missing), or with
    --init-only experts initialised from the scene and an untrained router (timings only)."""
    labels = args.experts.split(",")
    if args.init_only:
        experts = []
        for label in labels:
            name, preset = split_label(label)
            cfg = expert_config(name, preset or args.preset, {})
            expert = get_expert(name).from_scene(data, cfg, torch.Generator().manual_seed(0))
            expert.on_step(10**9)  # schedules at their end: every SH band, deformation on
            experts.append(expert)
        pool = ExpertPool(experts, labels, data)
        router = build_router("vapr", pool, router_config("vapr", "tiny"))
        return experts, labels, router.eval()
    store = RunStore(args.runs)
    runs = [run_labeled_expert(label, data, store, preset=args.preset) for label in labels]
    inputs = MixtureInputs(runs, data)
    router_run = run_router("vapr", inputs, store, router_config("vapr", args.router_preset))
    router = load_router(router_run.run.checkpoint_path("router.pt"), data.device)
    return inputs.pool.experts, [r.label for r in inputs.expert_runs], router


def time_ms(fn, device, warmup: int, iters: int) -> float:
    """Median ms of `iters` calls of fn (after `warmup`), synchronised after each call."""
    for _ in range(warmup):
        fn()
    synchronize(device)
    times = []
    for _ in range(iters):
        t0 = time.perf_counter()
        fn()
        synchronize(device)
        times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)


def set_path(pool: ExpertPool, router, path: str) -> None:
    """`fast`: frozen experts (cached inference tensors) and the router in eval mode;
    `reference`: the training path without gradients (trainable parameters, router in train
    mode: its unfused forward)."""
    fast = path == "fast"
    for e in pool.experts:
        e.requires_grad_(not fast)
    router.train(not fast)


def stage_times(pool: ExpertPool, router, views, args, device) -> dict[str, float]:
    """Median ms per stage over the views."""
    rows: dict[str, list[float]] = {}

    def add(key, ms):
        rows.setdefault(key, []).append(ms)

    for cam, frame in views:
        with torch.no_grad():
            for k, name in enumerate(pool.names):
                add(f"deform {name}", time_ms(lambda k=k, f=frame, c=cam: pool.gaussians(k, f, c), device,
                                              args.warmup, args.iters))
            rendered = router.render_views(pool, cam, frame)
            gs = pool.view_gaussians(cam, frame)
            t = pool.data.times[frame]
            channels = router.inference_channels(t)
            add("render", time_ms(lambda: pool.render_view(
                cam, frame, extras=channels, extras_background=torch.ones(3, device=device), gaussians=gs,  # noqa: B023
                background=router.expert_background(device)), device, args.warmup, args.iters))
            if not router.training:  # the training forward has no separate router stage
                add("router+blend", time_ms(lambda: router.mix(rendered, 1.0), device, args.warmup, args.iters))  # noqa: B023
            add("total", time_ms(lambda: router(pool, cam, frame, 1.0), device, args.warmup, args.iters))  # noqa: B023
    return {k: statistics.median(v) for k, v in rows.items()}


def op_counts(pool: ExpertPool, router, cam: int, frame: int) -> dict[str, int]:
    """Top-level aten ops of one frame per stage (torch profiler, CPU activity)."""
    from torch.profiler import ProfilerActivity, profile

    def count(fn) -> int:
        with torch.no_grad():
            fn()  # builds caches outside the count
            with profile(activities=[ProfilerActivity.CPU]) as prof:
                fn()
        return sum(1 for e in prof.events() if e.name.startswith("aten::")
                   and (e.cpu_parent is None or not e.cpu_parent.name.startswith("aten::")))

    out = {f"deform {name}": count(lambda k=k: pool.gaussians(k, frame, cam)) for k, name in enumerate(pool.names)}
    with torch.no_grad():
        rendered = router.render_views(pool, cam, frame)
    if not router.training:
        out["router+blend"] = count(lambda: router.mix(rendered, 1.0))
    out["total"] = count(lambda: router(pool, cam, frame, 1.0))
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=Path, required=True, help="run store (and where the scene is generated)")
    ap.add_argument("--scene", default="mixed")
    ap.add_argument("--size", default="full", help="synthetic size")
    ap.add_argument("--experts", default="ex4dgs,stg,ed3dgs")
    ap.add_argument("--preset", default=None, help="expert preset (default: by synthetic size)")
    ap.add_argument("--router-preset", default=None)
    ap.add_argument("--init-only", action="store_true", help="untrained experts and router (smoke runs)")
    ap.add_argument("--width", type=int, default=1352)
    ap.add_argument("--height", type=int, default=1014)
    ap.add_argument("--views", type=int, default=0, help="test views timed (0: all)")
    ap.add_argument("--warmup", type=int, default=10)
    ap.add_argument("--iters", type=int, default=30)
    ap.add_argument("--paths", default="fast,reference")
    ap.add_argument("--profile", action="store_true", help="op counts per stage (torch profiler)")
    args = ap.parse_args()
    device = default_device()
    data = synthetic_scene(args.runs, args.scene, "n3v", args.size, device)
    args.preset = args.preset or args.size if args.init_only else args.preset
    experts, labels, router = mixture(args, data)
    timed = at_resolution(data, args.width, args.height)
    pool = ExpertPool(experts, labels, timed, cache_mb=0)  # Gaussians made afresh every frame
    test = timed.splits["test"]
    views = [(int(c), int(f)) for c, f in zip(test.cams.tolist(), test.frames.tolist(), strict=True)]
    views = views[: args.views] if args.views else views
    gpu = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    counts = " + ".join(f"{e.num_gaussians}" for e in experts)
    print(f"{gpu}; {args.scene} {args.size}, {args.width}x{args.height}, experts {','.join(labels)} "
          f"({counts} Gaussians), {len(views)} views, median of {args.iters} after {args.warmup}")
    results, ops = {}, {}
    for path in args.paths.split(","):
        set_path(pool, router, path)
        results[path] = stage_times(pool, router, views, args, device)
        if args.profile:
            ops[path] = op_counts(pool, router, *views[0])
    set_path(pool, router, "fast")
    paths = list(results)
    print(f"{'stage':<22}" + "".join(f"{p + ' ms':>14}" for p in paths) + ("".join(
        f"{p + ' ops':>14}" for p in paths) if ops else ""))
    for stage in results[paths[0]]:
        line = f"{stage:<22}" + "".join(f"{results[p][stage]:>14.3f}" if stage in results[p] else f"{'-':>14}"
                                          for p in paths)
        if ops:
            line += "".join(f"{ops[p][stage]:>14d}" if stage in ops[p] else f"{'-':>14}" for p in paths)
        print(line)
    for p in paths:
        print(f"{p}: {1000.0 / results[p]['total']:.1f} FPS (total, one synchronisation per frame)")


if __name__ == "__main__":
    main()
