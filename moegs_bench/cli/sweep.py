"""`moegs-bench sweep SPEC`: a spec's runs on local worker processes or Ray, then its tables
(docs/sweeps.md)."""

from __future__ import annotations

from pathlib import Path

import click


def _gpu_count() -> int:
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


@click.command()
@click.argument("spec_path", metavar="SPEC", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--backend", default="local", show_default=True, type=click.Choice(["local", "ray"]),
              help="local: worker processes on this machine; ray: one Ray task per run.")
@click.option("--address", default=None,
              help="With --backend ray: join this Ray cluster (auto, or ray://HOST:10001); default: a local Ray "
                   "instance.")
@click.option("--gpus", type=click.IntRange(min=0), default=None,
              help="GPUs to use on this machine (default: all it has).")
@click.option("--workers", type=click.IntRange(min=1), default=None,
              help="Tasks at once (default: one per GPU, or per GPU share with a fractional gpus_per_task; "
                   "1 without GPUs).")
@click.option("--runs", "runs_dir", default=None, type=click.Path(file_okay=False, path_type=Path),
              help="Run store folder (default: the spec's runs_dir). Every worker must see it.")
@click.option("--dry-run", is_flag=True, help="Print the plan and what is stored already; run nothing.")
def sweep(spec_path, backend, address, gpus, workers, runs_dir, dry_run):
    """Expand SPEC (experiments/*.toml) into runs with dependencies (experts before the
    routers over them, pseudo-labels before distillation), skip the completed ones, resume
    unfinished ones from their checkpoints, run the rest with progress, and print the tables
    the spec names."""
    import dataclasses

    from ..errors import ConfigError
    from ..progress import rich_progress
    from ..report.tables import format_table
    from ..sweep.backends import LocalBackend, RayBackend, gpu_slots
    from ..sweep.driver import plan_lines, plan_sweep, run_sweep, sweep_tables
    from ..sweep.spec import load_spec

    spec = load_spec(spec_path)
    if runs_dir is not None:
        spec = dataclasses.replace(spec, runs_dir=runs_dir)
    if address is not None and backend != "ray":
        raise ConfigError("--address: joins a Ray cluster (--backend ray)")
    plan = plan_sweep(spec)
    click.echo("\n".join(plan_lines(plan)))
    if dry_run:
        return
    have = _gpu_count() if backend == "local" or address is None else 0
    if gpus is not None and gpus > have and (backend == "local" or address is None):
        raise ConfigError(f"--gpus {gpus}: this machine has {have} GPU(s)")
    gpus = have if gpus is None else gpus
    if backend == "local":
        per = spec.gpus_per_task
        count = workers or (max(1, int(gpus // per) if per >= 1 else gpus * int(1 / per)) if gpus else 1)
        runner = LocalBackend(gpu_slots(count, gpus, per))
    else:
        runner = RayBackend(address, gpus=None if address else gpus, cpus=workers, gpus_per_task=spec.gpus_per_task)
    with rich_progress() as bar:
        outcome = run_sweep(plan, runner, progress=bar(f"sweep {spec.name}"), log=click.echo)
    for name, dataset, table in sweep_tables(spec):
        click.echo(f"\n{name} ({dataset})")
        click.echo(table if isinstance(table, str) else format_table(table, "markdown"))
    counts = {s: len(outcome.ids(s)) for s in ("done", "cached", "failed", "skipped")}
    click.echo(f"\nsweep {spec.name}: {', '.join(f'{n} {s}' for s, n in counts.items())} in "
               f"{outcome.seconds:.1f} s; results: {spec.runs_dir / 'results.csv'}")
    if not outcome.ok:
        raise click.ClickException(f"{counts['failed']} task(s) failed, {counts['skipped']} skipped (see above)")


__all__ = ["sweep"]
