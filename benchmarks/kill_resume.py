"""Kill a training run with SIGKILL, resume it, and compare it with an uninterrupted run.

    python benchmarks/kill_resume.py --out runs/kill-resume              # stg on the synthetic full scene
    python benchmarks/kill_resume.py --out /tmp/kr --size tiny --expert static --kill-at-checkpoint 1

Prepares the scene once, then trains the same expert (same seed, same settings) twice, each
in its own run store: once straight through, once killed with SIGKILL a moment after its
N-th resumable checkpoint was written and then started again with the same command (it
resumes from that checkpoint). Prints both runs' test metrics and their difference.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import torch


def moegs(*args: str) -> list[str]:
    return [sys.executable, "-m", "moegs_bench", *args]


def train_cmd(scene: Path, runs: Path, expert: str, seed: int) -> list[str]:
    return moegs("train", "--expert", expert, "--scene", str(scene), "--runs", str(runs), "--seed", str(seed))


def metrics(runs: Path, expert: str) -> dict[str, float]:
    df = pd.read_csv(runs / "results.csv")
    df = df[df["method"] == expert]
    return dict(zip(df["metric"], df["value"], strict=True))


def kill_after_checkpoint(cmd: list[str], runs: Path, n: int, delay: float) -> tuple[float, int]:
    """Start `cmd`, SIGKILL it `delay` s after the n-th write of a train_state.pt under
    `runs`; returns (seconds until the kill, the step stored in that checkpoint)."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    seen, last = 0, None
    while proc.poll() is None:
        states = list(runs.glob("**/train_state.pt"))
        if states:
            try:
                mtime = states[0].stat().st_mtime_ns
            except FileNotFoundError:  # the finished run removed it
                continue
            if mtime != last:
                seen, last = seen + 1, mtime
                if seen >= n:
                    # the step this kill resumes from: read now, the run may finish and remove it
                    step = int(torch.load(states[0], map_location="cpu", weights_only=False)["step"])
                    time.sleep(delay)
                    if proc.poll() is not None:
                        break
                    os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait()
                    return time.perf_counter() - t0, step
        time.sleep(0.05)
    raise SystemExit(f"training finished (exit {proc.returncode}) before checkpoint {n}: nothing was killed")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--scene", default="mixed", help="synthetic scene name, or a prepared scene folder")
    ap.add_argument("--size", default="full")
    ap.add_argument("--expert", default="stg")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--kill-at-checkpoint", type=int, default=2, help="kill after this many checkpoint writes")
    ap.add_argument("--delay", type=float, default=2.0, help="seconds between the checkpoint and the kill")
    args = ap.parse_args()

    scene = Path(args.scene) if Path(args.scene).is_dir() else args.out / "scene"  # a prepared folder, or a name
    if not (scene / "scene.json").is_file():
        subprocess.run(moegs("prepare", "synthetic", "--scene", args.scene, "--rig", "n3v", "--size", args.size,
                             "--out", str(scene)), check=True)
    straight, killed = args.out / "straight", args.out / "killed"
    t0 = time.perf_counter()
    subprocess.run(train_cmd(scene, straight, args.expert, args.seed), check=True, stdout=subprocess.DEVNULL)
    straight_s = time.perf_counter() - t0
    kill_s, step = kill_after_checkpoint(train_cmd(scene, killed, args.expert, args.seed), killed,
                                         args.kill_at_checkpoint, args.delay)
    t0 = time.perf_counter()
    subprocess.run(train_cmd(scene, killed, args.expert, args.seed), check=True, stdout=subprocess.DEVNULL)
    resume_s = time.perf_counter() - t0

    a, b = metrics(straight, args.expert), metrics(killed, args.expert)
    rows = [(k, a[k], b[k], b[k] - a[k]) for k in ("psnr", "ssim", "num_gaussians", "iterations") if k in a and k in b]
    from moegs_bench.bench.store import host_info

    print(f"\n{args.expert} on {args.scene}/{args.size}, seed {args.seed}, {host_info()['device']}")
    print(f"uninterrupted: {straight_s:.1f} s; killed (SIGKILL) {kill_s:.1f} s after start, "
          f"{args.delay} s after the checkpoint of step {step}; resumed run {resume_s:.1f} s\n")
    print("| metric | uninterrupted | killed + resumed | difference |\n|---|---|---|---|")
    for k, x, y, d in rows:
        print(f"| {k} | {x:.4f} | {y:.4f} | {d:+.4f} |")
    (args.out / "kill_resume.json").write_text(json.dumps(
        {"expert": args.expert, "size": args.size, "killed_after_step": step, "straight_s": straight_s,
         "kill_s": kill_s, "resume_s": resume_s, "uninterrupted": a, "resumed": b,
         "device": host_info()["device"]}, indent=1))


if __name__ == "__main__":
    main()
