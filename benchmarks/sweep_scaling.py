"""Time a sweep with 1 and with 2 workers, check both give the same results, then kill the
driver mid-sweep and resume it, checking that no completed run is trained again.

"Same results" means the same runs with the same content keys (configuration, code, seed) in
every store, and PSNR within --tolerance or, where larger, within the difference between the
two stores run with the same worker count (the 2-worker sweep and the killed-and-resumed one):
training on a GPU is not bit-reproducible (gsplat's backward sums with atomics), so two runs of
one configuration differ by that much whatever the number of workers.

    python benchmarks/sweep_scaling.py --out runs/sweep-scaling                 # 2 GPUs, Ray
    python benchmarks/sweep_scaling.py --spec /tmp/tiny.toml --backend local --out /tmp/ss   # CPU check

Each configuration gets its own run store under --out (the scenes are generated once, before
any timing, into --out/scenes). Workers: `--gpus N --workers N` with CUDA, `--workers N`
without. The kill: the driver (`moegs-bench sweep`) is sent SIGKILL once --kill-after runs are
complete; its process group is then ended too (a local Ray instance, its workers), and the
same command is run again. A completed run trained again would have a new config.json.
Prints one table; exits 1 when a check fails.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd


def write_spec(spec, runs: Path, data_dir: Path, out: Path) -> Path:
    """The spec with its own run store and the shared scene folder, as TOML."""
    import tomli_w

    raw = __import__("tomllib").loads(spec.path.read_text())
    raw["sweep"].update(runs_dir=str(runs), data_dir=str(data_dir))
    out.write_text(tomli_w.dumps(raw))
    return out


def sweep_cmd(spec: Path, backend: str, workers: int, gpus: bool) -> list[str]:
    cmd = [sys.executable, "-m", "moegs_bench", "sweep", str(spec), "--backend", backend, "--workers", str(workers)]
    return cmd + (["--gpus", str(workers)] if gpus else [])


def done_runs(runs: Path) -> dict[Path, int]:
    """Completed run folder -> config.json's mtime (ns)."""
    return {p.parent: (p.parent / "config.json").stat().st_mtime_ns for p in runs.glob("*/*/*/*/seed*/DONE")}


def psnr(runs: Path) -> pd.DataFrame:
    """PSNR and content key of every stored run, by (scene, method, variant, seed)."""
    df = pd.read_csv(runs / "results.csv")
    df = df[df.metric == "psnr"]
    return df.set_index(["scene", "method", "variant", "seed"])[["value", "key"]].sort_index()


def compare(a: pd.DataFrame, b: pd.DataFrame) -> tuple[bool, float]:
    """(same runs with the same keys, largest PSNR difference; NaN unless the runs match)."""
    same = list(a.index) == list(b.index) and bool((a["key"] == b["key"]).all())
    return same, float((a["value"] - b["value"]).abs().max()) if same else float("nan")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--spec", type=Path, default=Path("experiments/smoke.toml"))
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--backend", default="ray", choices=["local", "ray"])
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--tolerance", type=float, default=0.1,
                    help="largest PSNR difference (dB) counted as the same, unless two sweeps with the same "
                         "worker count differ by more")
    ap.add_argument("--kill-after", type=int, default=3, help="complete runs before the driver is killed")
    args = ap.parse_args()

    import torch

    from moegs_bench.sweep.backends import run_task
    from moegs_bench.sweep.plan import expand
    from moegs_bench.sweep.spec import load_spec

    gpus = torch.cuda.is_available()
    spec = load_spec(args.spec)
    scenes = args.out / "scenes"
    for task in expand(dataclasses.replace(spec, data_dir=scenes)):  # generated before any timing
        if task.kind == "scene" and run_task(task)["status"] == "failed":
            raise SystemExit(f"{task.id}: could not be generated")
    rows, ok = [], True
    for workers in (1, args.workers):
        runs = args.out / f"w{workers}"
        path = write_spec(spec, runs, scenes, args.out / f"w{workers}.toml")
        t0 = time.perf_counter()
        out = subprocess.run(sweep_cmd(path, args.backend, workers, gpus), capture_output=True, text=True)
        wall = time.perf_counter() - t0
        if out.returncode != 0:
            print(out.stdout[-3000:], out.stderr[-3000:], sep="\n")
            return 1
        rows.append({"workers": workers, "wall_s": wall, "runs": len(done_runs(runs))})
    base = rows[0]["wall_s"]
    for row in rows:
        row["vs_1_worker"] = row["wall_s"] / base
    runs = args.out / "kill"
    path = write_spec(spec, runs, scenes, args.out / "kill.toml")
    cmd = sweep_cmd(path, args.backend, args.workers, gpus)
    driver = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    while len(done_runs(runs)) < args.kill_after and driver.poll() is None:
        time.sleep(0.2)
    driver.send_signal(signal.SIGKILL)
    driver.wait()
    time.sleep(2.0)
    try:  # what the driver started (a local Ray instance) ends with it
        os.killpg(driver.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    before = done_runs(runs)
    t0 = time.perf_counter()
    again = subprocess.run(cmd, capture_output=True, text=True)
    resume_s = time.perf_counter() - t0
    after = done_runs(runs)
    retrained = [str(r) for r, mtime in before.items() if after.get(r) != mtime]
    ok &= again.returncode == 0 and not retrained and len(after) == rows[0]["runs"]
    one, many, killed = psnr(args.out / "w1"), psnr(args.out / f"w{args.workers}"), psnr(runs)
    same_runs, diff = compare(one, many)
    same_repeat, repeat = compare(many, killed)
    allowed = max(args.tolerance, repeat if same_repeat else 0.0)
    ok &= same_runs and same_repeat and diff <= allowed

    print(f"spec {args.spec} ({len(expand(spec))} tasks), backend {args.backend}, "
          f"{torch.cuda.get_device_name(0) if gpus else 'CPU'} x{torch.cuda.device_count() if gpus else 0}\n")
    print("| workers | wall (s) | vs 1 worker | runs |\n|---|---|---|---|")
    for row in rows:
        print(f"| {row['workers']} | {row['wall_s']:.1f} | {row['vs_1_worker']:.2f}x | {row['runs']} |")
    print(f"\nsame runs and keys: {same_runs}; largest PSNR difference, 1 vs {args.workers} workers: {diff:.4f} dB; "
          f"between the two {args.workers}-worker sweeps (the plain and the killed one): {repeat:.4f} dB; "
          f"allowed: {allowed:.4f} dB (--tolerance {args.tolerance} or the repeat difference)")
    print(f"killed after {len(before)} complete runs; resumed in {resume_s:.1f} s to {len(after)} runs; "
          f"completed runs trained again: {len(retrained)} {retrained if retrained else ''}")
    if again.returncode != 0:
        print(again.stdout[-3000:], again.stderr[-3000:], sep="\n")
    print("checks:", "passed" if ok else "FAILED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
