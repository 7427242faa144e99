"""Benchmark: the whole N=4 pipeline on one synthetic scene, step by step: the scene (generated
on first use, then loaded), the four experts of the synthetic dataset's N=4 set (each trained
and evaluated), the baselines, and each router (trained and evaluated).

    python benchmarks/pipeline_n4.py --out runs/pipeline-n4 --preset fast          # N3V size, GPU
    python benchmarks/pipeline_n4.py --out /tmp/p4 --size tiny --preset tiny \\
        --set train.iterations=3 --router-set iterations=2                       # CPU smoke test

Writes `pipeline_n4.json` to --out: seconds per step (wall clock, the device synchronised),
each run's stored train / eval seconds and PSNR, the total, device, preset and code version.
Runs go to the store --runs (default OUT/store): a second call reuses them (its steps then time
reuse), so time a fresh store, or pass --force.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from moegs_bench.bench.experiment import router_configs
from moegs_bench.bench.harness import (
    MixtureInputs,
    lpips_metric,
    run_baselines,
    run_labeled_expert,
    run_router,
)
from moegs_bench.bench.store import RunStore, code_version, host_info, write_results_table
from moegs_bench.config import scoped_overrides
from moegs_bench.data.datasets import dataset_expert_sets
from moegs_bench.data.load import load_scene
from moegs_bench.data.synthetic import SIZES, generate_synthetic, synthetic_scene_dir
from moegs_bench.device import resolve_device, synchronize
from moegs_bench.experts.registry import get_expert, split_label
from moegs_bench.io import atomic_write_json
from moegs_bench.moe.routers import router_names


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, required=True, help="Folder for pipeline_n4.json (and the store).")
    p.add_argument("--runs", type=Path, default=None, help="Run store (default OUT/store).")
    p.add_argument("--size", default="n3v", choices=sorted(SIZES), help="Synthetic scene size.")
    p.add_argument("--scene", default="mixed")
    p.add_argument("--preset", default="fast", help="Expert and router preset: fast or paper (tiny for CPU smoke tests).")
    p.add_argument("--routers", default=",".join(router_names()), help="Comma-separated routers.")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--budget", type=float, default=1.0, help="Fraction of the experts' iterations.")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="Expert setting (as `run --set`).")
    p.add_argument("--router-set", dest="router_overrides", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--device", default="auto")
    p.add_argument("--force", action="store_true", help="Retrain every run even if stored.")
    p.add_argument("--lpips-weights", type=Path, default=None)
    return p.parse_args(argv)


class Steps:
    """Wall-clock seconds per named step, the device synchronised at both ends."""

    def __init__(self, device: torch.device):
        self.device, self.seconds = device, {}

    def __call__(self, name: str, fn):
        synchronize(self.device)
        t0 = time.perf_counter()
        out = fn()
        synchronize(self.device)
        self.seconds[name] = time.perf_counter() - t0
        print(f"{name}: {self.seconds[name]:.1f} s", flush=True)
        return out


def run(args: argparse.Namespace) -> dict:
    device = resolve_device(args.device)
    runs_dir = args.runs or args.out / "store"
    steps = Steps(device)
    t_start = time.perf_counter()
    scene_dir = synthetic_scene_dir(runs_dir / "scenes", args.scene, "n3v", args.size, args.seed)
    steps("scene_generate", lambda: generate_synthetic(scene_dir, scene=args.scene, rig="n3v", size=args.size,
                                                       seed=args.seed, device=device))
    data = steps("scene_load", lambda: load_scene(scene_dir, device, with_gt=True))
    labels = list(dataset_expert_sets("synthetic")[4])
    expert_sets = scoped_overrides(args.overrides, labels, {lab: get_expert(split_label(lab)[0]).Config
                                                           for lab in labels})
    routers = [r.strip() for r in args.routers.split(",") if r.strip()]
    cfgs = router_configs(routers, args.preset, args.router_overrides, data)
    store = RunStore(runs_dir)
    lpips = lpips_metric("alex", args.lpips_weights, device)
    experts = [steps(f"expert:{label}", lambda label=label: run_labeled_expert(
        label, data, store, seed=args.seed, preset=args.preset, overrides=expert_sets[label], force=args.force,
        lpips=lpips, budget=args.budget)) for label in labels]
    inputs = MixtureInputs(experts, data)
    baselines = steps("baselines", lambda: run_baselines(inputs, store, seed=args.seed, force=args.force,
                                                         lpips=lpips))
    oracle = next((b.metrics["psnr"] for b in baselines if b.label == "oracle-pixel"), None)
    mixtures = [steps(f"router:{name}", lambda name=name: run_router(
        name, inputs, store, cfgs[name], seed=args.seed, force=args.force, lpips=lpips, oracle_psnr=oracle))
        for name in routers]
    write_results_table(runs_dir)
    total = time.perf_counter() - t_start
    record = {
        "size": args.size, "preset": args.preset, "budget": args.budget, "scene": args.scene,
        "views": {split: len(v) for split, v in data.splits.items()}, "resolution": [data.width, data.height],
        "steps_s": steps.seconds, "total_s": total,
        "runs": {r.label: {"dir": str(r.run.dir), "reused": r.reused, "psnr": r.metrics.get("psnr"),
                           **{f"{k}_s": v for k, v in r.run.load_timings().items()}}
                 for r in experts + baselines + mixtures},
        "device": host_info()["device"], "code_version": code_version(),
    }
    atomic_write_json(args.out / "pipeline_n4.json", record)
    print(f"total: {total:.1f} s; {args.out / 'pipeline_n4.json'}")
    return record


if __name__ == "__main__":
    run(parse_args())
