"""The overview table: every metric of every method and variant, averaged over scenes and
seeds."""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd

from .common import labelled, metric_label, ordered, select_dataset
from .registry import register_table


@register_table(
    "overview", "Every metric of every method and variant, averaged over scenes and seeds"
)
def overview_table(
    df: pd.DataFrame, dataset: str | None = None, metrics: Sequence[str] | None = None
) -> pd.DataFrame:
    """Rows: method labels; columns: metrics (sorted, or `metrics` in order). Each value is the
    mean over scenes of the per-scene mean over seeds."""
    rows = labelled(select_dataset(df, dataset, "overview"))
    wanted = None if metrics is None else [m.lower() for m in metrics]
    metric_list = ordered(sorted(rows["metric"].unique()), wanted, "metrics", "overview")
    rows = rows[rows["metric"].isin(metric_list)]
    per_scene = rows.groupby(["label", "scene", "metric"], sort=False)["value"].mean()
    table = per_scene.groupby(level=["label", "metric"], sort=False).mean().unstack("metric")
    labels = list(dict.fromkeys(rows["label"]))
    table = table.reindex(index=labels, columns=metric_list)
    table.index.name = "method"
    table.columns = pd.Index([metric_label(m) for m in metric_list], name="metric")
    table.attrs["footnotes"] = ["Mean over scenes of the per-scene mean over seeds."]
    return table

