"""The trajectories table: the motion statistics of each method's Gaussians (eval/trajectories.py,
docs/metrics.md "Motion trajectories"), overall and per motion regime."""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd

from ...data.synthetic.motion import REGIMES
from ...errors import ConfigError
from .common import labelled, ordered, select_dataset, select_labels
from .registry import register_table

ALL = "all"  # the regime label of the statistics over every tracked Gaussian
# statistic -> its footnote; the order is the column order
STAT_NOTES: dict[str, str] = {
    "length": "length: polyline length of a track (scene units)",
    "speed": ("speed: length / duration (scene units per unit time; time is the clip's "
              "normalised time, 0 to 1)"),
    "curvature": ("curvature: mean |v × a| / |v|³ over the inner samples, samples slower than "
                  "min_speed left out (1 / scene units)"),
    "jerk": ("jerk: mean |third derivative| (scene units per unit time³; depends on the time "
             "sampling: compare at equal frame counts)"),
    "coherence": ("coherence: mean cosine between a moving Gaussian's velocities and its k "
                  "nearest moving neighbours' (1 = moving alike)"),
    "still": "still: fraction of tracked Gaussians slower than min_speed (left out of coherence)",
    "error": ("error: mean distance to the true motion of the object the Gaussian sits in "
              "(scene units; synthetic scenes)"),
    "count": "count: Gaussians tracked",
}


def parse_metric(metric: str) -> tuple[str, str] | None:
    """(regime, statistic) of a traj_* metric name ("traj_speed" -> ("all", "speed"),
    "traj_error_fast" -> ("fast", "error")); None for other metrics."""
    if not metric.startswith("traj_"):
        return None
    stat, _, regime = metric[len("traj_"):].partition("_")
    if stat not in STAT_NOTES:
        return None
    return (regime or ALL), stat


def _regime_order(present: Sequence[str]) -> list[str]:
    """"all", the synthetic regimes in their order, then any other regime as first seen."""
    known = [ALL, *REGIMES]
    return [r for r in known if r in present] + [r for r in present if r not in known]


@register_table(
    "trajectories",
    "Motion trajectories of the Gaussians: length, speed, curvature, jerk, coherence, error per regime",
)
def trajectories_table(
    df: pd.DataFrame, dataset: str | None = None, methods: Sequence[str] | None = None,
    regimes: Sequence[str] | None = None, stats: Sequence[str] | None = None,
) -> pd.DataFrame:
    """Rows: method labels; columns: (regime, statistic) for the traj_* metrics present (or the
    `regimes` / `stats` asked, in order). Each value is the mean over scenes of the per-scene
    mean over seeds. ConfigError when no traj_* metric is present."""
    rows = labelled(select_dataset(df, dataset, "trajectories"))
    parsed = rows["metric"].map(parse_metric)
    rows = rows[parsed.notna()].assign(
        regime=[p[0] for p in parsed.dropna()], statistic=[p[1] for p in parsed.dropna()])
    if len(rows) == 0:
        raise ConfigError("table trajectories: the results hold no traj_* metric "
                          "(run the trajectory analysis first)")
    labels = select_labels(rows, methods, "trajectories")
    regime_list = ordered(_regime_order(list(rows["regime"].unique())), regimes, "regimes",
                          "trajectories")
    stat_list = ordered([s for s in STAT_NOTES if s in set(rows["statistic"])], stats,
                        "statistics", "trajectories")
    per_scene = rows.groupby(["label", "scene", "regime", "statistic"], sort=False)["value"].mean()
    table = per_scene.groupby(level=["label", "regime", "statistic"], sort=False).mean()
    table = table.unstack(["regime", "statistic"])
    columns = pd.MultiIndex.from_tuples(
        [(r, s) for r in regime_list for s in stat_list if (r, s) in table.columns],
        names=["regime", "statistic"])
    table = table.reindex(index=labels, columns=columns)
    table.index.name = "method"
    table.attrs["footnotes"] = [
        "Mean over scenes of the per-scene mean over seeds; each value is the mean over the "
        f"Gaussians tracked (regime {ALL!r}: every tracked Gaussian; a regime: those in objects "
        "of that regime, background counted static).",
        *(STAT_NOTES[s] for s in stat_list),
    ]
    return table
