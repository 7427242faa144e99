"""Rendering a built table as text: markdown, CSV or LaTeX (`format_table`).

A table is a DataFrame whose columns may carry a level named "stat" (`STAT`) holding "mean" and
"std"; those are shown as "mean ± std" (std only where it is defined, i.e. several seeds).
Footnotes come from `table.attrs["footnotes"]`, fixed decimals from `table.attrs["floatfmt"]`.
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from ..errors import ConfigError

DEFAULT_FLOATFMT = {"psnr": 2, "ssim": 3, "lpips": 3}  # the paper's precision (Tables 8, 9)
DASH = {"markdown": "—", "latex": "--", "csv": "n/a"}
STAT = "stat"


@dataclass
class _Column:
    """One output column: header levels, means, stds (None without a "stat" level), decimals
    (None for text)."""

    header: tuple[str, ...]
    mean: list[Any]
    std: list[Any] | None
    decimals: int | None


def _decimals(
    header: tuple[str, ...], values: list[Any], floatfmt: Mapping[str, int]
) -> int | None:
    """Decimals for a column: the first header level naming a metric in `floatfmt` (also
    "<metric>_<suffix>"), else 0 for whole numbers and 3 otherwise; None for text columns."""
    for level in header:
        key = str(level).lower()
        for metric, dec in floatfmt.items():
            if key == metric or key.startswith(f"{metric}_") or key.startswith(f"{metric} "):
                return dec
    nums = [v for v in values if isinstance(v, (int, float, np.number)) and not isinstance(v, bool)]
    if len(nums) < sum(not _missing(v) for v in values):
        return None
    finite = [float(v) for v in nums if math.isfinite(float(v))]
    return 0 if finite and all(v.is_integer() for v in finite) else 3


def _missing(value: Any) -> bool:
    return value is None or (isinstance(value, (float, np.floating)) and math.isnan(value))


def _columns(table: pd.DataFrame, floatfmt: Mapping[str, int]) -> list[_Column]:
    """Columns of `table`, folding a "stat" level into (mean, std) pairs."""
    cols = table.columns
    names = list(cols.names) if isinstance(cols, pd.MultiIndex) else [cols.name]
    keys = [c if isinstance(c, tuple) else (c,) for c in cols]
    if STAT not in names:
        out = []
        for key, col in zip(keys, cols, strict=True):
            vals = table[col].tolist()
            out.append(
                _Column(tuple(str(k) for k in key), vals, None, _decimals(key, vals, floatfmt))
            )
        return out
    si = names.index(STAT)
    out = []
    for key in dict.fromkeys(k[:si] + k[si + 1 :] for k in keys):
        full = {k[si]: k for k in keys if k[:si] + k[si + 1 :] == key}
        mean = table[full["mean"]].tolist() if "mean" in full else [math.nan] * len(table)
        std = table[full["std"]].tolist() if "std" in full else None
        out.append(_Column(tuple(str(k) for k in key), mean, std, _decimals(key, mean, floatfmt)))
    return out


def _num(value: Any, decimals: int | None) -> str:
    return str(value) if decimals is None else f"{float(value):.{decimals}f}"


def _cell(col: _Column, i: int, fmt: str) -> str:
    """One rendered cell: "mean ± std" (std shown where finite), the dash where missing."""
    mean = col.mean[i]
    if _missing(mean):
        return DASH[fmt]
    text = _num(mean, col.decimals)
    if col.decimals is None:
        return latex_escape(text) if fmt == "latex" else text
    std = col.std[i] if col.std is not None else math.nan
    if not _missing(std) and fmt != "csv":
        pm = " $\\pm$ " if fmt == "latex" else " ± "
        text += pm + _num(std, col.decimals)
    return text


def _index_parts(table: pd.DataFrame) -> tuple[list[str], list[tuple[str, ...]]]:
    names = [str(n) if n is not None else "" for n in table.index.names]
    rows = [tuple(str(x) for x in (v if isinstance(v, tuple) else (v,))) for v in table.index]
    return names, rows


def format_table(
    table: pd.DataFrame,
    fmt: str = "markdown",
    floatfmt: Mapping[str, int] | None = None,
    title: str | None = None,
) -> str:
    """Render a table: "markdown" (paper-style two-row headers), "csv" (mean and std in separate
    columns, footnotes left out) or "latex" (booktabs). `floatfmt` maps metric -> decimals
    (default PSNR 2, SSIM/LPIPS 3). Footnotes come from `table.attrs["footnotes"]`."""
    if fmt not in DASH:
        raise ConfigError(f"unknown table format {fmt!r}; valid formats: {', '.join(DASH)}")
    # a builder may fix decimals in attrs["floatfmt"] (e.g. the paper's printed precision)
    cols = _columns(
        table, {**DEFAULT_FLOATFMT, **table.attrs.get("floatfmt", {}), **(floatfmt or {})}
    )
    index_names, index_rows = _index_parts(table)
    footnotes = [str(f) for f in table.attrs.get("footnotes", [])]
    render = {"markdown": _markdown, "csv": _csv, "latex": _latex}[fmt]
    return render(cols, index_names, index_rows, footnotes, title)


def _header_levels(cols: list[_Column]) -> int:
    return max((len(c.header) for c in cols), default=1)


def _level(col: _Column, level: int, depth: int) -> str:
    """Header text of `col` at `level` (short headers are padded at the top)."""
    pad = ("",) * (depth - len(col.header)) + col.header
    return pad[level]


def _spans(cols: list[_Column], level: int, depth: int) -> list[tuple[str, int]]:
    """Runs of equal header text at `level` (within equal parents): (text, width)."""
    spans: list[tuple[str, int]] = []
    prev = None
    for col in cols:
        key = tuple(_level(col, lv, depth) for lv in range(level + 1))
        if spans and key == prev:
            spans[-1] = (spans[-1][0], spans[-1][1] + 1)
        else:
            spans.append((key[-1], 1))
        prev = key
    return spans


def _markdown(cols, index_names, index_rows, footnotes, title) -> str:
    depth = _header_levels(cols)
    n_idx = len(index_names)
    header_rows = []
    for lv in range(depth):
        cells = []
        for text, width in _spans(cols, lv, depth):
            cells += [text] + [""] * (width - 1)
        first = index_names if lv == 0 else [""] * n_idx
        header_rows.append(first + cells)
    body = [list(idx) + [_cell(c, i, "markdown") for c in cols] for i, idx in enumerate(index_rows)]
    grid = [[cell.replace("|", "\\|") for cell in row] for row in header_rows + body]
    widths = [max(3, *(len(row[j]) for row in grid)) for j in range(len(grid[0]))]

    def line(row: list[str]) -> str:
        cells = [
            c.ljust(w) if j < n_idx else c.rjust(w)
            for j, (c, w) in enumerate(zip(row, widths, strict=True))
        ]
        return "| " + " | ".join(cells) + " |"

    sep = ["-" * w if j < n_idx else "-" * (w - 1) + ":" for j, w in enumerate(widths)]
    lines = [f"**{title}**", ""] if title else []
    lines += [line(grid[0]), "| " + " | ".join(sep) + " |"]
    lines += [line(row) for row in grid[1:]]
    if footnotes:
        lines += [""] + [f"- {f}" for f in footnotes]
    return "\n".join(lines) + "\n"


def _csv(cols, index_names, index_rows, footnotes, title) -> str:
    header = list(index_names)
    for c in cols:
        name = " ".join(h for h in c.header if h)
        header.append(name)
        if c.std is not None and any(not _missing(s) for s in c.std):
            header.append(f"{name} std")
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(header)
    for i, idx in enumerate(index_rows):
        row = list(idx)
        for c in cols:
            row.append(_cell(c, i, "csv"))
            if c.std is not None and any(not _missing(s) for s in c.std):
                row.append(DASH["csv"] if _missing(c.std[i]) else _num(c.std[i], c.decimals))
        writer.writerow(row)
    return buf.getvalue()


_LATEX_ESCAPES = {
    "\\": r"\textbackslash{}",
    "&": r"\&",
    "%": r"\%",
    "$": r"\$",
    "#": r"\#",
    "_": r"\_",
    "{": r"\{",
    "}": r"\}",
    "~": r"\textasciitilde{}",
    "^": r"\textasciicircum{}",
    "±": r"$\pm$",
    "–": "--",
    "—": "---",
}


def latex_escape(text: str) -> str:
    """`text` with LaTeX's special characters (and ±, en and em dashes) escaped."""
    return "".join(_LATEX_ESCAPES.get(ch, ch) for ch in text)


def _latex(cols, index_names, index_rows, footnotes, title) -> str:
    depth = _header_levels(cols)
    n_idx = len(index_names)
    lines = ["% needs \\usepackage{booktabs}", "\\begin{table}[t]", "\\centering"]
    if title:
        lines.append(f"\\caption{{{latex_escape(title)}}}")
    lines += [f"\\begin{{tabular}}{{{'l' * n_idx}{'r' * len(cols)}}}", "\\toprule"]
    for lv in range(depth):
        first = [latex_escape(n) for n in index_names] if lv == depth - 1 else [""] * n_idx
        cells, rules, start = [], [], n_idx + 1
        for text, width in _spans(cols, lv, depth):
            if width > 1:
                cells.append(f"\\multicolumn{{{width}}}{{c}}{{{latex_escape(text)}}}")
            else:
                cells.append(latex_escape(text))
            if lv < depth - 1 and text:
                rules.append(f"\\cmidrule(lr){{{start}-{start + width - 1}}}")
            start += width
        lines.append(" & ".join(first + cells) + " \\\\")
        if rules:
            lines.append(" ".join(rules))
    lines.append("\\midrule")
    for i, idx in enumerate(index_rows):
        cells = [latex_escape(x) for x in idx] + [_cell(c, i, "latex") for c in cols]
        lines.append(" & ".join(cells) + " \\\\")
    lines += ["\\bottomrule", "\\end{tabular}"]
    if footnotes:
        lines.append(
            "\\par\\smallskip{\\footnotesize "
            + " \\\\ ".join(latex_escape(f) for f in footnotes)
            + "}"
        )
    lines.append("\\end{table}")
    return "\n".join(lines) + "\n"
