"""The distillation study (paper Tables 7 and 13) on the synthetic scene, spread over the GPUs
of one machine, then the study's tables, figures and HTML report.

    python benchmarks/distill_study.py --out runs/distill --gpus 4 --per-gpu 4
    python benchmarks/distill_study.py --out /tmp/d --size tiny --gpus 1 --per-gpu 1 --allow-dirty   # smoke test

Steps (each a process pinned to one GPU with CUDA_VISIBLE_DEVICES; all share one run store,
and no two processes ever train the same run):
  1. the synthetic scene (`mixed`, n3v rig, --size)
  2. the N=3 experts (ex4dgs, stg, ed3dgs), one process each; beside them, with --kill-resume,
     benchmarks/kill_resume.py (stg killed with SIGKILL and resumed, against an uninterrupted run)
  3. the VAPR router over them, the baselines and the mixture's pseudo-labels
  4. every retraining of the study, one process each, longest first: per expert and seed
     (seed+1 .. seed+--seeds) the ground-truth retraining and the distilled one, plus the
     w/o-weight distillation of the experts in --noweight
  5. `moegs-bench run` of the whole study in one process (it reuses every stored run, so its
     tables are the study's), the fused model, MDC and trajectories (--analysis), the tables,
     every figure and the HTML report, written to --out/report

It refuses a tree with uncommitted code (every number must trace to a commit) unless
--allow-dirty. Rerunning the same command reuses every finished run.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
EXPERTS = ("ex4dgs", "stg", "ed3dgs")  # the synthetic dataset's N=3 set
COST = {"ex4dgs": 225, "ed3dgs": 195, "stg": 110}  # seconds per training on one H200 (reports/moe-n3)


def log(text: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {text}", flush=True)


@dataclass
class Job:
    """One process: `spec` is what the worker runs, `cost` orders the queue (longest first)."""

    name: str
    spec: dict
    cost: float = 1.0
    proc: subprocess.Popen | None = None
    slot: tuple[int, int] | None = None
    started: float = 0.0
    log_path: Path | None = None
    extra: list[str] = field(default_factory=list)


def experiment(args: argparse.Namespace, **kw):
    from moegs_bench.bench.experiment import Experiment

    base = dict(scene="mixed", rig="n3v", size=args.size, seed=0, runs_dir=Path(args.out) / "store",
                experts=",".join(EXPERTS), routers="none", lpips_weights=args.lpips_weights)
    return Experiment(**{**base, **kw})


def study(args: argparse.Namespace, **kw):
    """The whole study's Experiment; `kw` narrows it to one step."""
    weighting = "routing," + ",".join(f"{e}:both" for e in args.noweight) if args.noweight else "routing"
    return experiment(args, routers="vapr", distill=True, distill_seeds=args.seeds, distill_weighting=weighting, **kw)


def worker(args: argparse.Namespace, spec: dict) -> None:
    """Run one step in this process."""
    import torch

    from moegs_bench.bench.experiment import resolve_scene, run_experiment

    kind = spec["kind"]
    if kind == "scene":
        resolve_scene(experiment(args), torch.device("cuda" if torch.cuda.is_available() else "cpu"), log=log)
    elif kind == "expert":
        run_experiment(experiment(args, experts=spec["label"]), log=log)
    elif kind == "mixture":  # router, baselines, pseudo-labels; no retraining
        run_experiment(study(args, distill_only=()), log=log)
    elif kind == "distill":
        run_experiment(study(args, distill_only=((spec["label"], spec["seed"], spec["what"]),)), log=log)
    else:
        raise SystemExit(f"unknown step {kind}")


class Pool:
    """Runs jobs as processes on GPU slots (gpu, k), at most `per_gpu` at a time on each GPU."""

    def __init__(self, args: argparse.Namespace):
        self.args = args
        self.free = [(g, k) for k in range(args.per_gpu) for g in range(args.gpus)]
        self.running: list[Job] = []
        self.logs = Path(args.out) / "logs"
        self.logs.mkdir(parents=True, exist_ok=True)
        self.times: dict[str, float] = {}

    def start(self, job: Job, gpu: int | None = None) -> None:
        slot = next(s for s in self.free if gpu is None or s[0] == gpu)
        self.free.remove(slot)
        env = {**os.environ, "CUDA_VISIBLE_DEVICES": str(slot[0]), "PYTHONUNBUFFERED": "1"}
        cmd = job.extra or [sys.executable, __file__, "--out", str(self.args.out), "--size", self.args.size,
                            "--seeds", str(self.args.seeds), "--noweight", ",".join(self.args.noweight),
                            "--worker", json.dumps(job.spec)]
        if self.args.lpips_weights and not job.extra:
            cmd += ["--lpips-weights", str(self.args.lpips_weights)]
        job.log_path = self.logs / f"{job.name.replace(':', '-')}.log"
        job.proc = subprocess.Popen(cmd, env=env, stdout=job.log_path.open("w"), stderr=subprocess.STDOUT,
                                    cwd=REPO)
        job.slot, job.started = slot, time.perf_counter()
        self.running.append(job)
        log(f"start {job.name} on GPU {slot[0]}")

    def reap(self) -> list[Job]:
        done = [j for j in self.running if j.proc.poll() is not None]
        for job in done:
            self.running.remove(job)
            self.free.append(job.slot)
            self.times[job.name] = time.perf_counter() - job.started
            if job.proc.returncode != 0 and job.extra:  # a side measurement: report, go on
                log(f"{job.name} failed (exit {job.proc.returncode}); see {job.log_path}")
                continue
            if job.proc.returncode != 0:
                tail = job.log_path.read_text().splitlines()[-15:]
                raise SystemExit(f"{job.name} failed (exit {job.proc.returncode}):\n" + "\n".join(tail))
            log(f"done {job.name} in {self.times[job.name]:.0f} s")
        return done

    def run_all(self, jobs: list[Job], keep: set[str] = frozenset()) -> None:
        """Start `jobs` (longest first) as slots free up; return when they are done (jobs named
        in `keep` that were already running may go on)."""
        queue = sorted(jobs, key=lambda j: -j.cost)
        names = {j.name for j in jobs}
        while queue or any(j.name in names for j in self.running):
            while queue and self.free:
                self.start(queue.pop(0))
            self.reap()
            time.sleep(1.0)


def distill_jobs(args: argparse.Namespace) -> list[Job]:
    jobs = []
    for label in EXPERTS:
        for s in range(1, args.seeds + 1):
            kinds = ["retrained", "routing"] + (["none"] if label in args.noweight else [])
            for what in kinds:
                cost = COST[label] * (1.0 if what == "retrained" else 1.1)
                jobs.append(Job(f"{what}:{label}:{s}", {"kind": "distill", "label": label, "seed": s, "what": what},
                                cost))
    return jobs


def report(args: argparse.Namespace, pool: Pool, t0: float) -> None:
    """Step 5: the whole study in one process, then the tables, figures and HTML report."""
    out = Path(args.out) / "report"
    out.mkdir(parents=True, exist_ok=True)
    store = Path(args.out) / "store"
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "0", "PYTHONUNBUFFERED": "1"}
    cmd = ["run", "--scene", "mixed", "--size", args.size, "--experts", ",".join(EXPERTS), "--router", "vapr",
           "--distill", "--distill-seeds", str(args.seeds), "--runs", str(store)]
    if args.noweight:
        cmd += ["--distill-weighting", "routing," + ",".join(f"{e}:both" for e in args.noweight)]
    if args.analysis:
        cmd += ["--analysis", "all", "--mdc-frames", str(args.mdc_frames)]
    if args.lpips_weights:
        cmd += ["--lpips-weights", str(args.lpips_weights)]
    t = time.perf_counter()
    res = subprocess.run([sys.executable, "-m", "moegs_bench", *cmd], env=env, capture_output=True, text=True,
                         cwd=REPO)
    (out / "run.txt").write_text(res.stdout + res.stderr)
    if res.returncode != 0:
        raise SystemExit(f"the study's run failed:\n{res.stderr[-3000:]}")
    log(f"study run (reuse + analyses) {time.perf_counter() - t:.0f} s")
    from moegs_bench.bench.store import git_commit, git_dirty, host_info

    state = " with uncommitted changes" if git_dirty(REPO) else ""
    command = "python benchmarks/distill_study.py " + " ".join(sys.argv[1:])
    provenance = f"Commit {git_commit(REPO)}{state}, {host_info()['device']} x{args.gpus}; `{command}`."
    for table in ("distillation", "distillation-weighting", "main", "mixture"):
        res = subprocess.run([sys.executable, "-m", "moegs_bench", "report", "--runs", str(store), "--table", table],
                             capture_output=True, text=True, cwd=REPO)
        text = res.stdout if res.returncode == 0 else f"unavailable: {res.stderr.strip()}"
        (out / f"{table}.md").write_text(f"{provenance}\n\n{text}")
        print(f"\n## {table}\n{text}", flush=True)
    subprocess.run([sys.executable, "-m", "moegs_bench", "report", "--runs", str(store), "--html", str(out / "html")],
                   check=True, cwd=REPO)
    (out / "results.csv").write_bytes((store / "results.csv").read_bytes())
    timing = {"total_s": time.perf_counter() - t0, "steps_s": pool.times, "gpus": args.gpus, "per_gpu": args.per_gpu,
              "device": host_info()["device"]}
    (out / "timing.json").write_text(json.dumps(timing, indent=1))
    log(f"report written to {out}; total {timing['total_s']:.0f} s")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--size", default="full")
    ap.add_argument("--gpus", type=int, default=1)
    ap.add_argument("--per-gpu", type=int, default=1, help="processes sharing one GPU")
    ap.add_argument("--seeds", type=int, default=2, help="retrained and distilled runs per expert")
    ap.add_argument("--noweight", default="ed3dgs", help="experts that also get the w/o-weight distillation")
    ap.add_argument("--kill-resume", action="store_true", help="also run benchmarks/kill_resume.py (stg)")
    ap.add_argument("--analysis", action="store_true", help="fused model, MDC and trajectories in step 5")
    ap.add_argument("--mdc-frames", type=int, default=5)
    ap.add_argument("--lpips-weights", type=Path, default=None)
    ap.add_argument("--allow-dirty", action="store_true")
    ap.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    args.noweight = [e for e in args.noweight.split(",") if e]
    if args.worker:
        return worker(args, json.loads(args.worker))

    from moegs_bench.bench.store import git_dirty

    if git_dirty(REPO) and not args.allow_dirty:
        raise SystemExit("uncommitted changes: commit first (or --allow-dirty for a smoke test)")
    t0 = time.perf_counter()
    pool = Pool(args)
    pool.run_all([Job("scene", {"kind": "scene"})])
    steps = [Job(f"expert:{e}", {"kind": "expert", "label": e}, COST[e]) for e in EXPERTS]
    if args.kill_resume:
        kr = Job("kill-resume", {}, 0.0, extra=[sys.executable, str(REPO / "benchmarks" / "kill_resume.py"), "--out",
                                               str(Path(args.out) / "kill-resume"), "--size", args.size, "--scene",
                                               str(scene_dir(args)), "--expert", "stg"])
        pool.start(kr, gpu=args.gpus - 1)
    pool.run_all(steps)
    pool.run_all([Job("mixture", {"kind": "mixture"})])
    pool.run_all(distill_jobs(args))
    while pool.running:  # the kill/resume comparison, if still going
        pool.reap()
        time.sleep(1.0)
    report(args, pool, t0)


def scene_dir(args: argparse.Namespace) -> Path:
    from moegs_bench.data.synthetic import synthetic_scene_dir

    return synthetic_scene_dir(Path(args.out) / "store" / "scenes", "mixed", "n3v", args.size, 0)


if __name__ == "__main__":
    main()
