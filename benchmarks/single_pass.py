"""Benchmark: the single-pass multi-expert renderer against gsplat, on random Gaussians.

    python benchmarks/single_pass.py --experts 3 --gaussians 300000 --width 1352 --height 1014

Times (CUDA events, median over --iters after --warmup), one camera:
  forward, RGB + expected depth of every expert (all through gsplat's `rasterization()`):
    three passes      one gsplat call per expert (`render_experts(mode="multi-pass")`)
    batched           one gsplat call with a batch entry per expert (`render_batch`: exact,
                      equal counts only)
    single-pass       this package's renderer (one projection, one sort, one blend)
    concatenated      one gsplat call over all experts together: shared transmittance, NOT
                      an expert's output; a reference only
  router-training step, forward + backward of 3 router channels per Gaussian (frozen geometry):
    multi-pass        `render_experts(mode="multi-pass")`
    single-pass       `render_experts(mode="single-pass")`
Also checks that the single pass equals the three passes (max abs difference).
"""

from __future__ import annotations

import argparse
import statistics

import torch

from moegs_bench.data.scene import intrinsics, look_at
from moegs_bench.render.backend import render, render_batch
from moegs_bench.render.gaussians import Gaussians, concat
from moegs_bench.render.multi_expert import render_experts


def random_experts(k: int, n: int, device) -> list[Gaussians]:
    """k overlapping sets of n Gaussians in front of the camera, RGB colours."""
    g = torch.Generator().manual_seed(0)
    out = []
    for i in range(k):
        means = torch.randn(n, 3, generator=g) * torch.tensor([1.2, 0.9, 0.8]) + torch.tensor([0.1 * i, 0, 0])
        out.append(Gaussians(means=means, quats=torch.randn(n, 4, generator=g),
                             scales=torch.rand(n, 3, generator=g) * 0.03 + 0.004,
                             opacities=torch.rand(n, generator=g) * 0.9 + 0.05,
                             features=torch.rand(n, 3, generator=g)).to(device))
    return out


def time_ms(fn, warmup: int, iters: int) -> float:
    """Median ms of fn() over iters calls (CUDA events around each, after warmup calls)."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(iters):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        fn()
        b.record()
        b.synchronize()
        times.append(a.elapsed_time(b))
    return statistics.median(times)


def profile(fn, name: str, calls: int = 10, top: int = 8) -> None:
    """GPU-busy ms and kernel count per call of fn, and its top kernels (torch profiler)."""
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    fn()
    torch.cuda.synchronize()
    with torch_profile(activities=[ProfilerActivity.CUDA]) as prof:
        for _ in range(calls):
            fn()
        torch.cuda.synchronize()
    events = [e for e in prof.key_averages() if e.device_type.name == "CUDA"]
    busy = sum(e.self_device_time_total for e in events) / calls / 1000
    count = sum(e.count for e in events) / calls
    print(f"  {name}: GPU busy {busy:.3f} ms/call, {count:.0f} kernels/call")
    for e in sorted(events, key=lambda e: -e.self_device_time_total)[:top]:
        print(f"    {e.self_device_time_total / calls / 1000:7.3f} ms {e.count / calls:5.1f}x {e.key[:80]}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--experts", type=int, default=3)
    ap.add_argument("--gaussians", type=int, default=300_000)
    ap.add_argument("--width", type=int, default=1352)
    ap.add_argument("--height", type=int, default=1014)
    ap.add_argument("--warmup", type=int, default=10)
    ap.add_argument("--iters", type=int, default=50)
    ap.add_argument("--profile", action="store_true", help="also print GPU-busy time and top kernels per call")
    args = ap.parse_args()
    if not torch.cuda.is_available():
        raise SystemExit("benchmarks/single_pass.py needs CUDA")
    dev = torch.device("cuda")
    W, H = args.width, args.height
    gs = random_experts(args.experts, args.gaussians, dev)
    viewmat = torch.tensor(look_at([0, 0, -4.0], [0, 0, 0]), dtype=torch.float32, device=dev)[None]
    K = torch.tensor(intrinsics(W, H, 50.0), dtype=torch.float32, device=dev)[None]
    bg = torch.ones(1, 3, device=dev)

    def batched():
        return render_batch(gs, viewmat[None].expand(len(gs), 1, 4, 4), K[None].expand(len(gs), 1, 3, 3), W, H,
                            background=bg[0])

    joint = concat(gs)

    def concatenated():
        return render(joint, viewmat, K, W, H, background=bg[0])

    def single():
        return render_experts(gs, viewmat, K, W, H, backgrounds=bg[0], mode="single-pass")

    def multi():
        return render_experts(gs, viewmat, K, W, H, backgrounds=bg[0], mode="multi-pass")

    with torch.no_grad():
        a, b = multi(), single()
        diff = max((getattr(x, f) - getattr(y, f)).abs().max().item() for x, y in zip(a, b, strict=True) for f in ("rgb", "alpha"))
        ddiff = max(((x.depth - y.depth) * x.alpha).abs().max().item() for x, y in zip(a, b, strict=True))
        fwd = {"three gsplat passes": time_ms(multi, args.warmup, args.iters),
               "one batched gsplat call": time_ms(batched, args.warmup, args.iters),
               "single-pass": time_ms(single, args.warmup, args.iters),
               "concatenated gsplat call (not exact)": time_ms(concatenated, args.warmup, args.iters)}
    channels = [torch.full((len(g), 3), 0.5, device=dev, requires_grad=True) for g in gs]
    weight = torch.rand(1, H, W, 3, device=dev)

    def step(mode):
        def run():
            outs = render_experts(gs, viewmat, K, W, H, extras=channels, extras_background=torch.ones(3, device=dev),
                                  backgrounds=bg[0], mode=mode)
            loss = sum((o.extras * weight).mean() for o in outs)
            torch.autograd.grad(loss, channels)
        return run

    grads = {}
    for mode in ("multi-pass", "single-pass"):
        outs = render_experts(gs, viewmat, K, W, H, extras=channels, extras_background=torch.ones(3, device=dev),
                              backgrounds=bg[0], mode=mode)
        grads[mode] = torch.autograd.grad(sum((o.extras * weight).mean() for o in outs), channels)
    gdiff = max((x - y).abs().max().item() for x, y in zip(grads["multi-pass"], grads["single-pass"], strict=True))
    train = {"router step, multi-pass": time_ms(step("multi-pass"), args.warmup, args.iters),
             "router step, single-pass": time_ms(step("single-pass"), args.warmup, args.iters)}

    print(f"GPU: {torch.cuda.get_device_name()}  {args.experts} x {args.gaussians} Gaussians, {W}x{H}, "
          f"median of {args.iters}")
    for name, ms in {**fwd, **train}.items():
        print(f"  {name:40s} {ms:7.3f} ms")
    s = fwd["single-pass"]
    print(f"  single-pass speed-up: {fwd['three gsplat passes'] / s:.2f}x vs three gsplat passes, "
          f"{fwd['one batched gsplat call'] / s:.2f}x vs batched")
    if args.profile:
        with torch.no_grad():
            for name, fn in (("three passes", multi), ("batched", batched), ("single-pass", single),
                             ("concatenated", concatenated)):
                profile(fn, name)
        profile(step("multi-pass"), "router step, multi-pass")
        profile(step("single-pass"), "router step, single-pass")
    print(f"  router step speed-up: {train['router step, multi-pass'] / train['router step, single-pass']:.2f}x")
    print(f"  single vs multi-pass: max |diff| rgb/alpha {diff:.2e}, depth*alpha {ddiff:.2e}, "
          f"router-channel gradients {gdiff:.2e}")


if __name__ == "__main__":
    main()
