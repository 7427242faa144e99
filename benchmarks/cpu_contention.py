"""Benchmark: CPU training speed alone and beside busy loops, per OpenMP wait policy and thread
count (docs/performance.md "CPU under contention").

    python benchmarks/cpu_contention.py --out /tmp/bench --experts static,4dgs --busy 2

Each measurement is a fresh process training one expert (`tiny` preset, `--iterations` steps,
no checkpoints) on the synthetic `tiny` scene: `spin` is OpenMP's own default (torch loaded
before the toolkit, as the code before the toolkit set a policy), `passive` the toolkit's
(`OMP_WAIT_POLICY=PASSIVE`, set when the package is imported, before torch), each with 2
threads, and `passive` with 1 thread. Every setting runs alone, then beside `--busy`
pure-Python busy loops (`while True: pass`), which are stopped afterwards. The settings take
turns for `--repeats` rounds (so that other load on the machine falls on all of them alike);
prints one markdown table of the median iterations per second.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

SETTINGS = (("spin", 2), ("passive", 2), ("passive", 1))  # (wait policy, torch threads)


def child(policy: str, threads: int, expert: str, iterations: int, scene_dir: str) -> None:
    """One measurement in this process: prints {"it_s": ...} as JSON."""
    if policy == "spin":
        importlib.import_module("torch")  # OpenMP reads its settings now, before the toolkit sets any
    # isort: off
    import moegs_bench  # noqa: F401  (sets OMP_WAIT_POLICY=PASSIVE if torch is not loaded yet)
    import torch
    # isort: on

    from moegs_bench.data.load import load_scene
    from moegs_bench.experts.registry import expert_config, get_expert
    from moegs_bench.train.loop import train_expert

    torch.set_num_threads(threads)
    data = load_scene(Path(scene_dir), torch.device("cpu"))
    cfg = expert_config(expert, "tiny", {"train": {"iterations": iterations, "checkpoint_every": 0}})
    torch.manual_seed(0)
    model = get_expert(expert).from_scene(data, cfg, torch.Generator().manual_seed(0))
    result = train_expert(model, data, seed=0)
    print(json.dumps({"it_s": iterations / result.seconds}))


def measure(policy: str, threads: int, expert: str, iterations: int, scene_dir: Path) -> float:
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "OMP_NUM_THREADS")}
    out = subprocess.run([sys.executable, __file__, "--child", policy, str(threads), expert, str(iterations),
                          str(scene_dir)], env=env, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])["it_s"]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", type=Path, help="where the tiny scene is generated")
    ap.add_argument("--experts", default="static,4dgs")
    ap.add_argument("--iterations", type=int, default=60)
    ap.add_argument("--busy", type=int, default=2, help="busy loops beside the training")
    ap.add_argument("--repeats", type=int, default=3, help="rounds over the settings; the median is shown")
    ap.add_argument("--child", nargs=5, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        policy, threads, expert, iterations, scene_dir = args.child
        child(policy, int(threads), expert, int(iterations), scene_dir)
        return
    if args.out is None:
        ap.error("--out is required")
    from moegs_bench.data.synthetic import generate_synthetic, synthetic_scene_dir

    scene_dir = synthetic_scene_dir(args.out / "scenes", "mixed", "n3v", "tiny", 0)
    generate_synthetic(scene_dir, scene="mixed", rig="n3v", size="tiny", seed=0, device="cpu")
    experts = [e.strip() for e in args.experts.split(",") if e.strip()]
    load = os.getloadavg()[0]
    rows: dict[tuple, dict[str, list[float]]] = {}
    for label, busy in (("alone", 0), (f"beside {args.busy} busy loops", args.busy)):
        loops = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(busy)]
        try:
            time.sleep(1.0 if busy else 0.0)
            for _ in range(args.repeats):
                for expert in experts:
                    for policy, threads in SETTINGS:
                        rows.setdefault((expert, policy, threads), {}).setdefault(label, []).append(
                            measure(policy, threads, expert, args.iterations, scene_dir))
        finally:
            for p in loops:
                p.terminate()
                p.wait()
    print(f"load average at the start: {load:.2f}; {args.iterations} iterations, tiny preset, "
          f"median of {args.repeats}")
    print("| expert | wait policy | threads | it/s alone | it/s beside busy loops | slowdown |")
    print("|---|---|---|---|---|---|")
    for (expert, policy, threads), r in rows.items():
        alone, busy = statistics.median(r["alone"]), statistics.median(r[f"beside {args.busy} busy loops"])
        print(f"| {expert} | {policy} | {threads} | {alone:.1f} | {busy:.1f} | {alone / busy:.2f}x |")


if __name__ == "__main__":
    main()
