"""Benchmark: one-shot pruning of a stored VAPR mixture by different per-Gaussian scores, no
fine-tuning: the gate importance (Eq. 10), its maximum over the views (rule importance-max),
the authors' sigmoid(w) rule, random scores and opacity at t = 0. Prints, for each at each
ratio, the test PSNR, the fast-motion regime's PSNR and the Gaussians each expert keeps.

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

    def psnr(r, p) -> str:
        summary = evaluate_views(router_renderer(r, p), data, "test").summary
        fast = summary.get("psnr_fast")
        return f"{summary['psnr']:.2f}" + (f" / {fast:.2f}" if fast is not None else "")

    total = sum(pool.sizes)
    generator = torch.Generator().manual_seed(0)
    ids = prune.spaced_views(len(data.splits["train"]), args.views)
    scores = {
        "gate importance (Eq. 10)": prune.gate_importance(router, pool, ids),
        "gate importance, max over views": prune.gate_importance(router, pool, ids, reduce="max"),
        "sigmoid(w)": prune.sigmoid_scores(router),
        "random": [torch.rand(n, generator=generator).to(device) for n in pool.sizes],
        "opacity at t=0": [pool.gaussians(k, 0, 0).opacities for k in range(len(pool))],
    }
    ratios = [float(r) for r in args.ratios.split(",")]
    print(f"unpruned: PSNR / fast regime {psnr(router, pool)} dB, Gaussians {dict(zip(names, pool.sizes, strict=True))}; "
          "one shot, no fine-tuning")
    print("cells: PSNR / fast-regime PSNR (dB), Gaussians kept per expert")
    print("| score | " + " | ".join(f"{r:.0%} pruned" for r in ratios) + " |")
    print("|---|" + "---|" * len(ratios))
    for name, s in scores.items():
        cells = []
        for r in ratios:
            keeps, _ = prune.select_keep(s, keep_count=total - round(r * total))
            kept = ", ".join(str(int(k.sum())) for k in keeps)
            cells.append(f"{psnr(*prune.prune_mixture_rows(router, pool, keeps))} ({kept})")
        print(f"| {name} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
