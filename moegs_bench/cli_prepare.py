"""`moegs-bench prepare ...` and `moegs-bench datasets`: options in, library calls out."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path

import click

from .errors import ConfigError


@contextmanager
def _bars() -> Iterator[Callable[[str, int], Callable[[int], None]]]:
    """A rich progress display; yields (description, total) -> advance(n).

    Refreshed from the advancing threads at most 5 times a second: rich's own refresh thread
    slows GIL-heavy work (CPU torch rendering) several times over.
    """
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                  TimeElapsedColumn(), TimeRemainingColumn(), auto_refresh=False) as bar:
        last = [0.0]

        def factory(description: str, total: int) -> Callable[[int], None]:
            task = bar.add_task(description, total=total)
            done = [0]

            def advance(n: int = 1) -> None:
                bar.advance(task, n)
                done[0] += n
                now = time.monotonic()
                if now - last[0] > 0.2 or done[0] >= total:
                    last[0] = now
                    bar.refresh()

            bar.refresh()
            return advance

        yield factory


def _split_names(values: tuple[str, ...]) -> list[str] | None:
    names = [n.strip() for v in values for n in v.split(",") if n.strip()]
    return names or None


def _raw_options(fn):
    """Options shared by the raw-dataset preparers."""
    opts = [
        click.option("--src", required=True, type=click.Path(path_type=Path),
                     help="Raw dataset folder: one scene, or a folder of scenes."),
        click.option("--out", required=True, type=click.Path(path_type=Path),
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
             colmap_frames, workers, colmap_workers, keep_dropped: bool = False) -> None:
    from .data.colmap_init import ColmapConfig
    from .data.datasets import load_dataset
    from .data.prepare import PrepareOptions, prepare_dataset

    spec = load_dataset(layout)
    if segment is not None and segment < 0:
        raise ConfigError("--segment must be >= 0")
    options = PrepareOptions(
        resolution=resolution or spec.resolution,
        segment=spec.segment if segment is None else segment,
        colmap=not no_colmap, colmap_frames=colmap_frames, workers=workers,
        colmap_config=replace(ColmapConfig(), workers=colmap_workers),
    )
    with _bars() as bars:
        prepared = prepare_dataset(layout, src, out, spec, _split_names(scenes), frames, options,
                                   keep_dropped=keep_dropped, progress=bars)
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
    """Turn raw datasets (N3V, Technicolor, HyperNeRF) or synthetic scenes into prepared scenes."""


@prepare.command("n3v")
@_raw_options
@click.option("--keep-dropped-cameras", is_flag=True, help="Keep cameras the dataset file drops (coffee_martini cam13).")
def prepare_n3v(src, out, scenes, frames, segment, resolution, no_colmap, colmap_frames, workers,
                colmap_workers, keep_dropped_cameras) -> None:
    """N3V: camXX.mp4 + poses_bounds.npy -> prepared scenes (default half size, frames 0:300, test cam00)."""
    _run_raw("n3v", src, out, scenes, frames, segment, resolution, no_colmap, colmap_frames, workers,
             colmap_workers, keep_dropped_cameras)


@prepare.command("technicolor")
@_raw_options
def prepare_technicolor(src, out, scenes, frames, segment, resolution, no_colmap, colmap_frames, workers,
                        colmap_workers) -> None:
    """Technicolor: <Scene>_undist_<frame>_<cam>.png + cameras_parameters.txt -> prepared scenes
    (full size, the published 50-frame range per scene, test cam10)."""
    _run_raw("technicolor", src, out, scenes, frames, segment, resolution, no_colmap, colmap_frames,
             workers, colmap_workers)


@prepare.command("hypernerf")
@_raw_options
def prepare_hypernerf(src, out, scenes, frames, segment, resolution, no_colmap, colmap_frames, workers,
                      colmap_workers) -> None:
    """HyperNeRF: dataset/metadata/scene/camera json + rgb/<k>x -> prepared scenes (rgb/2x,
    frames = warp ids, split from val_ids or every 4th image)."""
    _run_raw("hypernerf", src, out, scenes, frames, segment, resolution, no_colmap, colmap_frames,
             workers, colmap_workers)


@prepare.command("synthetic")
@click.option("--scene", default="mixed", show_default=True, help="Synthetic scene name.")
@click.option("--rig", default="n3v", show_default=True, help="Camera rig: n3v, technicolor or mono.")
@click.option("--size", default="tiny", show_default=True, help="tiny, small or full.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--out", required=True, type=click.Path(path_type=Path), help="Prepared scene folder.")
@click.option("--device", default="auto", show_default=True, help="auto, cpu or cuda (rendering).")
@click.option("--layout", type=click.Choice(["n3v", "technicolor", "hypernerf"]), default=None,
              help="Also write the scene in this raw dataset layout.")
@click.option("--raw-out", type=click.Path(path_type=Path), default=None, help="Raw scene folder for --layout.")
@click.option("--raw-first-frame", type=int, default=0, show_default=True,
              help="File frame number of frame 0 (technicolor, hypernerf warp ids).")
def prepare_synthetic(scene, rig, size, seed, out, device, layout, raw_out, raw_first_frame) -> None:
    """Generate a synthetic scene with ground truth; optionally also as a raw-dataset replica."""
    if (layout is None) != (raw_out is None):
        raise ConfigError("--layout and --raw-out go together")
    from .data.raw_writers import write_raw_layout
    from .data.synthetic import generate_synthetic
    from .device import resolve_device

    dev = resolve_device(device)
    with _bars() as bars:
        state: dict[str, Callable[[int], None]] = {}
        done = [0]

        def progress(step: int, total: int, info=None) -> None:
            if "bar" not in state:
                state["bar"] = bars(f"render {scene}", total)
            state["bar"](step - done[0])
            done[0] = step

        prepared = generate_synthetic(out, scene=scene, rig=rig, size=size, seed=seed, device=dev, progress=progress)
    _echo_scene(prepared)
    if layout is not None:
        path = write_raw_layout(prepared, layout, raw_out, first_frame=raw_first_frame)
        click.echo(f"{path}: {layout} raw layout")


@click.command()
@click.argument("name", required=False)
def datasets_cmd(name: str | None) -> None:
    """List the datasets (datasets/*.toml), or the scenes of one."""
    from rich.console import Console
    from rich.table import Table

    from .data.datasets import list_datasets, load_dataset

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
