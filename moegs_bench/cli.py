"""Command line: parses options and calls the library; nothing else lives here."""

from __future__ import annotations

import sys
from contextlib import contextmanager
from pathlib import Path

import click

from .errors import ConfigError, MoegsError


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="moegs-bench")
def cli() -> None:
    """moegs-bench: prepare dynamic multi-view datasets, train Gaussian-splatting experts and
    MoE-GS routers, measure them one way, and print the paper's tables."""


def main() -> None:
    """Console entry point: a user-facing error is one line on stderr and exit status 2."""
    try:
        cli.main(standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        sys.exit(130)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except MoegsError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(2)


# -- shared helpers ------------------------------------------------------------------------------
@contextmanager
def _progress():
    """A rich progress bar; yields a factory name -> callback(step, total, info).

    Refreshed by the callbacks at most 5 times a second: rich's own refresh thread slows
    CPU-bound torch work several-fold on small machines.
    """
    import time

    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
    )

    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                  TimeRemainingColumn(), TextColumn("{task.fields[info]}"), auto_refresh=False) as bar:
        tasks: dict[str, int] = {}
        last = [0.0]

        def factory(name: str):
            def update(step: int, total: int, info: dict | None = None) -> None:
                if name not in tasks:
                    tasks[name] = bar.add_task(name, total=total, info="")
                text = " ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in (info or {}).items())
                bar.update(tasks[name], completed=step, total=total, info=text)
                now = time.monotonic()
                if now - last[0] > 0.2 or step >= total:
                    last[0] = now
                    bar.refresh()
            return update

        yield factory


def _default_size(device) -> str:
    """`full` with CUDA; `tiny` on CPU, where every expert and router must train in minutes."""
    return "full" if device.type == "cuda" else "tiny"


def _resolve_scene(scene: str, rig: str, size: str | None, seed: int, data_dir: Path, device) -> Path:
    """A prepared scene folder, or a synthetic scene name generated (once) under data_dir."""
    path = Path(scene)
    if path.exists():
        from .data.scene import is_prepared_scene

        if not is_prepared_scene(path):
            raise ConfigError(f"--scene {scene}: folder has no scene.json (run `moegs-bench prepare` first)")
        return path
    from .data.scene import is_prepared_scene
    from .data.synthetic import SCENES, generate_synthetic

    if scene not in SCENES:
        raise ConfigError(f"--scene {scene!r}: neither a prepared scene folder nor a synthetic scene "
                          f"({', '.join(SCENES)})")
    size = size or _default_size(device)
    out = data_dir / "synthetic" / f"{scene}-{rig}-{size}-seed{seed}"
    if not is_prepared_scene(out):
        click.echo(f"preparing synthetic scene {scene} ({rig} rig, {size}) in {out}")
        with _progress() as bar:
            generate_synthetic(out, scene=scene, rig=rig, size=size, seed=seed, device=device,
                               progress=bar(f"render {scene}"))
    return out


_common_run_options = [
    click.option("--scene", default="mixed", show_default=True,
                 help="Prepared scene folder, or a synthetic scene name (generated on first use)."),
    click.option("--rig", default="n3v", show_default=True, help="Camera rig of a synthetic scene."),
    click.option("--size", default=None, help="Synthetic size: tiny, small or full "
                 "(default: tiny on CPU, full with CUDA)."),
    click.option("--seed", default=0, show_default=True, type=int, help="Training (and synthetic) seed."),
    click.option("--preset", default=None, help="Expert preset (default: the one for the scene's size/dataset)."),
    click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE",
                 help="Override an expert setting, e.g. --set train.iterations=500 (repeatable); "
                      "LABEL:KEY=VALUE sets it for one expert only, e.g. --set static@small:sh_degree=0."),
    click.option("--force", is_flag=True, help="Retrain even if an identical run is stored."),
    click.option("--runs", "runs_dir", default="runs", show_default=True, type=click.Path(path_type=Path),
                 help="Run store folder."),
    click.option("--data-dir", default=None, type=click.Path(path_type=Path),
                 help="Where synthetic scenes are prepared (default: RUNS/scenes)."),
    click.option("--device", default="auto", show_default=True, help="auto, cpu or cuda."),
    click.option("--lpips-net", default="alex", show_default=True, type=click.Choice(["alex", "vgg"])),
    click.option("--lpips-weights", default=None, type=click.Path(path_type=Path),
                 help="torchvision checkpoint of the LPIPS backbone (offline machines)."),
]


def _with_run_options(fn):
    for opt in reversed(_common_run_options):
        fn = opt(fn)
    return fn


def _run_experts(names, scene, rig, size, seed, preset, overrides, force, runs_dir, data_dir, device,
                 lpips_net, lpips_weights):
    from .bench.harness import expert_overrides, lpips_metric, run_labeled_expert
    from .bench.store import RunStore, write_results_table
    from .config import overrides_to_dict
    from .data.load import load_scene
    from .device import resolve_device

    dev = resolve_device(device)
    root = _resolve_scene(scene, rig, size, seed, data_dir or runs_dir / "scenes", dev)
    data = load_scene(root, dev, with_gt=True)
    store = RunStore(runs_dir)
    lpips = lpips_metric(lpips_net, lpips_weights, dev)
    results = []
    with _progress() as bar:
        for name in names:
            results.append(run_labeled_expert(name, data, store, seed=seed, preset=preset,
                                              overrides=overrides_to_dict(expert_overrides(name, overrides, names)),
                                              force=force,
                                              lpips=lpips, progress=bar))
    write_results_table(runs_dir)
    return data, results, lpips


def _print_results(data, results, lpips) -> None:
    header = "| method | PSNR | SSIM | SSIM (skimage) | LPIPS | Gaussians | train s | it/s | run |"
    click.echo(f"\nscene {data.scene.dataset}/{data.scene.name}: "
               f"{len(data.splits['test'])} test views at {data.width}x{data.height}")
    click.echo(header)
    click.echo("|" + "---|" * (header.count("|") - 1))
    for r in results:
        m = r.metrics
        lp = f"{m['lpips']:.3f}" if "lpips" in m else "n/a"
        train_s = r.run.load_timings().get("train", float("nan"))
        click.echo(f"| {r.name} | {m['psnr']:.2f} | {m['ssim']:.4f} | {m.get('ssim_skimage', float('nan')):.4f} "
                   f"| {lp} | {int(m['num_gaussians'])} | {train_s:.1f} | {m['iters_per_second']:.1f} "
                   f"| {'reused' if r.reused else 'trained'} |")
    if not lpips.available:
        click.echo(f"\n{lpips.reason}")


def _run_routers(data, results, lpips, routers, router_preset, router_overrides, seed, force, runs_dir):
    """Stage 2 over the trained experts; prints the mixture table."""
    from .bench.harness import run_moe
    from .bench.store import RunStore, write_results_table
    from .config import overrides_to_dict

    with _progress() as bar:
        moe = run_moe(results, data, RunStore(runs_dir), routers, seed=seed, router_preset=router_preset,
                      router_overrides=overrides_to_dict(list(router_overrides)), force=force, lpips=lpips,
                      progress=bar)
    write_results_table(runs_dir)
    best = max(results, key=lambda r: r.metrics["psnr"])
    header = "| method | PSNR | SSIM | LPIPS | oracle gain share | router train s | run |"
    click.echo(f"\nmixture of {', '.join(sorted(r.name for r in results))} (best expert: {best.name}, "
               f"PSNR {best.metrics['psnr']:.2f})")
    click.echo(header)
    click.echo("|" + "---|" * (header.count("|") - 1))
    for r in moe:
        m = r.metrics
        lp = f"{m['lpips']:.3f}" if "lpips" in m else "n/a"
        share = f"{m['oracle_gain_share']:.2f}" if "oracle_gain_share" in m else "n/a"
        train_s = f"{r.train_seconds:.1f}" if r.method.startswith("moe-") else "-"
        click.echo(f"| {r.method} | {m['psnr']:.2f} | {m['ssim']:.4f} | {lp} | {share} | {train_s} "
                   f"| {'reused' if r.reused else 'computed'} |")
    experts_s = sum(r.run.load_timings().get("train", 0.0) for r in results)
    routers_s = sum(r.train_seconds for r in moe if r.method.startswith("moe-"))
    click.echo(f"\nrouter training {routers_s:.1f} s (all routers) vs experts' training {experts_s:.1f} s; "
               f"gate maps and expert renders under {moe[0].run.dir.parents[2]}/<method>/{moe[0].run.run_id.variant}")


# -- commands ----------------------------------------------------------------------------------------
@cli.command()
@click.option("--experts", "experts", default=None,
              help="Comma-separated experts, `name@preset` for one expert in a named preset "
                   "(e.g. static@tiny,static@small), or a paper set size 2/3/4 (default: all available).")
@click.option("--router", "router", default="none", show_default=True,
              help="Stage 2 over the experts: vapr, pixel, volume, all or none (comma-separated allowed).")
@click.option("--router-preset", default=None, help="Router preset: paper, fast, tiny, technicolor, authors "
              "(default: by the scene's synthetic size, else paper).")
@click.option("--router-set", "router_overrides", multiple=True, metavar="KEY=VALUE",
              help="Override a router setting, e.g. --router-set iterations=200 (repeatable).")
@_with_run_options
def run(experts, router, router_preset, router_overrides, **kw):
    """Prepare (or reuse) a scene, train the experts (or reuse stored runs), optionally train
    routers over them, evaluate, store results and print tables."""
    from .bench.harness import default_router_preset, resolve_expert_specs, resolve_routers
    from .experts.registry import available_experts

    routers = resolve_routers(router)
    names = resolve_expert_specs(experts) if experts else available_experts()
    data, results, lpips = _run_experts(names, **kw)
    _print_results(data, results, lpips)
    if routers:
        _run_routers(data, results, lpips, routers, router_preset or default_router_preset(data),
                     router_overrides, kw["seed"], kw["force"], kw["runs_dir"])
    click.echo(f"\nresults: {kw['runs_dir'] / 'results.csv'}")


@cli.command()
@click.option("--expert", required=True, help="Expert to train, e.g. static.")
@_with_run_options
def train(expert, **kw):
    """Train and evaluate one expert on one scene."""
    from .experts.registry import resolve_expert_list

    data, results, lpips = _run_experts(resolve_expert_list(expert), **kw)
    _print_results(data, results, lpips)
    click.echo(f"\nrun folder: {results[0].run.dir}")


@cli.command()
@click.option("--table", "table", default="main", show_default=True, help="Table name (see --list).")
@click.option("--format", "fmt", default="markdown", show_default=True,
              type=click.Choice(["markdown", "csv", "latex"]))
@click.option("--runs", "runs_dir", default="runs", show_default=True, type=click.Path(path_type=Path))
@click.option("--dataset", default=None, help="Only rows of this dataset.")
@click.option("--paper-table", default=None, type=int, help="With --table paper: which of the paper's tables (1-13).")
@click.option("--list", "list_tables", is_flag=True, help="List the tables and exit.")
def report(table, fmt, runs_dir, dataset, paper_table, list_tables):
    """Print a table built from the stored results (or, with --table paper, a published one)."""
    from .bench.store import notes, results
    from .report.tables import TABLES, build_table, format_table

    if list_tables:
        for spec in TABLES.values():
            click.echo(f"{spec.name:20s} {spec.description}")
        return
    if table == "paper":  # the paper's own numbers: no run store needed
        opts = {"paper_table": paper_table or 1}
        if dataset:
            opts["dataset"] = dataset
        click.echo(format_table(build_table("paper", _empty_results(), **opts), fmt))
        return
    if not Path(runs_dir).is_dir():
        raise ConfigError(f"--runs {runs_dir}: no such run store (run `moegs-bench run` first)")
    df = results(runs_dir)
    if df.empty:
        raise ConfigError(f"--runs {runs_dir}: no completed runs")
    opts = {"notes": notes(runs_dir)}
    if dataset:
        opts["dataset"] = dataset
    elif df["dataset"].nunique() == 1:
        opts["dataset"] = df["dataset"].iloc[0]
    else:
        raise ConfigError(f"--dataset: the store holds several datasets ({', '.join(sorted(df['dataset'].unique()))}); name one")
    click.echo(format_table(build_table(table, df, **opts), fmt))


def _empty_results():
    import pandas as pd

    from .bench.store import RESULT_COLUMNS

    return pd.DataFrame(columns=RESULT_COLUMNS)


def _register_prepare() -> None:
    from .cli_prepare import datasets_cmd, prepare

    cli.add_command(prepare)
    cli.add_command(datasets_cmd, name="datasets")


_register_prepare()
