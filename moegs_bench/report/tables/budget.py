"""The budget table (paper Table 6): each expert's and each mixture's PSNR when the experts are
trained for a fraction of their iterations (`moegs-bench run --budget 0.5`; experts/budget.py).
Rows are budgets (100%, 50%, ...), columns the experts and the mixtures; a cell is the mean over
scenes of the per-scene mean over seeds. Budget runs are recognised by their variant (`b50`,
`<preset>.b50`, `<expert set>.b50`)."""

from __future__ import annotations

import math
import re
from collections.abc import Sequence

import numpy as np
import pandas as pd

from ...errors import ConfigError
from ...experts.budget import split_budget
from ...experts.registry import available_experts
from .. import leaderboard as lb
from .common import dataset_label, metric_label, ordered, run_label, select_dataset
from .registry import register_table

PAPER_TABLE = 6
PAPER_DATASET = "n3v"  # Table 6's values are the N3V averages of Table 1
PAPER_ROW = "(paper)"
_PAPER_VARIANT = re.compile(r"(?:(.+), )?budget (\d+(?:\.\d+)?)%")  # "N=3, budget 50%", "budget 10%"


def budget_label(budget: float) -> str:
    """Row label of a budget: 0.5 -> "50%"."""
    return f"{round(budget * 100, 4):g}%"


def budget_rows(df: pd.DataFrame) -> pd.DataFrame:
    """The tidy rows with `budget` (fraction) and `base` (variant without the budget) columns."""
    parts = [split_budget(str(v)) for v in df["variant"]]
    return df.assign(base=[p[0] for p in parts], budget=[p[1] for p in parts],
                     metric=df["metric"].astype(str).str.lower(), scene=df["scene"].astype(str))


def _shown(methods: pd.Series) -> list[bool]:
    """Experts and mixtures (moe-<router>, moe-fused); baselines are not part of Table 6."""
    experts = set(available_experts())
    return [str(m) in experts or str(m).startswith("moe-") for m in methods]


@register_table("budget", "PSNR of each expert and mixture at reduced expert training budgets (paper Table 6)")
def budget_table(
    df: pd.DataFrame,
    dataset: str | None = None,
    metric: str = "psnr",
    scenes: Sequence[str] | None = None,
    methods: Sequence[str] | None = None,
    paper: bool | str = True,
) -> pd.DataFrame:
    """Rows: budgets, largest first ("100%", "50%", ...), each followed on N3V by the paper's
    row "<budget> (paper)"; columns: method labels (experts, then mixtures); values: `metric`
    averaged over scenes (a cell is NaN unless every scene has a run) of the mean over seeds.
    methods: method names or labels to show (default: every expert and mixture with a run at a
    reduced budget);
    paper: True (paper rows on N3V), False, or "always" (beside results of any dataset)."""
    if paper not in (True, False, "always"):
        raise ConfigError(f"table budget: paper must be true, false or 'always'; got {paper!r}")
    metric = metric.lower()
    rows = budget_rows(select_dataset(df, dataset, "budget") if len(df) else df)
    rows = rows[pd.Series(_shown(rows["method"]), index=rows.index) & (rows["metric"] == metric)] if len(rows) else rows
    if not len(rows) or not (rows["budget"] < 1).any():
        raise ConfigError("table budget: no runs at a reduced budget (moegs-bench run --budget 0.5)")
    rows = rows.assign(label=[run_label(str(m), str(b)) for m, b in zip(rows["method"], rows["base"], strict=True)])
    # seeds of the budget study only: a seed study sharing the store adds seeds at 100% alone
    study_seeds = set(rows.loc[rows["budget"] < 1, "seed"])
    other_seeds = sorted(set(rows["seed"]) - study_seeds)
    rows = rows[rows["seed"].isin(study_seeds)]
    labels = _columns(rows, methods)
    full_only = []
    if methods is None:  # a method stored only at 100% (another study in the store) says nothing here
        reduced = set(rows.loc[rows["budget"] < 1, "label"])
        full_only = [lab for lab in labels if lab not in reduced]
        labels = [lab for lab in labels if lab in reduced]
    scene_list = ordered(rows["scene"], scenes, "scenes", "budget")
    rows = rows[rows["label"].isin(labels) & rows["scene"].isin(scene_list)]
    budgets = sorted(set(rows["budget"]), reverse=True)
    per_scene = rows.groupby(["budget", "label", "scene"])["value"].agg(["mean", "count"])
    table = pd.DataFrame(np.nan, index=pd.Index([budget_label(b) for b in budgets], name="budget"),
                         columns=pd.Index(labels, name="method"))
    gaps = 0
    for b in budgets:
        for label in labels:
            means = [per_scene.loc[(b, label, s), "mean"] for s in scene_list if (b, label, s) in per_scene.index]
            if len(means) == len(scene_list):
                table.loc[budget_label(b), label] = float(np.mean(means))
            elif means:
                gaps += 1
    counts = per_scene["count"]
    footnotes = [f"{metric_label(metric)} averaged over {len(scene_list)} scene(s) ({', '.join(scene_list)}) of "
                 f"the mean over seeds (n = {_span(counts)} per scene); a budget trains each expert for that "
                 "fraction of its preset's iterations with every step schedule scaled alike (experts/budget.py); "
                 "a mixture's row mixes the experts of the same budget."]
    if gaps:
        footnotes.append(f"{gaps} cell(s) left blank: runs for only some of the scenes.")
    if other_seeds:
        footnotes.append(f"Seed(s) {', '.join(map(str, other_seeds))} left out: run at 100% only (the budget "
                         f"study's seeds: {', '.join(map(str, sorted(study_seeds)))}).")
    if full_only:
        footnotes.append(f"Not shown, stored at 100% only: {', '.join(full_only)} (name them in methods to show them).")
    present = rows["dataset"].astype(str).unique()
    ds = dataset if dataset is not None else (str(present[0]) if len(present) == 1 else None)
    if paper == "always" or (paper and ds == PAPER_DATASET):
        table, note = _with_paper(table, rows, metric, ds)
        footnotes += note
    table.attrs["footnotes"] = footnotes
    return table


def _span(counts: pd.Series) -> str:
    lo, hi = int(counts.min()), int(counts.max())
    return f"{lo}" if lo == hi else f"{lo}–{hi}"


def _columns(rows: pd.DataFrame, methods: Sequence[str] | None) -> list[str]:
    """Experts (sorted), then mixtures, or the `methods` asked for (names or labels)."""
    present = sorted(set(rows["label"]), key=lambda lab: (lab.startswith("moe-"), lab))
    if methods is None:
        return present
    out: list[str] = []
    for m in methods:
        hit = [lab for lab in present if lab == m or lab.split(" (")[0] == m]
        if not hit:
            raise ConfigError(f"table budget: no results for method {m!r}; present: {', '.join(present)}")
        out += [lab for lab in hit if lab not in out]
    return out


def _with_paper(table: pd.DataFrame, rows: pd.DataFrame, metric: str, dataset: str | None):
    """`table` with "<budget> (paper)" after each budget the paper prints, values in the columns
    whose method (and, for the mixture, expert set) the paper reports; footnotes."""
    ref = lb.load_paper(table=PAPER_TABLE)
    ref = ref[ref["metric"] == metric]
    bases = dict(zip(rows["label"], zip(rows["method"], rows["base"], strict=True), strict=False))
    extra: dict[str, pd.Series] = {}
    for method, paper_variant, value in zip(ref["method"], ref["variant"], ref["value"], strict=True):
        m = _PAPER_VARIANT.fullmatch(str(paper_variant))
        if m is None:
            continue
        budget_row = f"{budget_label(float(m.group(2)) / 100)} {PAPER_ROW}"
        for label in table.columns:
            ours, base = bases[label]
            same_set = base == "default" if m.group(1) is None else lb.variant_matches(PAPER_DATASET, m.group(1), base)
            if ours == method and same_set:
                extra.setdefault(budget_row, pd.Series(np.nan, index=table.columns))[label] = float(value)
    if not extra:
        return table, []
    order = [x for b in table.index for x in (b, f"{b} {PAPER_ROW}") if x in table.index or x in extra]
    order += [p for p in extra if p not in order]
    out = pd.concat([table, pd.DataFrame.from_dict(extra, orient="index")]).loc[order]
    out.index.name, out.columns.name = table.index.name, table.columns.name
    where = "" if dataset == PAPER_DATASET else (
        f" (the paper's numbers are on {dataset_label(PAPER_DATASET)}; ours on "
        f"{dataset_label(dataset) if dataset else 'other data'}: compare the drops, not the levels)")
    shown = sorted({c for row in extra.values() for c, v in row.items() if not math.isnan(v)})
    return out, [f"Rows marked {PAPER_ROW}: Table {PAPER_TABLE} of the MoE-GS paper ({', '.join(shown)}; the "
                 f"mixture is its N=3 set), measured on {lb.PAPER_GPU}, where a budget is a share of wall-clock "
                 f"training time{where}."]


__all__ = ["budget_label", "budget_rows", "budget_table"]
