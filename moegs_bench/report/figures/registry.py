"""The figure registry: `register_figure(name, description)` adds a builder
`(store: StoreView) -> matplotlib Figure`; `build_figure` returns the Figure (tests inspect its
artists), `draw_figure` saves it as PNG and PDF."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from matplotlib.figure import Figure

from ...errors import ConfigError
from .source import FigureDataMissing, StoreView, open_store
from .style import FORMATS, save_figure, styled

Builder = Callable[[StoreView], Figure]


@dataclass(frozen=True)
class FigureSpec:
    """A registered figure: its name, a one-line description of what it shows and needs, its
    builder."""

    name: str
    description: str
    builder: Builder


FIGURES: dict[str, FigureSpec] = {}


def register_figure(name: str, description: str) -> Callable[[Builder], Builder]:
    """Decorator: register `builder(store) -> Figure` as figure `name`."""

    def decorate(builder: Builder) -> Builder:
        if name in FIGURES:
            raise ValueError(f"figure {name!r} is already registered")
        FIGURES[name] = FigureSpec(name, description, builder)
        return builder

    return decorate


def figure_spec(name: str) -> FigureSpec:
    """The registered figure `name`; ConfigError naming the valid ones otherwise."""
    spec = FIGURES.get(name)
    if spec is None:
        raise ConfigError(f"--figure {name}: unknown figure; valid figures: {', '.join(FIGURES)}")
    return spec


def build_figure(name: str, runs_dir: str | Path, *, dataset: str | None = None) -> Figure:
    """Figure `name` drawn from the run store `runs_dir` (rows of `dataset`; needed when the
    store holds several). ConfigError for an unknown figure or a bad store; FigureDataMissing
    when the store lacks the figure's data."""
    spec = figure_spec(name)
    store = open_store(runs_dir, dataset)
    with styled():
        return spec.builder(store)


def draw_figure(name: str, runs_dir: Path, out_dir: Path, *, dataset: str | None = None,
                formats: tuple[str, ...] = ("png", "pdf")) -> list[Path]:
    """Draw figure `name` from the run store and write <out_dir>/<name>-<dataset>.<fmt> for each
    format, atomically; returns the files written. Errors as `build_figure`."""
    spec = figure_spec(name)
    bad = [f for f in formats if f not in FORMATS]
    if bad:
        raise ConfigError(f"figure formats {bad}: expected any of {', '.join(FORMATS)}")
    store = open_store(runs_dir, dataset)
    with styled():
        fig = spec.builder(store)
    return save_figure(fig, Path(out_dir), f"{name}-{store.dataset}", formats)


__all__ = ["FIGURES", "FigureSpec", "FigureDataMissing", "register_figure", "figure_spec",
           "build_figure", "draw_figure"]
