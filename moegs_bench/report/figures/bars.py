"""Bar figures: multi-view depth consistency per method and scene (MoE-GS Fig. 10) and PSNR per
motion regime of the synthetic scenes."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from ...data.synthetic.motion import REGIMES
from .curves import method_kind, method_order
from .registry import register_figure
from .source import StoreView
from .style import PAGE_WIDTH, method_color, new_figure

AVERAGE = "Average"
REGIME_METHODS = ("expert", "mixture")  # and the uniform average: what a mixture must beat
BAR_GROUP = 0.8  # width of one group of bars (1 = touching the next group)


def seed_stats(rows: pd.DataFrame) -> pd.DataFrame:
    """rows of one metric -> per (label, method, scene): mean and std over seeds (std NaN for
    one seed)."""
    g = rows.groupby(["label", "method", "scene"], sort=False)["value"]
    return pd.DataFrame({"mean": g.mean(), "std": g.std(ddof=1)}).reset_index()


def _label_order(store: StoreView, stats: pd.DataFrame) -> list[str]:
    pairs = stats.drop_duplicates("label")[["label", "method"]].itertuples(index=False)
    ranked = sorted(pairs, key=lambda p: method_order(store, p.method, p.label))
    return [p.label for p in ranked]


def grouped_bars(ax: Axes, groups: list[str], labels: list[str],
                 values: dict[tuple[str, str], tuple[float, float]], decimals: int) -> None:
    """Bars of labels within each group; values (group, label) -> (mean, std); a missing pair
    leaves a gap. Each bar carries its value above it."""
    width = BAR_GROUP / max(len(labels), 1)
    for j, label in enumerate(labels):
        xs, heights, errs = [], [], []
        for i, group in enumerate(groups):
            if (group, label) in values:
                mean, std = values[(group, label)]
                xs.append(i - BAR_GROUP / 2 + (j + 0.5) * width)
                heights.append(mean)
                errs.append(0.0 if math.isnan(std) else std)
        if not xs:
            continue
        bars = ax.bar(xs, heights, width * 0.92, color=method_color(label), label=label,
                      yerr=errs if any(errs) else None, error_kw={"linewidth": 0.6, "capsize": 1.5})
        ax.bar_label(bars, fmt=f"%.{decimals}f", fontsize=4.5, padding=1, rotation=90)
    ax.set_xticks(range(len(groups)), groups)
    ax.grid(axis="x", visible=False)
    ax.margins(y=0.18)


@register_figure(
    "mdc",
    "Multi-view depth consistency (lower is better) of every expert, router mixture and fused "
    "model per scene (paper Fig. 10); needs the MDC analysis (--analysis mdc)",
)
def mdc_figure(store: StoreView) -> Figure:
    """Grouped bars: groups are scenes (and their average when several, for methods with every
    scene), bars are methods; height the mean over seeds of `mdc`, whiskers the std over seeds."""
    rows = store.metric("mdc")
    if len(rows) == 0:
        raise store.missing("no MDC rows (mdc)", "--experts 2 --router vapr --analysis fusion,mdc")
    stats = seed_stats(rows)
    labels = _label_order(store, stats)
    scenes = list(dict.fromkeys(stats["scene"]))
    values = {(s.scene, s.label): (s.mean, s.std) for s in stats.itertuples(index=False)}
    groups = list(scenes)
    if len(scenes) > 1:
        groups.append(AVERAGE)
        for label in labels:
            per_scene = [values[(s, label)][0] for s in scenes if (s, label) in values]
            if len(per_scene) == len(scenes):
                values[(AVERAGE, label)] = (float(np.mean(per_scene)), math.nan)
    fig = new_figure(min(PAGE_WIDTH, 1.6 + 0.35 * len(groups) * len(labels)), 2.4)
    ax = fig.subplots()
    grouped_bars(ax, groups, labels, values, decimals=3)
    ax.set_ylabel("MDC (lower is better)")
    ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0))
    return fig


@register_figure(
    "regimes",
    "PSNR per motion regime (static, smooth, fast, abrupt, non-rigid) of the experts, the "
    "uniform average and the mixtures; needs runs on a synthetic scene (regime label maps)",
)
def regimes_figure(store: StoreView) -> Figure:
    """One panel per scene: groups are the regimes the scene has (psnr_<regime>), bars are
    methods (experts, the uniform average, mixtures); height the mean over seeds."""
    metrics = {f"psnr_{r}": r for r in REGIMES}
    rows = store.rows[store.rows["metric"].isin(metrics)]
    rows = rows[[method_kind(store, m) in REGIME_METHODS or m == "uniform-average" for m in rows["method"]]]
    if len(rows) == 0:
        raise store.missing("no per-regime PSNR rows (psnr_<regime>, from synthetic scenes' label maps)",
                            "--scene mixed --experts 2 --router vapr")
    rows = rows.assign(regime=rows["metric"].map(metrics))
    scenes = list(dict.fromkeys(rows["scene"]))
    fig = new_figure(PAGE_WIDTH, 2.3 * len(scenes) + 0.3)
    axes = fig.subplots(len(scenes), 1, squeeze=False)[:, 0]
    for ax, scene in zip(axes, scenes, strict=True):
        sub = rows[rows["scene"] == scene]
        stats = sub.groupby(["label", "method", "regime"], sort=False)["value"].agg(["mean", "std"]).reset_index()
        labels = _label_order(store, stats)
        groups = [r for r in REGIMES if r in set(stats["regime"])]
        values = {(s.regime, s.label): (s.mean, s.std) for s in stats.itertuples(index=False)}
        grouped_bars(ax, groups, labels, values, decimals=1)
        low = min(v[0] for v in values.values())
        ax.set_ylim(bottom=max(0.0, math.floor(low) - 2.0))  # PSNR bars: differences, not zero, matter
        ax.set_ylabel("PSNR (dB)")
        ax.set_title(scene)
        ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0))
    return fig


__all__ = ["mdc_figure", "regimes_figure", "grouped_bars", "seed_stats"]
