"""`moegs-bench prepare ...` and `moegs-bench datasets`: options in, library calls out."""

from __future__ import annotations

import sys
from dataclasses import replace
from pathlib import Path

import click

from ..data.raw_writers import LAYOUTS as RAW_LAYOUTS
from ..errors import ConfigError
from ..progress import rich_progress


def _split_names(values: tuple[str, ...]) -> list[str] | None:
    names = [n.strip() for v in values for n in v.split(",") if n.strip()]
    return names or None


def _raw_options(fn):
    """Options shared by the raw-dataset preparers."""
    opts = [
        click.option("--src", required=True, type=click.Path(path_type=Path),
                     help="Raw dataset folder: one scene, or a folder of scenes."),
        click.option("--out", required=True, type=click.Path(file_okay=False, path_type=Path),
                     help="Output folder; each scene goes to OUT/<scene>[/seg<kk>]."),
        click.option("--scenes", multiple=True, help="Scenes to prepare (repeat or comma-separate; default: all found)."),
        click.option("--frames", default=None, help="Source frames START:END (END exclusive; default: the dataset's range)."),
        click.option("--segment", type=int, default=None,
                     help="Frames per prepared scene (STG: 50; the paper's STG-dagger: 150; 0: one scene)."),
        click.option("--resolution", default=None, help="full, WxH or a scale like 0.5 (default: the dataset's)."),
        click.option("--no-colmap", is_flag=True, help="Skip the pycolmap point clouds."),
        click.option("--colmap-frames", default="all", show_default=True,
                     help="Frames to triangulate: all, START:END[:STEP] or a,b,c (source frame numbers)."),
        click.option("--workers", type=int, default=0, help="Image threads (0: one per CPU core)."),
        click.option("--colmap-workers", type=int, default=0, help="COLMAP worker processes (0: one per CPU core)."),
    ]
    for opt in reversed(opts):
        fn = opt(fn)
    return fn


def _run_raw(layout: str, src: Path, out: Path, scenes, frames, segment, resolution, no_colmap,
             colmap_frames, workers, colmap_workers, **flags: bool) -> None:
    from ..config import validate
    from ..data.colmap_init import ColmapConfig
    from ..data.datasets import load_dataset
    from ..data.prepare import PrepareOptions, prepare_dataset

    spec = load_dataset(layout)
    if segment is not None and segment < 0:
        raise ConfigError("--segment must be >= 0")
    options = PrepareOptions(
        resolution=resolution or spec.resolution,
        segment=spec.segment if segment is None else segment,
        colmap=not no_colmap, colmap_frames=colmap_frames, workers=workers,
        colmap_config=replace(ColmapConfig(), workers=colmap_workers),
    )
    validate(options, "prepare")  # every setting within its range before any file is read
    with rich_progress() as bars:
        prepared = prepare_dataset(layout, src, out, spec, _split_names(scenes), frames, options,
                                   flags=flags, progress=bars, log=click.echo)
    for scene in prepared:
        _echo_scene(scene)


def _echo_scene(scene) -> None:
    lo, hi = scene.meta.get("frame_range", [scene.frame_ids[0], scene.frame_ids[-1] + 1])
    points = ""
    if scene.points.get("merged"):
        points = f", {len(scene.load_points('merged')['xyz'])} points"
    size = {(c.width, c.height) for c in scene.cameras}
    sizes = ", ".join(f"{w}x{h}" for w, h in sorted(size))
    click.echo(f"{scene.root}: frames {lo}:{hi} ({scene.num_frames}), {len(scene.train_cameras)} train / "
               f"test {', '.join(scene.test_cameras) or '-'} cameras, {sizes}{points}")


@click.group()
def prepare() -> None:
    """Turn raw datasets (N3V, Technicolor, HyperNeRF, ...) or synthetic scenes into prepared scenes."""


def _format_command(fmt) -> click.Command:
    """`prepare <format>`: the shared raw options plus the format's own flags."""

    def command(**kw):
        _run_raw(fmt.name, **kw)

    command.__doc__ = fmt.summary
    command = _raw_options(command)
    for flag, text in fmt.flags.items():
        command = click.option(f"--{flag.replace('_', '-')}", flag, is_flag=True, help=text)(command)
    return click.command(fmt.name)(command)


def _register_formats() -> None:
    """One `prepare` subcommand per registered raw format that has a dataset file."""
    from ..data.datasets import datasets_dir
    from ..data.formats import FORMATS, format_names

    for name in format_names():
        if (datasets_dir() / f"{name}.toml").is_file():
            prepare.add_command(_format_command(FORMATS[name]))


_register_formats()


@prepare.command("synthetic")
@click.option("--scene", default="mixed", show_default=True, help="Synthetic scene name.")
@click.option("--rig", default="n3v", show_default=True, help="Camera rig: n3v, technicolor or mono.")
@click.option("--size", default="tiny", show_default=True, help="tiny, small or full.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--out", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Prepared scene folder.")
@click.option("--device", default="auto", show_default=True, help="auto, cpu or cuda (rendering).")
@click.option("--layout", type=click.Choice(RAW_LAYOUTS), default=None,
              help="Also write the scene in this raw dataset layout.")
@click.option("--raw-out", type=click.Path(path_type=Path), default=None, help="Raw scene folder for --layout.")
@click.option("--raw-first-frame", type=int, default=0, show_default=True,
              help="File frame number of frame 0 (technicolor, hypernerf warp ids).")
def prepare_synthetic(scene, rig, size, seed, out, device, layout, raw_out, raw_first_frame) -> None:
    """Generate a synthetic scene with ground truth; optionally also as a raw-dataset replica."""
    if (layout is None) != (raw_out is None):
        raise ConfigError("--layout and --raw-out go together")
    from ..data.raw_writers import write_raw_layout
    from ..data.synthetic import generate_synthetic
    from ..device import resolve_device

    dev = resolve_device(device)
    with rich_progress() as bars:
        prepared = generate_synthetic(out, scene=scene, rig=rig, size=size, seed=seed, device=dev,
                                      progress=bars(f"render {scene}"))
    _echo_scene(prepared)
    if layout is not None:
        path = write_raw_layout(prepared, layout, raw_out, first_frame=raw_first_frame)
        click.echo(f"{path}: {layout} raw layout")


@click.command()
@click.argument("name", required=False)
def datasets_cmd(name: str | None) -> None:
    """List the datasets (moegs_bench/datasets/*.toml), or the scenes of one."""
    from rich.console import Console
    from rich.table import Table

    from ..data.datasets import list_datasets, load_dataset

    console = Console(width=None if sys.stdout.isatty() else 160)  # no wrapping when piped
    if name is None:
        table = Table("dataset", "layout", "scenes", "test cameras", "resolution", "experts (paper)")
        for d in list_datasets():
            table.add_row(d.name, d.layout, ", ".join(d.scenes), ", ".join(d.test_cameras) or "(per scene)",
                          d.resolution, ", ".join(d.experts))
        console.print(table)
        return
    d = load_dataset(name)
    console.print(f"[bold]{d.title}[/bold] ({d.path}): {d.description}")
    sets = "; ".join(f"N={n}: {', '.join(e)}" for n, e in sorted(d.expert_sets.items()))
    console.print(f"expert sets: {sets or '-'}; presets: "
                  + ", ".join(f"{k}={v}" for k, v in d.presets.items()))
    table = Table("scene", "frames", "test cameras", "notes")
    for s in d.scenes.values():
        frames = f"{s.frames[0]}:{s.frames[1]}" if s.frames else "all"
        tests = ", ".join(s.test_cameras if s.test_cameras is not None else d.test_cameras) or "(from data)"
        notes = []
        if s.drop_cameras:
            notes.append("drops " + ", ".join(s.drop_cameras))
        if s.repairs:
            notes.append(f"{len(s.repairs)} repaired image(s)")
        if s.aliases:
            notes.append("folders: " + ", ".join(s.aliases))
        if s.description:
            notes.append(s.description)
        table.add_row(s.name, frames, tests, "; ".join(notes))
    console.print(table)
