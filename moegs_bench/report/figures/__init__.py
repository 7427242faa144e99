"""Publication figures drawn from the run store (docs/results.md, "Figures").

A figure is a builder `(store: StoreView) -> matplotlib Figure` registered by name with
`@register_figure`; `build_figure(name, runs_dir)` returns the Figure, `draw_figure(name,
runs_dir, out_dir)` writes it as PNG and PDF. Builders read only what the store holds (tidy
rows, per_image.csv, saved renders, gate and label maps, analyses) and raise
`FigureDataMissing` naming the run that makes what is missing. Every module of this package
is imported below, so a new figure is one new module here that registers its builder.
"""

from __future__ import annotations

import importlib
import pkgutil

# isort: off
# imported in this order (not sorted) so that FIGURES, and `moegs-bench report --list`, lists
# the figures in the order of the paper's: gate maps, where experts win, geometry, cost
from .registry import (FIGURES, FigureDataMissing, FigureSpec, build_figure, draw_figure, figure_spec,
                       register_figure)
from .style import method_color
from . import images, curves, bars, trajectories  # noqa: F401
# isort: on

_ORDER = ("gates", "per-frame", "regions", "trajectories", "mdc", "efficiency", "regimes")


def _load_all() -> None:
    """Import every module of this package, so that each registers its figures."""
    for info in pkgutil.iter_modules(__path__):
        if not info.name.startswith("_"):
            importlib.import_module(f"{__name__}.{info.name}")


_load_all()
# the listing order: the issue's, then any figure registered later
for _name in [n for n in _ORDER if n in FIGURES] + [n for n in FIGURES if n not in _ORDER]:
    FIGURES[_name] = FIGURES.pop(_name)

__all__ = ["FIGURES", "FigureDataMissing", "FigureSpec", "build_figure", "draw_figure", "figure_spec",
           "method_color", "register_figure"]
