"""The router ablation: Pixel, Volume and Volume-aware Pixel Router (and the baseline blends),
averaged over scenes, beside the paper's Table 4. The LPIPS column is the 3DGS convention
(`lpips_3dgs`), the one the paper's LPIPS was measured in."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import pandas as pd

from ...errors import ConfigError
from .. import leaderboard as lb
from ..format import STAT
from .common import (
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
)
from .registry import register_table

ROUTER_PAPER_TABLE = 4  # the paper's router ablation


def router_titles() -> dict[str, str]:
    """Router method -> display name ("moe-vapr" -> "Volume-aware Pixel Router"), in row order:
    every registered router (moe.routers)."""
    from ...moe.routers import ROUTERS, router_names

    return {ROUTERS[n].method(): ROUTERS[n].title for n in router_names()}


def baseline_titles() -> dict[str, str]:
    """Baseline blend method -> display name ("oracle-pixel" -> "Oracle (per pixel)"), in row
    order: every registered baseline (moe.baselines)."""
    from ...moe.baselines import BASELINES

    return {b.name: b.title for b in BASELINES.values()}


def _scene_average_row(
    rows: pd.DataFrame, label: str, metrics: list[str], scenes: list[str], columns: pd.Index
) -> pd.Series:
    """Mean over `scenes` of the per-scene means over seeds, and its std over seeds (NaN when a
    scene is missing, resp. with fewer than two seeds covering every scene)."""
    per_seed = seed_means(rows)
    out = pd.Series(np.nan, index=columns)
    for m in metrics:
        sub = per_seed[(per_seed["label"] == label) & (per_seed["metric"] == m)]
        scene_means = sub.groupby("scene")["value"].mean().to_dict()
        mean, std = average_stats(per_seed, label, m, scenes, scene_means)
        out[(metric_label(m), "mean")] = mean
        out[(metric_label(m), "std")] = std
    return out


@register_table(
    "router-ablation",
    "Pixel, Volume and Volume-aware Pixel Router, averaged over scenes (paper Table 4)",
)
def router_ablation_table(
    df: pd.DataFrame,
    dataset: str | None = None,
    metrics: Sequence[str] = ("psnr", "ssim", "lpips_3dgs"),
    variants: Sequence[str] | None = None,
    baselines: bool = True,
    paper: bool = True,
    notes: pd.DataFrame | None = None,
) -> pd.DataFrame:
    """Rows: the registered routers (methods moe-<router>: pixel, volume, vapr, ...), then with
    `baselines` the registered blends (uniform-average, oracle-pixel, oracle-image) where present, one block per variant
    (expert set, "a+b+c"; the variant is shown when there are several); with `paper`, the
    paper's Table 4 rows "<router> (paper, N3V)". Columns: (metric, stat), the mean over the
    block's scenes of the per-scene mean over seeds, and its std over seeds. `notes` (the
    `bench.store.notes` frame) explains missing metrics in the footnotes. The paper's LPIPS is
    shown under our `lpips_3dgs` ("LPIPS (3DGS)", its convention); an official `lpips` column
    gets no paper value."""
    metrics = [m.lower() for m in metrics]
    router_names = router_titles()
    names = {**router_names, **(baseline_titles() if baselines else {})}
    rows = labelled(select_dataset(df, dataset, "router-ablation"))
    rows = rows[rows["method"].isin(list(names)) & rows["metric"].isin(metrics)]
    if len(rows) == 0 and not paper:
        raise ConfigError(
            f"table router-ablation: no results for methods {', '.join(router_names)}"
        )
    variant_list = ordered(rows["variant"].astype(str), variants, "variants", "router-ablation")
    columns = pd.MultiIndex.from_product(
        [[metric_label(m) for m in metrics], ["mean", "std"]], names=["metric", STAT]
    )
    out: dict[str, pd.Series] = {}
    footnotes: list[str] = []
    gaps: dict[tuple[str, str], list[str]] = {}  # (metric, reason) -> row labels
    for v in variant_list:
        block = rows[rows["variant"] == v]
        routers = block[block["method"].isin(list(router_names))]
        scenes = list(dict.fromkeys((routers if len(routers) else block)["scene"]))
        which = "" if len(variant_list) == 1 else f"{v}: "
        footnotes.append(
            f"{which}averaged over {len(scenes)} scene(s) ({', '.join(scenes)}): the mean over "
            "scenes of the per-scene mean over seeds; ± is the std over seeds."
        )
        for method, name in names.items():
            sub = block[block["method"] == method]
            if len(sub) == 0:
                continue
            label = name if len(variant_list) == 1 else f"{name} ({v})"
            out[label] = _scene_average_row(sub, run_label(method, v), metrics, scenes, columns)
            for m in metrics:
                if math.isnan(out[label][(metric_label(m), "mean")]):
                    why = note_text(notes, dataset, m, [run_label(method, v)])
                    reason = "; ".join(why) or "no value for some of the block's scenes"
                    gaps.setdefault((metric_label(m), reason), []).append(label)
    # one footnote per reason, naming every row it blanks (not one copy of the reason per row)
    footnotes += [
        f"{', '.join(labels)}: {metric} blank ({reason})." for (metric, reason), labels in gaps.items()
    ]
    footnotes += lpips_3dgs_footnote(metrics)
    if paper:
        # published metrics renamed to the ones of ours they compare with (LPIPS -> lpips_3dgs)
        ref = lb.as_our_metrics(lb.load_paper(table=ROUTER_PAPER_TABLE))
        where = ", ".join(dataset_label(d) for d in dict.fromkeys(ref["dataset"]))
        for method, name in router_names.items():
            hit = ref[(ref["method"] == method) & (ref["scene"] == lb.AVERAGE_SCENE)]
            if len(hit) == 0:  # a router the paper does not report
                continue
            values = pd.Series(np.nan, index=columns)
            for m, val in zip(hit["metric"], hit["value"], strict=True):
                if m in metrics:
                    values[(metric_label(m), "mean")] = val
            out[f"{name} (paper, {where})"] = values
        marks = "; ".join(dict.fromkeys(n for n in ref["note"] if n))
        footnotes.append(
            f"Rows (paper, {where}): the MoE-GS paper's Table {ROUTER_PAPER_TABLE}, measured on "
            f"{lb.PAPER_GPU}" + (f" ({marks})." if marks else ".")
        )
        paper_lpips = bool((ref["metric"] == lb.our_metric("lpips")).any())
        footnotes += official_lpips_footnote(metrics, paper_lpips)
    table = pd.DataFrame.from_dict(out, orient="index")
    table = table.reindex(columns=columns) if len(table) else pd.DataFrame(columns=columns)
    table.index.name = "router"
    table.attrs["footnotes"] = footnotes
    return table

