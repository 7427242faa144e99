"""Figures of curves and points: PSNR frame by frame (MoE-GS Fig. 1c) and PSNR against render
speed and memory (the paper's Table 3 as a plot)."""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from .common import first_seed_runs, router_rank
from .registry import register_figure
from .source import StoreView
from .style import COLUMN_WIDTH, PAGE_WIDTH, method_color, new_figure

# how each kind of method is drawn: experts thin with markers, mixtures bold, baselines dashed
LINE_STYLES = {
    "expert": {"linestyle": "-", "linewidth": 1.0, "marker": "o", "markersize": 2.5},
    "mixture": {"linestyle": "-", "linewidth": 1.8, "marker": None},
    "baseline": {"linestyle": "--", "linewidth": 0.9, "marker": None},
}
MARKERS = {"expert": "o", "mixture": "*", "baseline": "s"}
KIND_ORDER = ("expert", "baseline", "mixture")


def method_kind(store: StoreView, method: str) -> str:
    """"expert", "mixture" (a router or the fused model: moe-*) or "baseline"."""
    if store.is_expert(method):
        return "expert"
    return "mixture" if method.startswith("moe-") else "baseline"


def method_order(store: StoreView, method: str, label: str) -> tuple:
    """Sort key of the figures' legends: experts, baselines, then mixtures (the paper's router
    first, the fused model last), each by label."""
    kind = method_kind(store, method)
    return (KIND_ORDER.index(kind), router_rank(method) if kind == "mixture" else (0, ""), label)


def _sorted_runs(store: StoreView, runs: pd.DataFrame) -> pd.DataFrame:
    order = sorted(range(len(runs)), key=lambda i: method_order(store, runs["method"].iloc[i],
                                                                runs["label"].iloc[i]))
    return runs.iloc[order]


@register_figure(
    "per-frame",
    "PSNR frame by frame of every expert, baseline and mixture on the test views (paper Fig. "
    "1c); needs runs with per_image.csv (any run)",
)
def per_frame_figure(store: StoreView) -> Figure:
    """One panel per scene: each run's PSNR at each frame (mean over the test cameras at that
    frame, from per_image.csv), lowest seed; experts thin with markers, baselines dashed,
    mixtures bold."""
    curves: dict[str, list[tuple[str, str, pd.Series]]] = {}
    runs = _sorted_runs(store, first_seed_runs(store.runs))
    for r in runs.itertuples(index=False):
        rows = store.per_image(Path(r.run_dir))
        if len(rows) and "psnr" in rows.columns:
            curve = rows.groupby("frame")["psnr"].mean().sort_index()
            curves.setdefault(r.scene, []).append((r.label, r.method, curve))
    if not curves:
        raise store.missing("no per-image PSNR rows (per_image.csv)", "--experts 2 --router vapr")
    scenes = list(curves)
    ncols = 1 if len(scenes) == 1 else 2
    nrows = math.ceil(len(scenes) / ncols)
    width = COLUMN_WIDTH * 1.5 if ncols == 1 else PAGE_WIDTH
    fig = new_figure(width, 2.0 * nrows + 0.5)
    axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
    for ax, scene in zip(axes, scenes, strict=False):
        for label, method, curve in curves[scene]:
            ax.plot(curve.index, curve.values, color=method_color(label), label=label,
                    **LINE_STYLES[method_kind(store, method)])
        ax.set_title(scene)
        ax.set_xlabel("frame")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_ylabel("PSNR (dB)")
    for ax in axes[len(scenes):]:
        ax.set_axis_off()
    legend: dict = {}  # every method of every panel, once
    for ax in axes[:len(scenes)]:
        for handle, label in zip(*ax.get_legend_handles_labels(), strict=True):
            legend.setdefault(label, handle)
    fig.legend(list(legend.values()), list(legend), loc="outside right upper")
    return fig


def _means(store: StoreView, metric: str) -> pd.Series:
    """label -> mean over scenes of the per-scene mean over seeds of `metric`."""
    rows = store.metric(metric)
    return rows.groupby(["label", "scene"])["value"].mean().groupby("label").mean()


def _scatter(ax: Axes, store: StoreView, x: pd.Series, psnr: pd.Series, xlabel: str) -> None:
    methods = store.runs.drop_duplicates("label").set_index("label")["method"]
    labels = [lab for lab in x.index if lab in psnr.index]
    short = [lab.split(" (")[0] for lab in labels]
    if len(set(short)) < len(short):  # several expert sets: the variant tells the points apart
        short = labels
    for lab, text in zip(labels, short, strict=True):
        kind = method_kind(store, methods[lab])
        ax.scatter(x[lab], psnr[lab], color=method_color(lab), marker=MARKERS[kind],
                   s=60 if kind == "mixture" else 22, zorder=3, label=lab, edgecolors="none")
        ax.annotate(text, (x[lab], psnr[lab]), xytext=(3, 3), textcoords="offset points", fontsize=5.5)
    values = x[labels]
    if len(values) and values.min() > 0 and values.max() / values.min() > 20:
        ax.set_xscale("log")  # experts and mixtures can differ by orders of magnitude
    ax.set_xlabel(xlabel)
    ax.set_ylabel("PSNR (dB)")


@register_figure(
    "efficiency",
    "PSNR against render FPS and against peak render memory per method, at the scene's "
    "resolution (paper Table 3); needs fps / render_memory_mb rows, measured only on CUDA",
)
def efficiency_figure(store: StoreView) -> Figure:
    """Two panels: PSNR against FPS (`fps`), PSNR against peak render memory
    (`render_memory_mb`); one point per method and variant (mean over scenes of the per-scene
    mean over seeds); only methods with both numbers."""
    fps = _means(store, "fps")
    if len(fps) == 0:
        why = store.note("fps")
        raise store.missing("no render FPS rows (fps)", "--experts 2 --router vapr",
                            " on a CUDA machine (FPS is measured only there"
                            + (f"; {why})" if why else ")"))
    psnr = _means(store, "psnr")
    memory = _means(store, "render_memory_mb")
    fig = new_figure(PAGE_WIDTH, 2.6)
    ax_fps, ax_mem = fig.subplots(1, 2)
    _scatter(ax_fps, store, fps, psnr, "render FPS")
    ax_fps.set_title("Quality against speed")
    devices = sorted({str(d) for d in store.metric("fps")["device"].dropna()})
    fig.suptitle("Rendering at the scene's resolution" + (f", {', '.join(devices)}" if devices else ""))
    if len(memory):
        _scatter(ax_mem, store, memory, psnr, "peak render memory (MB)")
        ax_mem.set_title("Quality against memory")
    else:
        why = store.note("render_memory_mb")
        ax_mem.set_axis_off()
        ax_mem.text(0.5, 0.5, "render memory not stored" + (f":\n{why}" if why else ""),
                    ha="center", va="center", transform=ax_mem.transAxes, wrap=True)
    return fig


__all__ = ["per_frame_figure", "efficiency_figure", "method_kind", "method_order", "LINE_STYLES"]
