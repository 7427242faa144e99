"""Regenerate the committed reports (reports/) from a clean checkout, on a GPU machine.

    python benchmarks/reports.py --out runs/reports                 # every stage
    python benchmarks/reports.py --out runs/reports --stages moe    # the mixtures only

Stages (each reuses what the run store already holds, so an interrupted call is resumed by
running the same command again):
  moe        synthetic `mixed`, n3v rig, `full`: the N=3 experts (ex4dgs, stg, ed3dgs, their
             synthetic presets), then the baselines and all routers twice, with the synthetic
             default router preset and with the `paper` preset (the authors' setting), and the
             VAPR at the default preset with the authors' temperature pair; writes
             reports/moe-n3/<default|paper>/{main.md,main.csv,router-ablation.md,results.csv}
             and reports/moe-n3/temperature.md
  analysis   the same scene and experts: the VAPR (synthetic default preset), its fused model,
             MDC and depth error of every method (10 frames), trajectories of every expert;
             writes reports/analysis-n3/{mdc.md,trajectories.md,winners.md,per-frame.csv,
             mixture.md,results.csv}
  efficiency the same scene and store: the VAPR over the N=3 and the N=2 (stg, ex4dgs)
             experts, each pruned to 55% and 75% (gate-aware pruning), with render FPS and memory
             of every method in both render modes; writes reports/efficiency-n3/{efficiency.md
             (Table 3), efficiency-ablation.md (Table 5), mixture.md, results.csv} and the raw
             single-pass benchmark reports/efficiency-n3/single-pass.txt
  budget     the sweep experiments/budget.toml in the same store (its 100% experts are the ones
             above): the N=3 experts at 50/20/10% of their iterations and schedules and the VAPR
             over each budget's experts; writes reports/budget-n3/{budget.md (Table 6),
             results.csv}
  seeds      the sweep experiments/seeds.toml in the same store, with --seeds seeds (seed 0 is
             the experts above): each seed's N=3 experts and its own VAPR; writes
             reports/seeds-n3/{seeds.md (Table 12), results.csv}
  experts    benchmarks/experts_full.py for every expert -> reports/experts-full.json
  iteration  benchmarks/iteration_cost.py -> reports/iteration-cost.txt

It refuses to run on a tree with uncommitted code (every number must trace to a commit);
each written report names the commit, the GPU and the command.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import subprocess
import sys
import time
from pathlib import Path

import torch

from moegs_bench.bench.experiment import Experiment, run_experiment
from moegs_bench.bench.store import git_commit, git_dirty, host_info, notes, results
from moegs_bench.progress import line_progress
from moegs_bench.report.tables import build_table, format_table
from moegs_bench.sweep.backends import LocalBackend, gpu_slots
from moegs_bench.sweep.driver import plan_sweep, run_sweep
from moegs_bench.sweep.spec import load_spec

REPO = Path(__file__).resolve().parents[1]
REPORTS = REPO / "reports"
SCENE = {"scene": "mixed", "rig": "n3v", "size": "full"}
AUTHORS_TEMPERATURE = ("temperature=0.01", "eval_temperature=1.0")


def log(text: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {text}", flush=True)


PROGRESS = line_progress(log)  # a line per training every 30 s: the logs show how far a run is


def provenance(command: str) -> str:
    """One line naming the commit, the device and the command a report comes from."""
    state = " with uncommitted changes" if git_dirty(REPO) else ""
    return f"Commit {git_commit(REPO)}{state}, {host_info()['device']}; `{command}`."


def link_runs(src: Path, dst: Path, methods: list[str]) -> None:
    """Make the stage-1 runs of `src` part of store `dst` (a symlink per method folder), so
    that routers with other settings reuse the same trained experts."""
    for method_dir in src.glob("*/*/*"):
        if method_dir.name in methods:
            target = dst / method_dir.relative_to(src)
            target.parent.mkdir(parents=True, exist_ok=True)
            if not target.exists():
                target.symlink_to(method_dir.resolve(), target_is_directory=True)


def write_tables(store: Path, out: Path, header: str) -> None:
    """The main and router-ablation tables (markdown; main also as CSV) and the tidy rows."""
    out.mkdir(parents=True, exist_ok=True)
    df, nt = results(store), notes(store)
    for name, fmt, file in (("main", "markdown", "main.md"), ("main", "csv", "main.csv"),
                            ("router-ablation", "markdown", "router-ablation.md")):
        text = format_table(build_table(name, df, dataset="synthetic", notes=nt), fmt)
        (out / file).write_text(text if fmt == "csv" else f"{header}\n\n{text}")
    df.drop(columns=["run_dir"]).to_csv(out / "results.csv", index=False)


def stage_moe(out: Path, command: str, size: str, extra: tuple[str, ...] = ()) -> None:
    experts = ["ed3dgs", "ex4dgs", "stg"]
    common = {**SCENE, "size": size, "experts": "3", "data_dir": out / "scenes", "router_overrides": extra}
    default, paper, temp = out / "runs-default", out / "runs-paper", out / "runs-temperature"
    log("experts and routers, synthetic default router preset")
    run_experiment(Experiment(**common, routers="all", runs_dir=default), progress=PROGRESS, log=log)
    for store in (paper, temp):
        link_runs(default, store, experts)
    log("routers, paper preset")
    run_experiment(Experiment(**common, routers="all", router_preset="paper", runs_dir=paper), progress=PROGRESS, log=log)
    log("vapr, default preset with the authors' temperatures")
    authors = {**common, "router_overrides": (*extra, *AUTHORS_TEMPERATURE)}
    run_experiment(Experiment(**authors, routers="vapr", runs_dir=temp), progress=PROGRESS, log=log)
    header = provenance(command)
    write_tables(default, REPORTS / "moe-n3" / "default", header)
    write_tables(paper, REPORTS / "moe-n3" / "paper", header)
    rows = []
    for what, store in (("train 1, eval 1", default), ("train 0.01, eval 1", temp)):
        df = results(store)
        vapr = df[df.method == "moe-vapr"].set_index("metric").value
        rows.append(f"| {what} | {vapr['psnr']:.2f} | {vapr['ssim']:.4f} | {vapr['iterations']:.0f} |")
    table = ["| VAPR softmax temperature | PSNR | SSIM | iterations |", "|---|---|---|---|", *rows]
    (REPORTS / "moe-n3" / "temperature.md").write_text(header + "\n\n" + "\n".join(table) + "\n")


def stage_analysis(out: Path, command: str, size: str, extra: tuple[str, ...] = ()) -> None:
    store = out / "runs-default"  # the moe stage's experts and VAPR, when it ran before
    log("fused model, MDC and trajectories")
    run_experiment(Experiment(**{**SCENE, "size": size}, experts="3", data_dir=out / "scenes", routers="vapr",
                              router_overrides=extra, runs_dir=store, analyses="all", mdc_frames=10), progress=PROGRESS, log=log)
    header = provenance(command)
    dest = REPORTS / "analysis-n3"
    dest.mkdir(parents=True, exist_ok=True)
    df, nt = results(store), notes(store)
    for name, file in (("mdc", "mdc.md"), ("trajectories", "trajectories.md"), ("winners", "winners.md"),
                       ("mixture", "mixture.md")):
        table = build_table(name, df, dataset="synthetic", notes=nt)
        (dest / file).write_text(f"{header}\n\n{format_table(table, 'markdown')}")
    per_frame = build_table("per-frame", df, dataset="synthetic")
    (dest / "per-frame.csv").write_text(format_table(per_frame, "csv"))
    df.drop(columns=["run_dir"]).to_csv(dest / "results.csv", index=False)


def stage_efficiency(out: Path, command: str, size: str, extra: tuple[str, ...] = ()) -> None:
    """Tables 3 and 5: VAPR mixtures of N=3 and N=2 experts, unpruned and pruned, in the moe
    stage's store (its experts, when it ran before)."""
    store = out / "runs-default"
    common = {**SCENE, "size": size, "data_dir": out / "scenes", "router_overrides": extra, "routers": "vapr",
              "prune": "55,75", "runs_dir": store}
    for n in ("3", "2"):
        log(f"VAPR over the N={n} experts, pruned to 55% and 75%")
        run_experiment(Experiment(**common, experts=n), progress=PROGRESS, log=log)
    header = provenance(command)
    dst = REPORTS / "efficiency-n3"
    dst.mkdir(parents=True, exist_ok=True)
    df, nt = results(store), notes(store)
    for name, file in (("efficiency", "efficiency.md"), ("efficiency-ablation", "efficiency-ablation.md"),
                       ("mixture", "mixture.md")):
        text = format_table(build_table(name, df, dataset="synthetic", notes=nt), "markdown")
        (dst / file).write_text(f"{header}\n\n{text}")
    df.drop(columns=["run_dir"]).to_csv(dst / "results.csv", index=False)
    if torch.cuda.is_available():
        stage_script(["benchmarks/single_pass.py", "--profile"], dst / "single-pass.txt")
    else:
        log("no CUDA: the raw single-pass benchmark (single-pass.txt) is not run")


def stage_sweep(out: Path, command: str, size: str, extra: tuple[str, ...], name: str, gpus: int,
                workers: int | None, seeds: int | None = None) -> None:
    """A spec of experiments/ (Table 6: budget, Table 12: seeds) run in the moe stage's store,
    on local worker processes (`workers`, default one per GPU, over `gpus` GPUs), then its
    tables under reports/<name>-n3/."""
    spec = load_spec(REPO / "experiments" / f"{name}.toml")
    changes = {"runs_dir": out / "runs-default", "data_dir": out / "scenes", "size": size,
               "router_overrides": (*spec.router_overrides, *extra)}
    if seeds is not None:
        changes["seeds"] = tuple(range(seeds))
    spec = dataclasses.replace(spec, **changes)
    plan = plan_sweep(spec)
    log(f"sweep {name}: {len(plan.tasks)} tasks, {plan.count('cached')} stored")
    count = workers or max(1, gpus)
    outcome = run_sweep(plan, LocalBackend(gpu_slots(count, gpus, 1.0 if count <= gpus else 0.5)), log=log)
    if not outcome.ok:
        sys.exit(f"error: sweep {name}: {len(outcome.ids('failed'))} task(s) failed")
    header = provenance(command)
    dst = REPORTS / f"{name}-n3"
    dst.mkdir(parents=True, exist_ok=True)
    df, nt = results(spec.runs_dir), notes(spec.runs_dir)
    for table in spec.tables:
        text = format_table(build_table(table, df, dataset="synthetic", notes=nt), "markdown")
        (dst / f"{table}.md").write_text(f"{header}\n\n{text}")
    df.drop(columns=["run_dir"]).to_csv(dst / "results.csv", index=False)


def stage_script(args: list[str], output: Path) -> None:
    """A benchmark script of this folder; its stdout goes to `output` (JSON outputs are
    copied from its --out folder by the caller)."""
    proc = subprocess.run([sys.executable, *args], cwd=REPO, capture_output=True, text=True, check=True)
    output.write_text(proc.stdout)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, required=True, help="work folder (run stores, scenes)")
    ap.add_argument("--stages", default="moe,analysis,efficiency,budget,seeds,experts,iteration")
    ap.add_argument("--size", default="full", help="synthetic size (full for the committed reports; tiny to try it)")
    ap.add_argument("--router-iterations", type=int, default=None,
                    help="router iterations for every preset (to try the script quickly; not for reports)")
    ap.add_argument("--gpus", type=int, default=None,
                    help="GPUs the budget and seeds sweeps use (default: every visible one; 0 on a CPU)")
    ap.add_argument("--workers", type=int, default=None,
                    help="sweep tasks at once (default one per GPU; more than --gpus share GPUs)")
    ap.add_argument("--seeds", type=int, default=3, help="seeds of the seeds stage (the paper trains 5)")
    ap.add_argument("--allow-dirty", action="store_true",
                    help="run on uncommitted code (its rows are marked [uncommitted]; never commit them)")
    args = ap.parse_args()
    dirty = git_dirty(REPO)
    if dirty is not False and not args.allow_dirty:
        sys.exit(f"error: {REPO} has uncommitted code changes (or is not a git checkout): commit first, "
                 "so that every reported number traces to a commit")
    command = "python benchmarks/reports.py " + " ".join(sys.argv[1:])
    stages = [s.strip() for s in args.stages.split(",") if s.strip()]
    for stage in stages:
        if stage == "moe":
            extra = () if args.router_iterations is None else (f"iterations={args.router_iterations}",)
            stage_moe(args.out, command, args.size, extra)
        elif stage == "analysis":
            extra = () if args.router_iterations is None else (f"iterations={args.router_iterations}",)
            stage_analysis(args.out, command, args.size, extra)
        elif stage == "efficiency":
            extra = () if args.router_iterations is None else (f"iterations={args.router_iterations}",)
            stage_efficiency(args.out, command, args.size, extra)
        elif stage in ("budget", "seeds"):
            extra = () if args.router_iterations is None else (f"iterations={args.router_iterations}",)
            gpus = args.gpus if args.gpus is not None else (torch.cuda.device_count() if torch.cuda.is_available() else 0)
            stage_sweep(args.out, command, args.size, extra, stage, gpus, args.workers,
                        args.seeds if stage == "seeds" else None)
        elif stage == "experts":
            bench = args.out / "bench"
            stage_script(["benchmarks/experts_full.py", "--out", str(bench), "--experts",
                          "static,stg,ex4dgs,ed3dgs,4dgs"], args.out / "experts-full.log")
            (REPORTS / "experts-full.json").write_text((bench / "experts_full.json").read_text())
        elif stage == "iteration":
            stage_script(["benchmarks/iteration_cost.py", "--out", str(args.out / "bench"), "--experts",
                          "4dgs,ed3dgs", "--precisions", "float32,bfloat16", "--profile"],
                         REPORTS / "iteration-cost.txt")
        else:
            sys.exit(f"error: --stages: unknown stage {stage!r} "
                     "(moe, analysis, efficiency, budget, seeds, experts, iteration)")
        log(f"stage {stage} done")
    if dirty:
        log("uncommitted code: the reports written here must not be committed")
    print(json.dumps({"commit": git_commit(REPO), "stages": stages}))


if __name__ == "__main__":
    main()
