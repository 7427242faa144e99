"""A built report table as an HTML `<table>`: the same cells as `format_table` (decimals,
"mean ± std", the dash), header levels as spanning header rows, every number a link to the run
(or set of runs) it comes from, published (paper) rows marked."""

from __future__ import annotations

import re
from collections.abc import Sequence

import pandas as pd

from ..format import DEFAULT_FLOATFMT, _cell, _columns, _header_levels, _index_parts, _level, _spans
from .markup import bullet_list, esc, offline, tag
from .runs import RunLinks, RunRecord

_DIGIT = re.compile(r"\d")


def html_table(table: pd.DataFrame, name: str, links: RunLinks, scope: Sequence[RunRecord],
               published: bool = False, up: str = "") -> str:
    """`<table data-table=name>` of a built table plus its footnotes (`<ul class="notes">`).
    Each number links to its runs among `scope` (`RunLinks.resolve`); with `published` (the
    paper's own tables) or in a paper row no number links: those values have no run here. `up`
    leads from the page to the report root ("" or "../")."""
    cols = _columns(table, {**DEFAULT_FLOATFMT, **table.attrs.get("floatfmt", {})})
    index_names, index_rows = _index_parts(table)
    col_names = list(table.columns.names)
    depth = _header_levels(cols)
    head = []
    for lv in range(depth):
        cells = [tag("th", esc(n), rowspan=depth) for n in index_names] if lv == 0 else []
        cells += [tag("th", esc(text), colspan=w if w > 1 else None) for text, w in _spans(cols, lv, depth)]
        head.append(tag("tr", "".join(cells)))
    body = []
    for i, idx in enumerate(index_rows):
        row_labels = list(zip(index_names, idx, strict=True))
        paper_row = published or links.resolve(row_labels, "", scope) is None
        cells = [tag("th", esc(v), scope="row") for v in idx]
        for col in cols:
            text = _cell(col, i, "markdown")
            labels = row_labels + _column_labels(col, col_names, depth)
            cells.append(_td(text, col.decimals is not None, labels, links, scope, paper_row, up))
        body.append(tag("tr", "".join(cells), cls="paper" if paper_row else None))
    grid = tag("table", tag("thead", "".join(head)) + tag("tbody", "".join(body)), data_table=name)
    notes = bullet_list((esc(offline(f)) for f in table.attrs.get("footnotes", [])), cls="notes")
    return tag("div", grid, cls="scroll") + notes


def _column_labels(col, col_names: list, depth: int) -> list[tuple[str, str]]:
    """(level name, header text) of a column; the "stat" level is folded away by `_columns`."""
    names = [str(n) if n is not None else "" for n in col_names if n != "stat"]
    names = [""] * (len(col.header) - len(names)) + names
    return [(names[k], _level(col, depth - len(col.header) + k, depth)) for k in range(len(col.header))]


def _td(text: str, numeric: bool, labels, links: RunLinks, scope, paper_row: bool, up: str) -> str:
    """One body cell: numbers (and text cells holding one, e.g. "stg 24.33") of our runs link
    to them; published values, missing values and plain text do not."""
    cls = "num" if numeric else None
    if paper_row or not _DIGIT.search(text):
        return tag("td", esc(text), cls=cls)
    runs = links.resolve(labels, text, scope)
    if not runs:
        return tag("td", esc(text), cls=cls)
    href, title = links.target(runs)
    return tag("td", tag("a", esc(text), href=up + href, title=title), cls=cls)
