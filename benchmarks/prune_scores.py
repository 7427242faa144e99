"""Benchmark: one-shot pruning of a stored VAPR mixture by different per-Gaussian scores, no
fine-tuning: the gate importance (Eq. 10), the authors' sigmoid(w) rule, random scores and
opacity at t = 0. Prints the test PSNR of each at each ratio.

    moegs-bench run --scene mixed --size tiny --experts 2 --router vapr --runs RUNS
    python benchmarks/prune_scores.py --runs RUNS --scene-dir RUNS/scenes/synthetic/mixed-n3v-tiny-seed0 \\
        --experts ex4dgs,stg --views 10
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from moegs_bench.data.load import load_scene
from moegs_bench.device import default_device
from moegs_bench.eval.evaluate import evaluate_views
from moegs_bench.experts.segments import load_expert
from moegs_bench.moe import prune
from moegs_bench.moe.pool import ExpertPool
from moegs_bench.moe.train_router import load_router, router_renderer


def only(pattern: str, root: Path) -> Path:
    """The one file matching `pattern` under root (an error naming it otherwise)."""
    found = sorted(root.glob(pattern))
    if len(found) != 1:
        raise SystemExit(f"error: expected one {root / pattern}, found {len(found)}")
    return found[0]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=Path, required=True, help="run store holding the experts and moe-vapr")
    ap.add_argument("--scene-dir", type=Path, required=True, help="the prepared scene folder")
    ap.add_argument("--scene", default="mixed")
    ap.add_argument("--experts", default="ex4dgs,stg")
    ap.add_argument("--views", type=int, default=10, help="training views the importance is averaged over")
    ap.add_argument("--ratios", default="0.55,0.75")
    args = ap.parse_args()
    device = default_device()
    data = load_scene(args.scene_dir, device, with_gt=True)
    names = args.experts.split(",")
    scene_runs = args.runs / "synthetic" / args.scene
    experts = [load_expert(only(f"{n}/*/seed0/checkpoints/model.pt", scene_runs), device) for n in names]
    pool = ExpertPool(experts, names, data)
    router = load_router(only("moe-vapr/*/seed0/checkpoints/router.pt", scene_runs), device)

    def psnr(r, p) -> float:
        return evaluate_views(router_renderer(r, p), data, "test").summary["psnr"]

    total = sum(pool.sizes)
    generator = torch.Generator().manual_seed(0)
    scores = {
        "gate importance (Eq. 10)": prune.gate_importance(router, pool,
                                                          prune.spaced_views(len(data.splits["train"]), args.views)),
        "sigmoid(w)": prune.sigmoid_scores(router),
        "random": [torch.rand(n, generator=generator).to(device) for n in pool.sizes],
        "opacity at t=0": [pool.gaussians(k, 0, 0).opacities for k in range(len(pool))],
    }
    ratios = [float(r) for r in args.ratios.split(",")]
    print(f"unpruned: {psnr(router, pool):.2f} dB, {total} Gaussians; one shot, no fine-tuning")
    print("| score | " + " | ".join(f"{r:.0%} pruned" for r in ratios) + " |")
    print("|---|" + "---|" * len(ratios))
    for name, s in scores.items():
        cells = []
        for r in ratios:
            keeps, _ = prune.select_keep(s, keep_count=total - round(r * total))
            cells.append(f"{psnr(*prune.prune_mixture_rows(router, pool, keeps)):.2f}")
        print(f"| {name} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
