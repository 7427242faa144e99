"""`write_report`: the whole static report of a run store, built in a folder beside the target
and swapped in at the end, so a failed write leaves the previous report as it was."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from ...bench.store import notes, results
from ...errors import ConfigError
from .pages import (
    INDEX_PAGE,
    Site,
    write_dataset_page,
    write_index_page,
    write_runs_page,
    write_scene_page,
)
from .runs import collect_runs

MARKER = ".moegs-report"  # marks a folder this writer made, the only kind it replaces
VIEWS = 3  # test views shown per scene: enough to compare methods, small for a whole sweep
THUMB_WIDTH = 320  # pixels; renders wider than this are downscaled


def write_report(runs_dir: Path, out_dir: Path, *, dataset: str | None = None, views: int = VIEWS,
                 width: int = THUMB_WIDTH) -> Path:
    """Write the HTML report of the run store `runs_dir` (only `dataset` if given) into
    `out_dir`: index.html, runs.html, d-<dataset>/index.html and d-<dataset>/scene-<scene>.html
    with their images. Static files only, relative links, nothing fetched from the network.
    `out_dir` must be new, empty or an earlier report. Returns the path of index.html.
    ConfigError for a missing store, a store without completed runs (of `dataset`) or an
    `out_dir` that is something else."""
    runs_dir, out_dir = Path(runs_dir), Path(out_dir)
    if views < 1 or width < 16:
        raise ConfigError(f"report: views must be >= 1 and width >= 16; got views={views}, width={width}")
    if not runs_dir.is_dir():
        raise ConfigError(f"--runs {runs_dir}: no such run store (run `moegs-bench run` first)")
    _check_target(out_dir)
    df, nt = results(runs_dir), notes(runs_dir)
    if dataset is not None:
        df, nt = df[df["dataset"] == dataset], nt[nt["dataset"] == dataset]
    # the runs the tables are made of: `results` leaves out (and warns of) unreadable ones
    runs = collect_runs(runs_dir, dataset, among=set(df["run_dir"]))
    if not runs:
        what = f" of dataset {dataset!r}" if dataset else ""
        raise ConfigError(f"--runs {runs_dir}: no completed runs{what}")
    tmp = out_dir.parent / f".{out_dir.name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        site = Site(tmp, runs_dir, df, nt, runs, views, width)
        for ds in site.datasets():
            write_dataset_page(site, ds)
            for scene in site.scenes(ds):
                write_scene_page(site, ds, scene)
        write_index_page(site)
        write_runs_page(site)  # last: it lists the sets of runs the tables linked to
        (tmp / MARKER).write_text("written by moegs-bench report --html\n")
        _swap(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out_dir / INDEX_PAGE


def _check_target(out_dir: Path) -> None:
    if out_dir.exists() and not out_dir.is_dir():
        raise ConfigError(f"--html {out_dir}: exists and is not a folder")
    if out_dir.is_dir() and any(out_dir.iterdir()) and not (out_dir / MARKER).is_file():
        raise ConfigError(f"--html {out_dir}: folder holds other files (no {MARKER} of an earlier report); "
                          "name a new or empty folder")


def _swap(new: Path, out_dir: Path) -> None:
    """Put the folder `new` at `out_dir`, replacing an earlier report (renames only)."""
    if not out_dir.exists():
        os.replace(new, out_dir)
        return
    old = out_dir.parent / f".{out_dir.name}.old-{os.getpid()}"
    shutil.rmtree(old, ignore_errors=True)
    os.replace(out_dir, old)
    try:
        os.replace(new, out_dir)
    except BaseException:
        os.replace(old, out_dir)
        raise
    shutil.rmtree(old, ignore_errors=True)
