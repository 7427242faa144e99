"""Tables are views of the tidy result rows (docs/results.md).

A table is a builder `(df, **opts) -> DataFrame` registered by name with `@register_table`;
`build_table(name, df, **opts)` runs one, `format_table(table, fmt)` (report/format.py) renders
it as markdown, CSV or LaTeX. Builders may return columns with a level named "stat" holding
"mean" and "std", shown as "mean ± std". Builders put footnotes (e.g. why LPIPS is missing) in
`table.attrs["footnotes"]`. Every module of this package is imported below, so a new table is
one new module here that registers its builder.
"""

from __future__ import annotations

import importlib
import pkgutil

# isort: off
# imported in this order (not sorted) so that TABLES, and `moegs-bench report --list`, lists
# main, router-ablation, paper, overview first; then every other module of the package
from ..format import DASH, DEFAULT_FLOATFMT, STAT, format_table, latex_escape
from .registry import TABLES, TIDY_COLUMNS, Builder, TableSpec, build_table, register_table, table_options
from .common import AVERAGE, METRIC_LABELS, dataset_label, metric_label, run_label
from .main import PAPER_ROW, main_table
from .router_ablation import baseline_titles, router_ablation_table, router_titles
from .paper import paper_table
from .overview import overview_table
# isort: on


def _load_all() -> None:
    """Import every module of this package, so that each registers its tables."""
    for info in pkgutil.iter_modules(__path__):
        if not info.name.startswith("_"):
            importlib.import_module(f"{__name__}.{info.name}")


_load_all()

__all__ = [
    "AVERAGE",
    "DASH",
    "DEFAULT_FLOATFMT",
    "METRIC_LABELS",
    "PAPER_ROW",
    "STAT",
    "TABLES",
    "TIDY_COLUMNS",
    "Builder",
    "TableSpec",
    "baseline_titles",
    "build_table",
    "dataset_label",
    "format_table",
    "latex_escape",
    "main_table",
    "metric_label",
    "overview_table",
    "paper_table",
    "register_table",
    "router_ablation_table",
    "router_titles",
    "run_label",
    "table_options",
]
