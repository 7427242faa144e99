"""`moegs-bench export`: a stored run's Gaussians at a frame (or every frame) as 3DGS PLY files."""

from __future__ import annotations

from pathlib import Path

import click


@click.command()
@click.argument("run_spec", metavar="RUN")
@click.option("--frame", type=int, default=None, help="Frame index T to export (0-based).")
@click.option("--frames", default=None, metavar="all", help="`all`: every frame, frame_0000.ply ... in the --ply folder.")
@click.option("--ply", type=click.Path(path_type=Path), default=None,
              help="A .ply file for --frame, else the folder of frame_<T>.ply files (default: RUN/ply/).")
@click.option("--runs", "runs_dir", default="runs", show_default=True, type=click.Path(path_type=Path),
              help="Run store that RUN is named in (when RUN is not a run folder).")
@click.option("--seed", default=0, show_default=True, type=int, help="Seed of RUN when it names no seed<k>.")
@click.option("--scene", default=None, type=click.Path(path_type=Path),
              help="Prepared scene folder the run was trained on (default: found under RUNS/scenes).")
@click.option("--sh-degree", type=click.IntRange(0, 3), default=None,
              help="SH bands to write (default: the model's; 3 pads with zeros for viewers that expect it).")
@click.option("--device", default="auto", show_default=True, help="auto, cpu or cuda.")
def export(run_spec, frame, frames, ply, runs_dir, seed, scene, sh_degree, device):
    """Write the Gaussians of RUN (an expert's run or the fused model, moe-fused) at frame T in
    the 3DGS PLY layout that 3DGS viewers open. RUN is a run folder or
    <dataset>/<scene>/<method>/<variant>[/seed<k>] under --runs, e.g. synthetic/mixed/stg/default."""
    from ..bench.export import export_run
    from ..device import resolve_device
    from ..progress import rich_progress

    with rich_progress() as bar:
        paths = export_run(run_spec, runs_dir, frame=frame, frames=frames, ply=ply, scene=scene, seed=seed,
                           device=resolve_device(device), sh_degree=sh_degree, progress=bar("export"))
    where = paths[0] if len(paths) == 1 else f"{len(paths)} files in {paths[0].parent}"
    click.echo(f"wrote {where}")


__all__ = ["export"]
