"""Benchmark: which expert wins where. Every expert on each synthetic scene dominated by one
motion regime (`static`, `smooth`, `fast`, `abrupt`, `nonrigid`; n3v rig), trained with its
size preset through the harness; per-regime PSNR from the ground-truth label maps.

    python benchmarks/regimes.py --out runs/regimes --size tiny
    python benchmarks/regimes.py --out runs/regimes --size small --experts static,stg,ex4dgs

Prints one markdown table (per scene: overall PSNR and the PSNR on the pixels of the scene's
regime, the winner in bold) and writes `regimes.json` to --out. Reruns reuse finished runs.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from scenes import synthetic_scene

from moegs_bench.bench.harness import run_expert
from moegs_bench.bench.store import RunStore
from moegs_bench.device import default_device

REGIME_SCENES = ("static", "smooth", "fast", "abrupt", "nonrigid")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--experts", default="static,stg,ex4dgs,ed3dgs,4dgs")
    ap.add_argument("--scenes", default=",".join(REGIME_SCENES))
    ap.add_argument("--size", default="tiny")
    ap.add_argument("--rig", default="n3v")
    args = ap.parse_args()
    device = default_device()
    store = RunStore(args.out / "runs")
    rows = []
    for scene in args.scenes.split(","):
        data = synthetic_scene(args.out, scene, args.rig, args.size, device)
        for name in args.experts.split(","):
            t0 = time.perf_counter()
            m = run_expert(name, data, store, save_renders=False).metrics
            row = {"scene": scene, "expert": name, "psnr": m["psnr"],
                   "psnr_regime": m.get(f"psnr_{scene}"), "psnr_background": m.get("psnr_static"),
                   "seconds": time.perf_counter() - t0}
            rows.append(row)
            print(json.dumps(row), flush=True)
            args.out.mkdir(parents=True, exist_ok=True)
            (args.out / "regimes.json").write_text(json.dumps(rows, indent=2))
    experts = args.experts.split(",")
    print(f"\nsize {args.size}: test PSNR overall / on the pixels of the scene's regime (best in bold)\n")
    print("| scene | " + " | ".join(experts) + " |\n|---|" + "---|" * len(experts))
    for scene in args.scenes.split(","):
        got = {r["expert"]: r for r in rows if r["scene"] == scene}
        best = max(got.values(), key=lambda r: r["psnr_regime"] or float("-inf"))["expert"]
        cells = []
        for e in experts:
            r = got.get(e)
            text = "—" if r is None else f"{r['psnr']:.2f} / {r['psnr_regime']:.2f}"
            cells.append(f"**{text}**" if e == best else text)
        print(f"| {scene} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
