"""Benchmark: the `static` expert on a synthetic scene (default: `mixed`, n3v rig, `full`).

Generates (or reuses) the scene, trains with the size's preset through the same harness as
`moegs-bench run`, then times rendering of the test view. Prints one table and writes
`static_full.json` to --out.

    python benchmarks/static_full.py --out /tmp/bench [--size full] [--scene mixed]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from moegs_bench.bench.harness import lpips_metric, run_expert
from moegs_bench.bench.store import RunStore
from moegs_bench.data.load import load_scene
from moegs_bench.data.synthetic import generate_synthetic, synthetic_scene_dir
from moegs_bench.device import default_device
from moegs_bench.eval.perf import measure_fps
from moegs_bench.experts.registry import get_expert
from moegs_bench.render.backend import render


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--scene", default="mixed")
    ap.add_argument("--rig", default="n3v")
    ap.add_argument("--size", default="full")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    device = default_device()
    scene_dir = synthetic_scene_dir(args.out / "scenes", args.scene, args.rig, args.size, args.seed)
    t0 = time.perf_counter()
    generate_synthetic(scene_dir, scene=args.scene, rig=args.rig, size=args.size, seed=args.seed, device=device)
    gen_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    data = load_scene(scene_dir, device)
    load_s = time.perf_counter() - t0
    store = RunStore(args.out / "runs")
    res = run_expert("static", data, store, seed=args.seed, lpips=lpips_metric("alex", None, device),
                     progress=None, save_renders=False)
    m = res.metrics
    expert = get_expert("static").load(res.run.checkpoint_path("model.pt"), device)
    views = data.splits["test"]
    viewmats, Ks = data.camera_batch(views.cams[:1])
    g = expert.gaussians_at(0.0)
    fps = measure_fps(lambda i: render(g, viewmats, Ks, data.width, data.height), warmup=50, iters=300,
                      device=device, what=f"render() of 1 test view at {data.width}x{data.height}, RGB+depth")
    timings = res.run.load_timings()
    row = {
        "device": torch.cuda.get_device_name() if device.type == "cuda" else "cpu",
        "scene": f"{args.scene}/{args.rig}/{args.size}", "resolution": f"{data.width}x{data.height}",
        "train_views": len(data.splits["train"]), "test_views": len(views),
        "generate_s": round(gen_s, 1), "load_s": round(load_s, 1),
        "psnr": m["psnr"], "ssim": m["ssim"], "ssim_skimage": m.get("ssim_skimage"),
        "iterations": int(m["iterations"]), "train_s": timings.get("train"),
        "iters_per_s": m["iters_per_second"], "gaussians": int(m["num_gaussians"]),
        "train_peak_mb": m.get("train_peak_memory_mb"), "model_mb": m["model_mb"],
        "render_ms_median": fps.median_ms, "render_fps": fps.fps, "lpips": m.get("lpips", res.notes.get("lpips")),
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "static_full.json").write_text(json.dumps(row, indent=2))
    print("| " + " | ".join(row) + " |")
    print("| " + " | ".join(f"{v:.4g}" if isinstance(v, float) else str(v) for v in row.values()) + " |")


if __name__ == "__main__":
    main()
