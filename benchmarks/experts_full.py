"""Benchmark: every expert on one synthetic scene (default `mixed`, n3v rig, `full`), trained
with its size preset through the harness, plus the cost of one training iteration against
`static` at the same Gaussian count and resolution.

    python benchmarks/experts_full.py --out /tmp/bench --experts static,stg,ex4dgs

Prints two markdown tables (quality/cost of training; per-regime PSNR) and writes
`experts_full.json` to --out; a rerun skips the experts already in it (and the run store
reuses or resumes their training).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
from scenes import synthetic_scene

from moegs_bench.bench.harness import default_preset, lpips_metric, run_expert
from moegs_bench.bench.store import RunStore
from moegs_bench.config import merge
from moegs_bench.device import default_device, synchronize
from moegs_bench.experts.registry import expert_config, get_expert
from moegs_bench.experts.static import StaticExpert
from moegs_bench.train.loop import (
    expert_loss,
    make_optimizers,
    matmul_precision,
    render_step,
    step_optimizers,
    view_l1,
)


def time_iterations(expert, data, steps: int, warmup: int) -> float:
    """Mean ms of one training iteration (sample, render, loss, backward, optimiser
    step) with densification off, after `warmup` untimed iterations, at the expert's
    training matmul precision."""
    with matmul_precision(expert.config.train.matmul_precision):
        return _time_iterations(expert, data, steps, warmup)


def time_against_static(expert, data, steps: int, warmup: int, rounds: int = 3) -> tuple[float, float]:
    """(expert ms, static ms at the same Gaussians) per iteration: the two are timed in
    alternating rounds and each keeps its fastest round, so clock and cache drift between
    the two measurements does not enter the ratio."""
    static = static_like(expert, data)
    ms, ms_static = [], []
    for _ in range(rounds):
        ms.append(time_iterations(expert, data, steps, warmup))
        ms_static.append(time_iterations(static, data, steps, warmup))
    return min(ms), min(ms_static)


def _time_iterations(expert, data, steps: int, warmup: int) -> float:
    per_opt, shared_opt = make_optimizers(expert)
    cfg = expert.config.train
    sampler = expert.make_sampler(data, seed=0)
    bg = torch.zeros(3, device=data.device)
    step0 = cfg.iterations // 2  # mid-training schedules (fine stage, full window)

    def one(step: int) -> None:  # the loop's step, without the densification strategy
        sv = render_step(expert, data, sampler, step, per_opt, shared_opt, bg)
        loss = expert_loss(expert, sv.pred, sv.gt, step)
        if sampler.observes:
            sampler.observe(sv.idx, view_l1(sv.pred, sv.gt))
        loss.backward()
        step_optimizers(per_opt, shared_opt)

    for i in range(warmup):
        one(step0 + i)
    synchronize(data.device)
    t0 = time.perf_counter()
    for i in range(steps):
        one(step0 + warmup + i)
    synchronize(data.device)
    return (time.perf_counter() - t0) / steps * 1000.0


def static_like(expert, data) -> StaticExpert:
    """A `static` expert with the same Gaussians (count, positions, shapes) as `expert` at t=0.5."""
    g = expert.gaussians_at(0.5)
    cfg = merge(expert_config("static", "fast"), {"train": {"batch_size": expert.config.train.batch_size}})
    s = StaticExpert(cfg)
    s.active_sh_degree = cfg.sh_degree
    n = len(g)
    with torch.no_grad():
        s.params["means"] = torch.nn.Parameter(g.means.detach().clone())
        s.params["scales"] = torch.nn.Parameter(torch.log(g.scales.detach().clamp_min(1e-8)))
        s.params["quats"] = torch.nn.Parameter(g.quats.detach().clone())
        s.params["opacities"] = torch.nn.Parameter(torch.logit(g.opacities.detach().clamp(1e-4, 1 - 1e-4)))
        s.params["sh0"] = torch.nn.Parameter(torch.zeros(n, 1, 3, device=data.device))
        s.params["shN"] = torch.nn.Parameter(torch.zeros(n, 15, 3, device=data.device))
    return s


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--experts", default="static,stg,ex4dgs")
    ap.add_argument("--scene", default="mixed")
    ap.add_argument("--rig", default="n3v")
    ap.add_argument("--size", default="full")
    ap.add_argument("--timing-steps", type=int, default=50)
    ap.add_argument("--timing-only", action="store_true",
                    help="no training: time each expert as initialised from the scene, in its mid-training stage")
    args = ap.parse_args()
    device = default_device()
    data = synthetic_scene(args.out, args.scene, args.rig, args.size, device)
    store = RunStore(args.out / "runs")
    lpips = lpips_metric("alex", None, device)
    if args.timing_only:
        for name in args.experts.split(","):
            cfg = expert_config(name, default_preset(name, data))
            expert = get_expert(name).from_scene(data, cfg, torch.Generator().manual_seed(0))
            ms, ms_static = time_against_static(expert, data, args.timing_steps, 10)
            print(json.dumps({"expert": name, "untrained": True, "gaussians": expert.num_gaussians,
                              "iter_ms": ms, "static_iter_ms_same_n": ms_static, "iter_ratio": ms / ms_static}),
                  flush=True)
        return
    rows, regimes = [], {}
    saved = args.out / "experts_full.json"
    if saved.exists():  # a rerun continues: experts already measured are kept, not re-timed
        done = json.loads(saved.read_text())
        rows, regimes = done["rows"], done["regimes"]
    for name in args.experts.split(","):
        if any(r["expert"] == name for r in rows):
            continue
        res = run_expert(name, data, store, lpips=lpips, save_renders=False)
        m = res.metrics
        expert = get_expert(name).load(res.run.checkpoint_path("model.pt"), device)
        ms, ms_static = time_against_static(expert, data, args.timing_steps, 10)
        rows.append({
            "expert": name, "psnr": m["psnr"], "ssim": m["ssim"],
            "train_min": res.run.load_timings()["train"] / 60, "iters_per_s": m["iters_per_second"],
            "gaussians": int(m["num_gaussians"]), "peak_mb": m.get("train_peak_memory_mb"),
            "iter_ms": ms, "static_iter_ms_same_n": ms_static, "iter_ratio": ms / ms_static,
        })
        regimes[name] = {k[5:]: v for k, v in m.items() if k.startswith("psnr_")}
        print(json.dumps({"row": rows[-1], "regimes": regimes[name]}), flush=True)  # partial results survive a time-out
        args.out.mkdir(parents=True, exist_ok=True)
        saved.write_text(json.dumps({"rows": rows, "regimes": regimes}, indent=2))
        del expert
        if device.type == "cuda":
            torch.cuda.empty_cache()
    cols = list(rows[0])
    print("| " + " | ".join(cols) + " |\n|" + "---|" * len(cols))
    for r in rows:
        print("| " + " | ".join(f"{r[c]:.4g}" if isinstance(r[c], float) else str(r[c]) for c in cols) + " |")
    names = sorted({k for v in regimes.values() for k in v})
    print("\n| expert | " + " | ".join(f"PSNR {n}" for n in names) + " |\n|" + "---|" * (len(names) + 1))
    for e, v in regimes.items():
        print(f"| {e} | " + " | ".join(f"{v[n]:.2f}" if n in v else "—" for n in names) + " |")


if __name__ == "__main__":
    main()
