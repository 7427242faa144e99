"""Distillation tables: each expert of a mixture as trained for it (baseline), retrained on the
ground truth (another seed), and distilled from the mixture's pseudo-labels with and without
the routing weights (bench/distill.py), per scene and averaged, mean ± std over seeds; on
Technicolor beside the paper's Tables 7, 11 and 13. The LPIPS column is the 3DGS convention
(`lpips_3dgs`), the one the paper's LPIPS was measured in."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import pandas as pd

from ...bench.distill import DISTILLED, NOWEIGHT, RETRAINED
from ...data.datasets import load_dataset
from ...errors import ConfigError
from .. import leaderboard as lb
from ..format import STAT
from .common import (
    AVERAGE,
    average_stats,
    dataset_label,
    lpips_3dgs_footnote,
    metric_label,
    note_text,
    ordered,
    select_dataset,
)
from .registry import register_table

# training kind (the paper CSVs' variant) -> row label; rows appear in this order
TRAININGS = {
    "baseline": "baseline (in the mixture)",
    "retrained": "retrained (GT loss)",
    "distilled-no-weight": "distilled (w/o weight)",
    "distilled": "distilled (routing weight)",
}
SUFFIX_KINDS = ((NOWEIGHT, "distilled-no-weight"), (DISTILLED, "distilled"), (RETRAINED, "retrained"))
PAPER_DATASET = "technicolor"  # Tables 7, 11 and 13 are all on Technicolor
PAPER_SOURCES = {"distillation": (7, 11), "distillation-weighting": (13, 11)}  # average first, then per scene
PAPER_ROW = "(paper)"


def _classify(method: str, variant: str) -> tuple[str, str, str | None]:
    """(expert label, training kind, mixture) of a stored method: `<label>-distilled` (variant:
    the mixture), `<label>-distilled-noweight`, `<label>-retrained`, else an expert's own run
    (label `name` or `name@preset`, from its variant)."""
    for suffix, kind in SUFFIX_KINDS:
        if method.endswith(suffix):
            return method[: -len(suffix)], kind, (variant if kind != "retrained" else None)
    return (method if variant == "default" else f"{method}@{variant}"), "baseline", None


def distill_rows(df: pd.DataFrame) -> pd.DataFrame:
    """The tidy rows of distillation: columns expert, training, mixture, scene, metric, seed,
    value (plus the originals); an expert's own runs only where it has retrained or distilled
    runs."""
    if len(df) == 0:
        return df.assign(expert=[], training=[], mixture=[])
    parts = [_classify(str(m), str(v)) for m, v in zip(df["method"], df["variant"], strict=True)]
    out = df.assign(expert=[p[0] for p in parts], training=[p[1] for p in parts], mixture=[p[2] for p in parts],
                    metric=df["metric"].astype(str).str.lower(), scene=df["scene"].astype(str))
    derived = set(out.loc[out["training"] != "baseline", "expert"])
    return out[out["expert"].isin(derived)]


def _row_key(expert: str, training: str, mixture: str | None) -> str:
    return "|".join((expert, training, mixture or ""))


def _stats_row(rows: pd.DataFrame, metrics: list[str], scenes: list[str], columns: pd.MultiIndex,
               average: bool) -> pd.Series:
    """Per scene: mean and std over seeds; Average: the mean over scenes of the per-scene means
    and its std over the seeds covering every scene (NaN where a scene is missing)."""
    out = pd.Series(np.nan, index=columns)
    per_seed = rows.assign(label="row").groupby(["label", "scene", "metric", "seed"])["value"].mean().reset_index()
    for m in metrics:
        sub = per_seed[per_seed["metric"] == m]
        scene_means: dict[str, float] = {}
        for s in scenes:
            vals = sub.loc[sub["scene"] == s, "value"]
            if len(vals):
                scene_means[s] = float(vals.mean())
                out[(s, metric_label(m), "mean")] = scene_means[s]
                out[(s, metric_label(m), "std")] = float(vals.std(ddof=1)) if len(vals) > 1 else math.nan
        if average:
            mean, std = average_stats(per_seed, "row", m, scenes, scene_means)
            out[(AVERAGE, metric_label(m), "mean")] = mean
            out[(AVERAGE, metric_label(m), "std")] = std
    return out


def _paper_reference(table: str) -> pd.DataFrame:
    """The paper's values for `table`: the first source table's average wins, per-scene values
    from the others; metrics renamed to ours (LPIPS -> lpips_3dgs)."""
    frames = [lb.load_paper(table=n) for n in PAPER_SOURCES[table]]
    ref = pd.concat(frames, ignore_index=True)
    ref = ref.drop_duplicates(subset=["method", "variant", "scene", "metric"], keep="first")
    return lb.as_our_metrics(ref)


def _paper_row(ref: pd.DataFrame, name: str, kind: str, metrics: list[str], scenes: list[str],
               columns: pd.MultiIndex, average: bool) -> tuple[pd.Series, bool]:
    """One paper row over the table's columns (second output: an Average computed from the
    published per-scene values because only some of the dataset's scenes are shown)."""
    out = pd.Series(np.nan, index=columns)
    hit = ref[(ref["method"] == name) & (ref["variant"] == kind)]
    computed = False
    all_scenes = set(load_dataset(PAPER_DATASET).scenes)
    for m in metrics:
        per_scene = dict(zip(hit.loc[hit["metric"] == m, "scene"], hit.loc[hit["metric"] == m, "value"],
                             strict=True))
        for s in scenes:
            if s in per_scene:
                out[(s, metric_label(m), "mean")] = per_scene[s]
        if not average:
            continue
        if set(scenes) == all_scenes and lb.AVERAGE_SCENE in per_scene:
            out[(AVERAGE, metric_label(m), "mean")] = per_scene[lb.AVERAGE_SCENE]
        elif scenes and all(s in per_scene for s in scenes):
            out[(AVERAGE, metric_label(m), "mean")] = float(np.mean([per_scene[s] for s in scenes]))
            computed = True
    return out, computed


def _build(table: str, df: pd.DataFrame, trainings: Sequence[str], dataset: str | None,
           metrics: Sequence[str], scenes: Sequence[str] | None, notes: pd.DataFrame | None,
           paper: bool, require: str) -> pd.DataFrame:
    metrics = [m.lower() for m in metrics]
    rows = distill_rows(select_dataset(df, dataset, table) if len(df) else df)
    rows = rows[rows["training"].isin(list(trainings))]
    experts = sorted(set(rows.loc[rows["training"] == require, "expert"]))
    if not experts:
        raise ConfigError(f"table {table}: no {require} runs (moegs-bench run ... --distill"
                          + (" --distill-weighting both" if require == "distilled-no-weight" else "") + ")")
    rows = rows[rows["expert"].isin(experts)]
    kinds_of = {e: set(rows.loc[rows["expert"] == e, "training"]) for e in experts}  # any metric
    scene_list = ordered(rows["scene"], scenes, "scenes", table)
    present = rows["dataset"].astype(str).unique()
    ds = dataset if dataset is not None else (str(present[0]) if len(present) == 1 else None)
    rows = rows[rows["metric"].isin(metrics) & rows["scene"].isin(scene_list)]
    average = len(scene_list) > 1
    groups = scene_list + ([AVERAGE] if average else [])
    columns = pd.MultiIndex.from_product([groups, [metric_label(m) for m in metrics], ["mean", "std"]],
                                         names=["scene", "metric", STAT])
    mixtures = sorted({m for m in rows["mixture"] if isinstance(m, str)})
    ref = _paper_reference(table) if paper and ds == PAPER_DATASET else None

    index: list[tuple[str, str]] = []
    body: list[pd.Series] = []
    seeds: list[int] = []
    computed = False
    for expert in experts:
        mine = rows[rows["expert"] == expert]
        for kind in trainings:
            sub = mine[mine["training"] == kind]
            blocks = [(None, sub)] if kind in ("baseline", "retrained") else \
                [(m, sub[sub["mixture"] == m]) for m in mixtures]
            for mixture, block in blocks:
                if len(block) == 0:
                    continue
                name = TRAININGS[kind] + (f" [{mixture}]" if mixture is not None and len(mixtures) > 1 else "")
                index.append((expert, name))
                body.append(_stats_row(block, metrics, scene_list, columns, average))
                seeds += block.groupby(["scene", "metric"])["seed"].nunique().tolist()
        if ref is None:
            continue
        for kind in trainings:
            if kind == "baseline" or kind not in kinds_of[expert]:
                continue  # the paper's baseline rows are its retrained ones (Tables 7, 13)
            values, was_computed = _paper_row(ref, expert.split("@")[0], kind, metrics, scene_list, columns,
                                              average)
            if values.notna().any():
                index.append((expert, f"{TRAININGS[kind]} {PAPER_ROW}"))
                body.append(values)
                computed |= was_computed
    out = pd.DataFrame(body, index=pd.MultiIndex.from_tuples(index, names=["expert", "training"]))
    out = out.reindex(columns=columns)
    out.attrs["footnotes"] = _footnotes(table, seeds, mixtures, notes, ds, rows, ref is not None, paper, computed,
                                        metrics)
    return out


def _footnotes(table: str, seeds: list[int], mixtures: list[str], notes: pd.DataFrame | None, ds: str | None,
               rows: pd.DataFrame, with_paper: bool, paper: bool, computed: bool, metrics: list[str]) -> list[str]:
    out = []
    if seeds and max(seeds) > 1:
        lo, hi = min(seeds), max(seeds)
        out.append(f"Mean ± standard deviation over seeds (n = {lo if lo == hi else f'{lo}–{hi}'}); "
                   f"{AVERAGE}: the mean over scenes of the per-scene means.")
    out.append("baseline: the expert the mixture was built from; retrained: the same config from scratch at "
               "other seeds on the ground truth only; distilled: the same seeds on Eq. 11 (ground truth where "
               "the router trusts the expert, the mixture's image elsewhere); w/o weight: Eq. 11 without the "
               "gate masks.")
    if len(mixtures) > 1:
        out.append(f"Distilled rows name the mixture they learned from: {', '.join(mixtures)}.")
    labels = [f"{m} ({v})" if v != "default" else str(m)
              for m, v in dict.fromkeys(zip(rows["method"], rows["variant"], strict=True))]
    out += note_text(notes, ds, "training", [lab for lab in labels if DISTILLED in lab])
    for m in metrics:
        missing = rows[rows["metric"] == m]
        if len(missing) == 0:
            why = note_text(notes, ds, m, labels)
            if why:
                out.append(f"{metric_label(m)} blank: {'; '.join(why)}.")
    out += lpips_3dgs_footnote(metrics)
    sources = ", ".join(str(n) for n in PAPER_SOURCES[table])
    if with_paper:
        out.append(f"Rows marked {PAPER_ROW}: the MoE-GS paper's Tables {sources} ({dataset_label(PAPER_DATASET)}; "
                   f"{AVERAGE} from Table {PAPER_SOURCES[table][0]}, scenes from Table 11), measured on "
                   f"{lb.PAPER_GPU}; the paper's baseline rows are its retrained experts.")
        if computed:
            out.append(f"{AVERAGE} of a {PAPER_ROW} row over a subset of scenes: the mean of the paper's "
                       "per-scene values over the shown scenes.")
    elif paper and ds is not None:
        out.append(f"The paper's Tables {sources} are on {dataset_label(PAPER_DATASET)}; no published "
                   f"values for {dataset_label(ds)}.")
    return out


@register_table("distillation",
                "Experts retrained on the ground truth vs distilled from the mixture, per scene (paper Tables 7, 11)")
def distillation_table(
    df: pd.DataFrame,
    dataset: str | None = None,
    metrics: Sequence[str] = ("psnr", "ssim", "lpips_3dgs"),
    scenes: Sequence[str] | None = None,
    notes: pd.DataFrame | None = None,
    paper: bool = True,
) -> pd.DataFrame:
    """Rows (expert, training): per expert with distilled runs, its baseline (the run the
    mixture was built from), retrained (ground truth, other seeds), distilled w/o weight (where
    trained) and distilled with routing weights, one distilled row per mixture; on Technicolor
    with `paper`, the paper's rows (Table 7 averages, Table 11 per scene). Columns (scene,
    metric, stat) plus Average over scenes when there are several; mean ± std over seeds."""
    return _build("distillation", df, list(TRAININGS), dataset, metrics, scenes, notes, paper, "distilled")


@register_table("distillation-weighting",
                "Distillation with vs without the routing weights, per scene (paper Tables 13, 11)")
def distillation_weighting_table(
    df: pd.DataFrame,
    dataset: str | None = None,
    metrics: Sequence[str] = ("psnr", "ssim", "lpips_3dgs"),
    scenes: Sequence[str] | None = None,
    notes: pd.DataFrame | None = None,
    paper: bool = True,
) -> pd.DataFrame:
    """Rows (expert, training) for every expert distilled without weights: baseline, retrained,
    w/o weight, routing weight; on Technicolor with `paper`, the paper's rows (Table 13
    averages, Table 11 per scene). Columns as the `distillation` table."""
    return _build("distillation-weighting", df, list(TRAININGS), dataset, metrics, scenes, notes, paper,
                  "distilled-no-weight")
