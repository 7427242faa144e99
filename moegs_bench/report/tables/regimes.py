"""PSNR per motion regime (synthetic scenes' ground-truth labels, `eval.evaluate.RegimeErrors`)
of every expert and mixture: where each expert wins, and what a mixture keeps of each."""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd

from ...data.synthetic.motion import REGIMES
from ...errors import ConfigError
from .common import labelled, select_dataset
from .registry import register_table

ALL = "all"  # the column of whole images (metric psnr)


def _experts() -> set[str]:
    from ...experts.registry import available_experts

    return set(available_experts())


def _regime_columns(metrics: Sequence[str]) -> list[str]:
    """The regimes present (psnr_<regime>, not psnr_min/max/mean): the synthetic regimes in
    their order, then any other as first seen."""
    present = [m[len("psnr_"):] for m in dict.fromkeys(metrics) if m.startswith("psnr_")]
    present = [r for r in present if r not in ("min", "max", "mean")]
    return [r for r in REGIMES if r in present] + [r for r in present if r not in REGIMES]


@register_table("regimes", "PSNR per motion regime of every expert and mixture (synthetic scenes)")
def regimes_table(df: pd.DataFrame, dataset: str | None = None,
                  runs: Sequence[str] | None = None) -> pd.DataFrame:
    """Rows: method labels (the runs in `runs`, run folders in that order; default every run
    with per-regime PSNR); columns: `all` (PSNR of whole images) and each motion regime
    present; cells: mean over scenes of the per-scene mean over seeds. The footnotes name the
    best expert per column and each mixture's (`moe-*`) gain over it."""
    rows = labelled(select_dataset(df, dataset, "regimes"))
    if runs is not None:
        rows = rows[rows["run_dir"].isin(list(runs))]
    regimes = _regime_columns(list(rows["metric"]))
    if not regimes:
        raise ConfigError("table regimes: no per-regime PSNR in these results (only scenes with motion "
                          "labels, the synthetic ones, have it)")
    metrics = {"psnr": ALL, **{f"psnr_{r}": r for r in regimes}}
    rows = rows[rows["metric"].isin(list(metrics))]
    sets = {str(v) for v in rows["variant"] if "+" in str(v)}
    if len(sets) == 1:  # one expert set: a mixture is labelled by its method alone
        rows = rows.assign(label=[str(m) if str(v) in sets else lab
                                  for m, v, lab in zip(rows["method"], rows["variant"], rows["label"], strict=True)])
    label_of = rows.drop_duplicates("run_dir").set_index("run_dir")["label"]
    order = list(runs) if runs is not None else list(label_of.index)
    labels = list(dict.fromkeys(label_of[r] for r in order if r in label_of.index))
    per_scene = rows.groupby(["label", "scene", "metric"], sort=False)["value"].mean()
    table = per_scene.groupby(level=["label", "metric"], sort=False).mean().unstack("metric")
    table = table.reindex(index=labels, columns=list(metrics))
    table.columns = pd.Index(list(metrics.values()), name="regime")
    table.index.name = "method"
    table.attrs["floatfmt"] = {col: 2 for col in table.columns}  # dB, as the run tables
    table.attrs["footnotes"] = [
        "PSNR (dB) over the pixels of each motion regime in every test view (squared error pooled, "
        "ground-truth labels); all: mean PSNR of whole images.",
        *_gain_notes(table, rows),
    ]
    return table


def _gain_notes(table: pd.DataFrame, rows: pd.DataFrame) -> list[str]:
    """'best expert: <label> <PSNR>' per column, and each moe-* row's gain over that expert."""
    methods = rows.drop_duplicates("label").set_index("label")["method"]
    experts = [lab for lab in table.index if methods.get(lab) in _experts()]
    mixtures = [lab for lab in table.index if str(methods.get(lab, "")).startswith("moe-")]
    if not experts:
        return []
    scores = table.loc[experts]
    best = {col: scores[col].idxmax() for col in table.columns if scores[col].notna().any()}
    notes = ["Best expert: " + ", ".join(f"{col} {lab} {table.loc[lab, col]:.2f}" for col, lab in best.items())]
    for mix in mixtures:
        gains = ", ".join(f"{col} {table.loc[mix, col] - table.loc[lab, col]:+.2f}" for col, lab in best.items()
                          if pd.notna(table.loc[mix, col]))
        notes.append(f"{mix} minus the best expert: {gains}")
    return notes
