"""The seed table (paper Table 12): each expert of a mixture and the mixture trained with several
seeds (`moegs-bench run --seed k`, each seed's mixture over that seed's experts), their min / max
/ mean / std PSNR over the seeds, and the paired gain: per seed, the mixture minus the best of
that seed's experts, with its spread. Pairing by seed is the point: the gain's spread is
the run-to-run noise of the difference, not of either side alone."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import pandas as pd

from ...errors import ConfigError
from ...experts.budget import split_budget
from ...experts.registry import split_label
from .. import leaderboard as lb
from .common import dataset_label, metric_label, ordered, run_label, select_dataset
from .registry import register_table

PAPER_TABLE = 12
PAPER_DATASET = "n3v"  # Table 12's values are the N3V averages of Table 1
PAPER_ROW = "(paper)"
STATS = ("min", "max", "mean", "std")


def _label_run(label: str) -> tuple[str, str]:
    """An expert label of a mixture's variant -> its stored (method, variant)."""
    name, preset = split_label(label)
    return name, preset or "default"


def _pick_variant(rows: pd.DataFrame, mixture: str, variant: str | None) -> str:
    """The mixture's expert set: `variant`, else the one stored with the most seeds (full
    budget): a store shared with other studies holds other sets of one seed beside it."""
    mix = rows[rows["method"] == mixture]
    present = sorted(set(mix["variant"]))
    if not present:
        raise ConfigError(f"table seeds: no {mixture} runs (moegs-bench run --router ... --seed k, for several k)")
    if variant is not None:
        if variant not in present:
            raise ConfigError(f"table seeds: no {mixture} runs of expert set {variant!r}; present: {', '.join(present)}")
        return variant
    seeds = mix.groupby("variant")["seed"].nunique()
    most = [v for v in present if seeds[v] == seeds.max()]
    if len(most) > 1:
        raise ConfigError(f"table seeds: {mixture} has several expert sets with {seeds.max()} seed(s) "
                          f"({', '.join(most)}); choose one with --option variant=...")
    return most[0]


@register_table("seeds", "Min / max / mean PSNR over seeds and the mixture's paired gain (paper Table 12)")
def seeds_table(
    df: pd.DataFrame,
    dataset: str | None = None,
    mixture: str = "moe-vapr",
    variant: str | None = None,
    metric: str = "psnr",
    scenes: Sequence[str] | None = None,
    paper: bool | str = True,
) -> pd.DataFrame:
    """Rows: the experts of `mixture`'s expert set `variant` (default: the one with most seeds), the
    mixture, and "<mixture> − best expert (paired)"; columns "<metric> min/max/mean/std" over
    seeds and "seeds" (how many). A seed's value is the mean over scenes (only seeds with every
    scene count); the gain of seed s is, averaged over scenes, the mixture's value minus the best
    of its experts' values of seed s, over the seeds where the mixture and every expert have runs.
    Runs at a reduced budget are left out. paper: True (Table 12 rows on N3V), False, "always"."""
    if paper not in (True, False, "always"):
        raise ConfigError(f"table seeds: paper must be true, false or 'always'; got {paper!r}")
    metric = metric.lower()
    rows = select_dataset(df, dataset, "seeds") if len(df) else df
    if len(rows):
        rows = rows.assign(metric=rows["metric"].astype(str).str.lower(), scene=rows["scene"].astype(str))
        full = np.array([split_budget(str(v))[1] == 1.0 for v in rows["variant"]], dtype=bool)
        rows = rows[(rows["metric"] == metric).to_numpy() & full]
    if not len(rows):
        raise ConfigError(f"table seeds: no {metric} results")
    variant = _pick_variant(rows, mixture, variant)
    members = [(label, *_label_run(label)) for label in variant.split("+")]
    runs = [(run_label(m, v), m, v) for _, m, v in members] + [(run_label(mixture, variant), mixture, variant)]
    scene_list = ordered(rows.loc[rows["method"] == mixture, "scene"], scenes, "scenes", "seeds")
    wide = {}  # row label -> DataFrame seeds x scenes
    for label, method, var in runs:
        sub = rows[(rows["method"] == method) & (rows["variant"] == var) & rows["scene"].isin(scene_list)]
        wide[label] = sub.pivot_table(index="seed", columns="scene", values="value", aggfunc="mean").reindex(
            columns=scene_list)
    per_seed = {label: w.dropna().mean(axis=1) for label, w in wide.items()}  # seeds with every scene
    expert_labels, moe_label = [r[0] for r in runs[:-1]], runs[-1][0]
    gain = _paired_gain(wide, expert_labels, moe_label)
    gain_label = f"{moe_label} − best expert (paired)"

    mlabel = metric_label(metric)
    columns = [f"{mlabel} {s}" for s in STATS] + ["seeds"]
    table = pd.DataFrame(np.nan, index=pd.Index([*expert_labels, moe_label, gain_label], name="method"),
                         columns=pd.Index(columns, name="statistic"))
    for label, values in [*per_seed.items(), (gain_label, gain)]:
        table.loc[label] = _stats(values)
    footnotes = [f"{mlabel} of each seed averaged over {len(scene_list)} scene(s) ({', '.join(scene_list)}); "
                 "std: sample standard deviation over seeds. The paired gain of seed s is the mixture of seed s "
                 "minus the best of seed s's experts (per scene, then averaged): each seed's mixture mixes "
                 "that seed's experts."]
    footnotes += _missing(per_seed, wide, gain, expert_labels + [moe_label])
    present = rows["dataset"].astype(str).unique()
    ds = dataset if dataset is not None else (str(present[0]) if len(present) == 1 else None)
    if paper == "always" or (paper and ds == PAPER_DATASET):
        table, note = _with_paper(table, members, mixture, variant, mlabel, ds)
        footnotes += note
    table.attrs["footnotes"] = footnotes
    table.attrs["floatfmt"] = {"seeds": 0}
    return table


def _paired_gain(wide: dict[str, pd.DataFrame], experts: list[str], moe: str) -> pd.Series:
    """Per seed where the mixture and every expert have every scene: mean over scenes of
    (mixture − max over experts)."""
    seeds = set(wide[moe].dropna().index)
    for label in experts:
        seeds &= set(wide[label].dropna().index)
    seeds = sorted(seeds)
    if not seeds:
        return pd.Series(dtype=float)
    best = pd.concat([wide[label].loc[seeds] for label in experts]).groupby(level=0).max()
    return (wide[moe].loc[seeds] - best).mean(axis=1)


def _stats(values: pd.Series) -> list[float]:
    if not len(values):
        return [math.nan] * len(STATS) + [0.0]
    std = float(values.std(ddof=1)) if len(values) > 1 else math.nan
    return [float(values.min()), float(values.max()), float(values.mean()), std, float(len(values))]


def _missing(per_seed: dict[str, pd.Series], wide: dict[str, pd.DataFrame], gain: pd.Series,
             labels: list[str]) -> list[str]:
    """A footnote per row lacking some seed that another row has (or some scene of a seed)."""
    every = sorted({int(s) for w in wide.values() for s in w.index})
    out = []
    for label in labels:
        lacking = [s for s in every if s not in per_seed[label].index]
        if lacking:
            out.append(f"{label}: no complete run for seed(s) {', '.join(map(str, lacking))} "
                       f"(of {', '.join(map(str, every))}); left out of its statistics and of the paired gain.")
    if out:
        out.append(f"Paired gain over seed(s) {', '.join(str(int(s)) for s in gain.index) or 'none'}.")
    return out


def _with_paper(table: pd.DataFrame, members: list[tuple[str, str, str]], mixture: str, variant: str,
                mlabel: str, dataset: str | None):
    """`table` with "<label> (paper)" after each row Table 12 reports (min, max, mean)."""
    ref = lb.load_paper(table=PAPER_TABLE)
    column = {"psnr_min": f"{mlabel} min", "psnr_max": f"{mlabel} max", "psnr_mean": f"{mlabel} mean"}
    wanted = {run_label(m, v): (m, "default") for _, m, v in members if v == "default"}
    wanted[run_label(mixture, variant)] = (mixture, None)
    extra: dict[str, pd.Series] = {}
    for method, pvariant, metric, value in zip(ref["method"], ref["variant"], ref["metric"], ref["value"], strict=True):
        for label, (ours, pv) in wanted.items():
            same = pvariant == pv if pv is not None else lb.variant_matches(PAPER_DATASET, str(pvariant), variant)
            if ours == method and same and metric in column:
                extra.setdefault(f"{label} {PAPER_ROW}", pd.Series(np.nan, index=table.columns))[column[metric]] = value
    if not extra or mlabel != "PSNR":
        return table, []
    order = [x for lab in table.index for x in (lab, f"{lab} {PAPER_ROW}") if x in table.index or x in extra]
    out = pd.concat([table, pd.DataFrame.from_dict(extra, orient="index")]).loc[order]
    out.index.name, out.columns.name = table.index.name, table.columns.name
    where = "" if dataset == PAPER_DATASET else f" (on {dataset_label(PAPER_DATASET)}, not this dataset)"
    return out, [f"Rows marked {PAPER_ROW}: Table {PAPER_TABLE} of the MoE-GS paper, five trainings each{where}, "
                 f"measured on {lb.PAPER_GPU}; it prints no spread and no paired gain."]


__all__ = ["seeds_table"]
