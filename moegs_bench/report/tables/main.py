"""The main table: per-scene PSNR / SSIM / LPIPS of every method and variant, mean ± std over
seeds, with the paper's published row beside each method it reports (paper Tables 1, 2, 8, 9).
The LPIPS column is the 3DGS convention (`lpips_3dgs`), the one the paper's LPIPS was measured
in; the official `lpips` is available with `metrics=[..., "lpips"]`."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from ...data.datasets import load_dataset
from ...errors import ConfigError
from .. import leaderboard as lb
from ..format import STAT
from .common import (
    AVERAGE,
    average_stats,
    dataset_label,
    labelled,
    lpips_3dgs_footnote,
    metric_label,
    note_text,
    official_lpips_footnote,
    ordered,
    run_label,
    seed_means,
    select_dataset,
    select_labels,
)
from .registry import register_table

PAPER_ROW = "(paper)"  # suffix of the label of a published row


@register_table(
    "main", "Per-scene PSNR / SSIM / LPIPS of every method and variant (paper Tables 1, 2, 8, 9)"
)
def main_table(
    df: pd.DataFrame,
    dataset: str | None = None,
    metrics: Sequence[str] = ("psnr", "ssim", "lpips_3dgs"),
    scenes: Sequence[str] | None = None,
    methods: Sequence[str] | None = None,
    notes: pd.DataFrame | None = None,
    average: bool = True,
    paper: bool | str = True,
) -> pd.DataFrame:
    """Rows: method labels. Columns (scene, metric, stat) with stat "mean"/"std" over seeds,
    plus ("Average", metric, stat) over scenes. Missing values are NaN and explained in
    `attrs["footnotes"]` (reasons from the run notes, see `bench.store.notes`).
    On a paper dataset (n3v, technicolor, hypernerf) each method is followed by the paper's
    published row "<label> (paper)" where the paper has one; `paper="all"` adds the paper's
    other methods too, `paper=False` shows ours only. The paper's LPIPS sits in our
    `lpips_3dgs` column ("LPIPS (3DGS)", its convention, `leaderboard.COMPARED_WITH`); an
    official `lpips` column gets no paper value."""
    if paper not in (True, False, "all"):
        raise ConfigError(f"table main: paper must be true, false or 'all'; got {paper!r}")
    rows = labelled(select_dataset(df, dataset, "main"))
    metrics = [m.lower() for m in metrics]
    scene_list = ordered(rows["scene"], scenes, "scenes", "main")
    labels = select_labels(rows, methods, "main")
    rows = rows[rows["label"].isin(labels) & rows["scene"].isin(scene_list)]
    has_run = set(zip(rows["label"], rows["scene"], strict=True))
    per_seed = seed_means(rows[rows["metric"].isin(metrics)])
    stats = per_seed.groupby(["label", "scene", "metric"])["value"].agg(["mean", "std", "count"])

    groups = scene_list + ([AVERAGE] if average else [])
    columns = pd.MultiIndex.from_product(
        [groups, [metric_label(m) for m in metrics], ["mean", "std"]],
        names=["scene", "metric", STAT],
    )
    table = pd.DataFrame(np.nan, index=pd.Index(labels, name="method"), columns=columns)
    missing_metric: dict[str, int] = {}
    no_run, partial = 0, False
    for label in labels:
        for m in metrics:
            scene_means: dict[str, float] = {}
            for s in scene_list:
                if (label, s, m) in stats.index:
                    mean, std, _ = stats.loc[(label, s, m)]
                    table.loc[label, (s, metric_label(m), "mean")] = mean
                    table.loc[label, (s, metric_label(m), "std")] = std
                    scene_means[s] = float(mean)
                elif (label, s) in has_run:
                    missing_metric[m] = missing_metric.get(m, 0) + 1
            partial |= 0 < len(scene_means) < len(scene_list)
            if average:
                avg, avg_std = average_stats(per_seed, label, m, scene_list, scene_means)
                table.loc[label, (AVERAGE, metric_label(m), "mean")] = avg
                table.loc[label, (AVERAGE, metric_label(m), "std")] = avg_std
        no_run += sum((label, s) not in has_run for s in scene_list)

    table.attrs["footnotes"] = _main_footnotes(
        stats, missing_metric, no_run, notes, dataset, labels, average and partial
    ) + lpips_3dgs_footnote(metrics)
    present = rows["dataset"].astype(str).unique()
    ds = dataset if dataset is not None else (str(present[0]) if len(present) == 1 else None)
    if paper and ds in lb.MAIN_SOURCES:
        table = _add_paper_rows(table, rows, ds, metrics, scene_list, average, paper == "all")
    return table


def _main_footnotes(
    stats: pd.DataFrame,
    missing_metric: dict[str, int],
    no_run: int,
    notes: pd.DataFrame | None,
    dataset: str | None,
    labels: list[str],
    partial_average: bool,
) -> list[str]:
    out = []
    counts = stats["count"] if len(stats) else pd.Series(dtype=float)
    if len(counts) and counts.max() > 1:
        lo, hi = int(counts.min()), int(counts.max())
        n = f"{lo}" if lo == hi else f"{lo}–{hi}"
        out.append(f"Mean ± standard deviation over seeds (n = {n}).")
    for m, k in missing_metric.items():
        reasons = note_text(notes, dataset, m, labels)
        why = "; ".join(reasons) if reasons else "unavailable (not measured)"
        out.append(f"{metric_label(m)} missing in {k} cell(s): {why}")
    if no_run:
        out.append(f"{no_run} (method, scene) pair(s) have no completed run.")
    if partial_average:
        out.append(f"{AVERAGE} is left blank where a method lacks a value for some scene.")
    return out


def _paper_match(ref: pd.DataFrame, dataset: str, method: str, variant: str) -> pd.DataFrame:
    """The paper's rows of `method` whose variant is ours (see `leaderboard.variant_matches`)."""
    sub = ref[ref["method"] == method]
    hits = [v for v in dict.fromkeys(sub["variant"]) if lb.variant_matches(dataset, v, variant)]
    return sub[sub["variant"] == hits[0]] if hits else sub.iloc[0:0]


def _paper_values(
    ref_rows: pd.DataFrame,
    columns: pd.MultiIndex,
    metrics: list[str],
    scene_list: list[str],
    all_scenes: set[str],
    average: bool,
) -> tuple[pd.Series, bool]:
    """One paper row over the main table's columns: the published per-scene values; the
    published average when the shown scenes are all of the dataset's, else the mean of the
    published per-scene values over the shown scenes (second output True when so computed)."""
    out = pd.Series(np.nan, index=columns)
    computed = False
    for m in metrics:
        sub = ref_rows[ref_rows["metric"] == m]
        per_scene = dict(zip(sub["scene"], sub["value"], strict=True))
        for s in scene_list:
            if s in per_scene:
                out[(s, metric_label(m), "mean")] = per_scene[s]
        if not average:
            continue
        if set(scene_list) == all_scenes and lb.AVERAGE_SCENE in per_scene:
            out[(AVERAGE, metric_label(m), "mean")] = per_scene[lb.AVERAGE_SCENE]
        elif scene_list and all(s in per_scene for s in scene_list):
            out[(AVERAGE, metric_label(m), "mean")] = float(
                np.mean([per_scene[s] for s in scene_list])
            )
            computed = True
    return out, computed


def _add_paper_rows(
    table: pd.DataFrame,
    rows: pd.DataFrame,
    dataset: str,
    metrics: list[str],
    scene_list: list[str],
    average: bool,
    all_methods: bool,
) -> pd.DataFrame:
    """`table` with the paper's row "<label> (paper)" after each method the paper reports (and,
    with `all_methods`, the paper's other methods at the end); footnotes say where from. The
    published metrics are renamed to the ones of ours they compare with (LPIPS -> lpips_3dgs)."""
    published = lb.as_our_metrics(lb.main_reference(dataset))
    ref = published[published["metric"].isin(metrics)]
    all_scenes = set(load_dataset(dataset).scenes)
    pairs = dict(
        zip(rows["label"], zip(rows["method"], rows["variant"], strict=True), strict=False)
    )
    picked: list[tuple[str | None, str, pd.DataFrame]] = []  # (our label, paper label, rows)
    used: set[tuple[str, str]] = set()
    for label in table.index:
        method, variant = pairs[label]
        hit = _paper_match(ref, dataset, str(method), str(variant))
        if len(hit):
            used.add((str(method), str(hit["variant"].iloc[0])))
            picked.append((label, f"{label} {PAPER_ROW}", hit))
    if all_methods:
        for (method, variant), hit in ref.groupby(["method", "variant"], sort=False):
            if (method, variant) not in used:
                picked.append((None, f"{run_label(method, variant)} {PAPER_ROW}", hit))

    extra: dict[str, pd.Series] = {}
    after: dict[str, str] = {}
    computed, sources, marks = False, {}, {}
    for ours, plabel, hit in picked:
        values, was_computed = _paper_values(
            hit, table.columns, metrics, scene_list, all_scenes, average
        )
        if values.notna().any():
            extra[plabel] = values
            computed |= was_computed
            if ours is not None:
                after[ours] = plabel
            for m, t in zip(hit["metric"], hit["table"], strict=True):
                sources.setdefault(m, set()).add(int(t))
            for note in dict.fromkeys(n for n in hit["note"] if n):
                marks.setdefault(note, []).append(plabel)
    if not extra:
        return table
    order = [x for label in table.index for x in (label, after.get(label)) if x is not None]
    order += [p for p in extra if p not in order]
    out = pd.concat([table, pd.DataFrame.from_dict(extra, orient="index")]).loc[order]
    out.columns = table.columns
    out.index.name = table.index.name
    out.attrs = dict(table.attrs)
    paper_lpips = bool((published["metric"] == lb.our_metric("lpips")).any())
    out.attrs["footnotes"] = (
        list(table.attrs["footnotes"])
        + _paper_footnotes(dataset, sources, marks, computed)
        + official_lpips_footnote(metrics, paper_lpips)
    )
    return out


def _source_text(sources: dict[str, set[int]]) -> str:
    """E.g. "PSNR: Table 1; SSIM, LPIPS: Table 8"."""
    by_tables: dict[tuple[int, ...], list[str]] = {}
    for m, tabs in sources.items():
        by_tables.setdefault(tuple(sorted(tabs)), []).append(metric_label(m))
    parts = []
    for tabs, names in by_tables.items():
        label = "Table" if len(tabs) == 1 else "Tables"
        parts.append(f"{', '.join(names)}: {label} {', '.join(str(t) for t in tabs)}")
    return "; ".join(parts)


def _paper_footnotes(
    dataset: str, sources: dict[str, set[int]], marks: dict[str, list[str]], computed: bool
) -> list[str]:
    out = [
        f"Rows marked {PAPER_ROW}: values published in the MoE-GS paper on "
        f"{dataset_label(dataset)} ({_source_text(sources)}), measured on {lb.PAPER_GPU}; "
        "a dash there means the paper prints no such value."
    ]
    out += [f"{', '.join(labels)}: {note}" for note, labels in marks.items()]
    if computed:
        out.append(
            f"{AVERAGE} of a {PAPER_ROW} row over a subset of scenes (or where the paper prints "
            "none): the mean of the paper's per-scene values over the shown scenes."
        )
    return out

