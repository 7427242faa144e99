"""The static HTML report of a run store (`moegs-bench report --html DIR`): an index, a page per
dataset (every registered table, every figure) and per scene (its tables, renders and gate maps
of a few test views), and a runs page; every number links to the run it comes from. Pages are
plain HTML with a small inline style sheet, images are copied small into the folder, links are
relative: the folder opens from disk without a server or network."""

from __future__ import annotations

from .write import MARKER, write_report

__all__ = ["MARKER", "write_report"]
