"""The paper table: one of the MoE-GS paper's published tables as printed (moegs_bench/leaderboards/paper)."""

from __future__ import annotations

import pandas as pd

from ...errors import ConfigError
from .. import leaderboard as lb
from .common import AVERAGE, dataset_label, metric_label, run_label
from .registry import register_table


@register_table("paper", "One of the paper's published tables (option paper_table=1..13)")
def paper_table(df: pd.DataFrame, paper_table: int = 1, dataset: str | None = None) -> pd.DataFrame:
    """The paper's Table `paper_table` as printed (moegs_bench/leaderboards/paper); `df` (our results) is not
    used. Rows: method labels ("stg †" where the paper marks the row); columns (scene, metric)
    when the table has several scenes, else metric. attrs["floatfmt"] keeps the printed decimals."""
    try:
        number = int(paper_table)
    except (TypeError, ValueError):
        raise ConfigError(
            f"table paper: paper_table must be a table number; got {paper_table!r}"
        ) from None
    ref = lb.load_paper(table=number)
    if dataset is not None:
        ref = ref[ref["dataset"] == dataset]
        if len(ref) == 0:
            raise ConfigError(f"table paper: Table {number} has no values for dataset {dataset!r}")
    ref = ref.assign(
        label=[
            (run_label(m, v) + (f" {lb.paper_mark(n)}" if lb.paper_mark(n) else ""))
            for m, v, n in zip(ref["method"], ref["variant"], ref["note"], strict=True)
        ],
        scene=[AVERAGE if s == lb.AVERAGE_SCENE else s for s in ref["scene"]],
        mlabel=[metric_label(m) for m in ref["metric"]],
    )
    labels = list(dict.fromkeys(ref["label"]))
    scenes = list(dict.fromkeys(ref["scene"]))
    order = sorted(dict.fromkeys(ref["metric"]), key=lb.PAPER_METRICS.index)
    mlabels = [metric_label(m) for m in order]
    if len(scenes) > 1:
        wide = ref.pivot_table(index="label", columns=["scene", "mlabel"], values="value")
        cols = [(s, m) for s in scenes for m in mlabels if (s, m) in wide.columns]
        table = wide.reindex(index=labels, columns=pd.MultiIndex.from_tuples(cols))
        table.columns.names = ["scene", "metric"]
    else:
        wide = ref.pivot_table(index="label", columns="mlabel", values="value")
        table = wide.reindex(index=labels, columns=mlabels)
        table.columns.name = "metric"
    table.index.name = "method"
    datasets = ", ".join(dataset_label(d) for d in dict.fromkeys(ref["dataset"]))
    table.attrs["title"] = f"Paper Table {number}: {lb.PAPER_TABLES.get(number, '')} ({datasets})"
    table.attrs["floatfmt"] = {
        metric_label(m).lower(): max(lb.printed_decimals(p) for p in grp["printed"])
        for m, grp in ref.groupby("metric", sort=False)
    }
    notes = list(dict.fromkeys(part for n in ref["note"] if n for part in n.split("; ")))
    table.attrs["footnotes"] = [
        f"Published values of the MoE-GS paper, Table {number}, as printed; measured on "
        f"{lb.PAPER_GPU}.",
        *notes,
    ]
    return table
