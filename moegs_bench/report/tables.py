"""Tables are views of the tidy result rows (docs/results.md).

A table is a builder `(df, **opts) -> DataFrame` registered by name with `@register_table`;
`build_table(name, df, **opts)` runs one, `format_table(table, fmt)` renders it as markdown,
CSV or LaTeX. Builders may return columns with a level named "stat" holding "mean" and "std";
`format_table` shows those as "mean ± std" (std only where it is defined, i.e. several seeds).
Builders put footnotes (e.g. why LPIPS is missing) in `table.attrs["footnotes"]`.
"""

from __future__ import annotations

import csv
import inspect
import io
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from ..data.datasets import load_dataset
from ..errors import ConfigError
from . import leaderboard as lb

TIDY_COLUMNS = ["dataset", "scene", "method", "variant", "seed", "metric", "value"]
METRIC_LABELS = {
    "psnr": "PSNR",
    "ssim": "SSIM",
    "lpips": "LPIPS",
    "fps": "FPS",
    "memory_mb": "Memory (MB)",
    "train_hours": "Training (h)",
    "psnr_min": "PSNR min",
    "psnr_max": "PSNR max",
    "psnr_mean": "PSNR mean",
}
DEFAULT_FLOATFMT = {"psnr": 2, "ssim": 3, "lpips": 3}  # the paper's precision (Tables 8, 9)
DASH = {"markdown": "—", "latex": "--", "csv": "n/a"}
AVERAGE = "Average"
STAT = "stat"

Builder = Callable[..., pd.DataFrame]


@dataclass(frozen=True)
class TableSpec:
    name: str
    description: str
    builder: Builder


TABLES: dict[str, TableSpec] = {}


def register_table(name: str, description: str) -> Callable[[Builder], Builder]:
    """Decorator: register `builder(df, **opts) -> DataFrame` as table `name`."""

    def decorate(builder: Builder) -> Builder:
        if name in TABLES:
            raise ValueError(f"table {name!r} is already registered")
        TABLES[name] = TableSpec(name, description, builder)
        return builder

    return decorate


def build_table(name: str, df: pd.DataFrame, **opts: Any) -> pd.DataFrame:
    """Build registered table `name` from tidy rows; ConfigError for an unknown name or option."""
    spec = TABLES.get(name)
    if spec is None:
        raise ConfigError(f"unknown table {name!r}; valid tables: {', '.join(sorted(TABLES))}")
    missing = [c for c in TIDY_COLUMNS if c not in df.columns]
    if missing:
        raise ConfigError(f"table {name}: results lack columns {missing}")
    try:
        inspect.signature(spec.builder).bind(df, **opts)
    except TypeError as exc:
        raise ConfigError(f"table {name}: {exc}") from None
    table = spec.builder(df, **opts)
    table.attrs.setdefault("title", spec.description)
    table.attrs.setdefault("footnotes", [])
    return table


# -- shared row selection --------------------------------------------------------------------
def run_label(method: str, variant: str) -> str:
    """Row label of a method: the variant is shown when it is not "default"."""
    return method if variant == "default" else f"{method} ({variant})"


def metric_label(metric: str) -> str:
    return METRIC_LABELS.get(metric.lower(), metric)


def _select_dataset(df: pd.DataFrame, dataset: str | None, table: str) -> pd.DataFrame:
    present = sorted(df["dataset"].astype(str).unique())
    if dataset is None:
        if len(present) > 1:
            raise ConfigError(
                f"table {table}: results hold several datasets ({', '.join(present)}); "
                "choose one with dataset="
            )
        return df
    if dataset not in present:
        raise ConfigError(
            f"table {table}: no results for dataset {dataset!r}; "
            f"present: {', '.join(present) or 'none'}"
        )
    return df[df["dataset"] == dataset]


def _labelled(df: pd.DataFrame) -> pd.DataFrame:
    """Copy of the tidy rows with `label` (method + variant) and lower-case `metric`."""
    out = df.copy()
    out["label"] = [
        run_label(str(m), str(v)) for m, v in zip(out["method"], out["variant"], strict=True)
    ]
    out["metric"] = out["metric"].astype(str).str.lower()
    out["scene"] = out["scene"].astype(str)
    return out


def _ordered(
    values: Iterable[str], wanted: Sequence[str] | None, what: str, table: str
) -> list[str]:
    """`wanted` in its order (each must be present), else the present values in first-seen order."""
    present = list(dict.fromkeys(values))
    if wanted is None:
        return present
    unknown = [w for w in wanted if w not in present]
    if unknown:
        raise ConfigError(f"table {table}: unknown {what} {unknown}; present: {', '.join(present)}")
    return list(wanted)


def _select_labels(df: pd.DataFrame, methods: Sequence[str] | None, table: str) -> list[str]:
    """Row labels to show; `methods` may name a method (all its variants) or a full label."""
    labels = list(dict.fromkeys(df["label"]))
    if methods is None:
        return labels
    out: list[str] = []
    for m in methods:
        hit = [lab for lab in labels if lab == m or lab.split(" (")[0] == m]
        if not hit:
            raise ConfigError(
                f"table {table}: no results for method {m!r}; present: {', '.join(labels)}"
            )
        out += [lab for lab in hit if lab not in out]
    return out


# -- the main table ----------------------------------------------------------------------------
def _seed_means(rows: pd.DataFrame) -> pd.DataFrame:
    """Per (label, scene, metric, seed) value (mean if a seed appears twice)."""
    return (
        rows.groupby(["label", "scene", "metric", "seed"], sort=False)["value"].mean().reset_index()
    )


def _average_stats(
    per_seed: pd.DataFrame,
    label: str,
    metric: str,
    scenes: list[str],
    scene_means: dict[str, float],
) -> tuple[float, float]:
    """Average over scenes of the per-scene means (NaN unless every scene has a value); std over
    the seeds whose runs cover every scene (NaN with fewer than two such seeds)."""
    if any(math.isnan(scene_means.get(s, math.nan)) for s in scenes):
        return math.nan, math.nan
    mean = float(np.mean([scene_means[s] for s in scenes]))
    sub = per_seed[(per_seed["label"] == label) & (per_seed["metric"] == metric)]
    wide = sub.pivot_table(index="seed", columns="scene", values="value", aggfunc="mean")
    full = wide.reindex(columns=scenes).dropna()
    std = float(full.mean(axis=1).std(ddof=1)) if len(full) > 1 else math.nan
    return mean, std


def _note_text(
    notes: pd.DataFrame | None, dataset: str | None, metric: str, labels: list[str]
) -> list[str]:
    """Distinct notes on `metric` of the shown runs (e.g. "unavailable: no weights")."""
    if notes is None or len(notes) == 0:
        return []
    nt = _labelled(notes)
    nt = nt[(nt["metric"] == metric) & nt["label"].isin(labels)]
    if dataset is not None:
        nt = nt[nt["dataset"] == dataset]
    return list(dict.fromkeys(str(n) for n in nt["note"]))


@register_table(
    "main", "Per-scene PSNR / SSIM / LPIPS of every method and variant (paper Tables 1, 2, 8, 9)"
)
def main_table(
    df: pd.DataFrame,
    dataset: str | None = None,
    metrics: Sequence[str] = ("psnr", "ssim", "lpips"),
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
    other methods too, `paper=False` shows ours only."""
    if paper not in (True, False, "all"):
        raise ConfigError(f"table main: paper must be true, false or 'all'; got {paper!r}")
    rows = _labelled(_select_dataset(df, dataset, "main"))
    metrics = [m.lower() for m in metrics]
    scene_list = _ordered(rows["scene"], scenes, "scenes", "main")
    labels = _select_labels(rows, methods, "main")
    rows = rows[rows["label"].isin(labels) & rows["scene"].isin(scene_list)]
    has_run = set(zip(rows["label"], rows["scene"], strict=True))
    per_seed = _seed_means(rows[rows["metric"].isin(metrics)])
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
                avg, avg_std = _average_stats(per_seed, label, m, scene_list, scene_means)
                table.loc[label, (AVERAGE, metric_label(m), "mean")] = avg
                table.loc[label, (AVERAGE, metric_label(m), "std")] = avg_std
        no_run += sum((label, s) not in has_run for s in scene_list)

    table.attrs["footnotes"] = _main_footnotes(
        stats, missing_metric, no_run, notes, dataset, labels, average and partial
    )
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
        reasons = _note_text(notes, dataset, m, labels)
        why = "; ".join(reasons) if reasons else "unavailable (not measured)"
        out.append(f"{metric_label(m)} missing in {k} cell(s): {why}")
    if no_run:
        out.append(f"{no_run} (method, scene) pair(s) have no completed run.")
    if partial_average:
        out.append(f"{AVERAGE} is left blank where a method lacks a value for some scene.")
    return out


PAPER_ROW = "(paper)"
DATASET_TITLES = {"n3v": "N3V", "technicolor": "Technicolor", "hypernerf": "HyperNeRF"}


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
    with `all_methods`, the paper's other methods at the end); footnotes say where from."""
    ref = lb.main_reference(dataset)
    ref = ref[ref["metric"].isin(metrics)]
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
    out.attrs["footnotes"] = list(table.attrs["footnotes"]) + _paper_footnotes(
        dataset, sources, marks, computed
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
        f"{DATASET_TITLES[dataset]} ({_source_text(sources)}), measured on {lb.PAPER_GPU}; "
        "a dash there means the paper prints no such value."
    ]
    out += [f"{', '.join(labels)}: {note}" for note, labels in marks.items()]
    if computed:
        out.append(
            f"{AVERAGE} of a {PAPER_ROW} row over a subset of scenes (or where the paper prints "
            "none): the mean of the paper's per-scene values over the shown scenes."
        )
    return out


# -- router ablation (paper Table 4) --------------------------------------------------------------
ROUTER_LABELS = {
    "moe-pixel": "Pixel Router",
    "moe-volume": "Volume Router",
    "moe-vapr": "Volume-aware Pixel Router",
}
BASELINE_LABELS = {
    "uniform-average": "Uniform average",
    "oracle-pixel": "Oracle (per pixel)",
    "oracle-image": "Oracle (per image)",
}
ROUTER_PAPER_TABLE = 4


def _scene_average_row(
    rows: pd.DataFrame, label: str, metrics: list[str], scenes: list[str], columns: pd.Index
) -> pd.Series:
    """Mean over `scenes` of the per-scene means over seeds, and its std over seeds (NaN when a
    scene is missing, resp. with fewer than two seeds covering every scene)."""
    per_seed = _seed_means(rows)
    out = pd.Series(np.nan, index=columns)
    for m in metrics:
        sub = per_seed[(per_seed["label"] == label) & (per_seed["metric"] == m)]
        scene_means = sub.groupby("scene")["value"].mean().to_dict()
        mean, std = _average_stats(per_seed, label, m, scenes, scene_means)
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
    metrics: Sequence[str] = ("psnr", "ssim", "lpips"),
    variants: Sequence[str] | None = None,
    baselines: bool = True,
    paper: bool = True,
    notes: pd.DataFrame | None = None,
) -> pd.DataFrame:
    """Rows: the routers (methods moe-pixel, moe-volume, moe-vapr), then with `baselines` the
    blends uniform-average, oracle-pixel, oracle-image where present, one block per variant
    (expert set, "a+b+c"; the variant is shown when there are several); with `paper`, the
    paper's Table 4 rows "<router> (paper, N3V)". Columns: (metric, stat), the mean over the
    block's scenes of the per-scene mean over seeds, and its std over seeds. `notes` (the
    `bench.store.notes` frame) explains missing metrics in the footnotes."""
    metrics = [m.lower() for m in metrics]
    names = {**ROUTER_LABELS, **(BASELINE_LABELS if baselines else {})}
    rows = _labelled(_select_dataset(df, dataset, "router-ablation"))
    rows = rows[rows["method"].isin(list(names)) & rows["metric"].isin(metrics)]
    if len(rows) == 0 and not paper:
        raise ConfigError(
            f"table router-ablation: no results for methods {', '.join(ROUTER_LABELS)}"
        )
    variant_list = _ordered(rows["variant"].astype(str), variants, "variants", "router-ablation")
    columns = pd.MultiIndex.from_product(
        [[metric_label(m) for m in metrics], ["mean", "std"]], names=["metric", STAT]
    )
    out: dict[str, pd.Series] = {}
    footnotes: list[str] = []
    gaps: dict[tuple[str, str], list[str]] = {}  # (metric, reason) -> row labels
    for v in variant_list:
        block = rows[rows["variant"] == v]
        routers = block[block["method"].isin(list(ROUTER_LABELS))]
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
                    why = _note_text(notes, dataset, m, [run_label(method, v)])
                    reason = "; ".join(why) or "no value for some of the block's scenes"
                    gaps.setdefault((metric_label(m), reason), []).append(label)
    # one footnote per reason, naming every row it blanks (not one copy of the reason per row)
    footnotes += [f"{', '.join(labels)}: {metric} blank ({reason})." for (metric, reason), labels in gaps.items()]
    if paper:
        ref = lb.load_paper(table=ROUTER_PAPER_TABLE)
        where = ", ".join(DATASET_TITLES[d] for d in dict.fromkeys(ref["dataset"]))
        for method, name in ROUTER_LABELS.items():
            hit = ref[(ref["method"] == method) & (ref["scene"] == lb.AVERAGE_SCENE)]
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
    table = pd.DataFrame.from_dict(out, orient="index")
    table = table.reindex(columns=columns) if len(table) else pd.DataFrame(columns=columns)
    table.index.name = "router"
    table.attrs["footnotes"] = footnotes
    return table


# -- one published table ---------------------------------------------------------------------------
@register_table("paper", "One of the paper's published tables (option paper_table=1..13)")
def paper_table(df: pd.DataFrame, paper_table: int = 1, dataset: str | None = None) -> pd.DataFrame:
    """The paper's Table `paper_table` as printed (leaderboards/paper); `df` (our results) is not
    used. Rows: method labels ("stg †" where the paper marks the row); columns (scene, metric)
    when the table has several scenes, else metric. attrs["floatfmt"] keeps the printed decimals."""
    try:
        number = int(paper_table)
    except (TypeError, ValueError):
        raise ConfigError(
            f"table paper: paper_table must be a table number; got {paper_table!r}"
        ) from None
    ref = lb.load_paper(table=number)
    if dataset is not None:
        ref = ref[ref["dataset"] == dataset]
        if len(ref) == 0:
            raise ConfigError(f"table paper: Table {number} has no values for dataset {dataset!r}")
    ref = ref.assign(
        label=[
            (run_label(m, v) + (f" {lb.paper_mark(n)}" if lb.paper_mark(n) else ""))
            for m, v, n in zip(ref["method"], ref["variant"], ref["note"], strict=True)
        ],
        scene=[AVERAGE if s == lb.AVERAGE_SCENE else s for s in ref["scene"]],
        mlabel=[metric_label(m) for m in ref["metric"]],
    )
    labels = list(dict.fromkeys(ref["label"]))
    scenes = list(dict.fromkeys(ref["scene"]))
    order = sorted(dict.fromkeys(ref["metric"]), key=lb.PAPER_METRICS.index)
    mlabels = [metric_label(m) for m in order]
    if len(scenes) > 1:
        wide = ref.pivot_table(index="label", columns=["scene", "mlabel"], values="value")
        cols = [(s, m) for s in scenes for m in mlabels if (s, m) in wide.columns]
        table = wide.reindex(index=labels, columns=pd.MultiIndex.from_tuples(cols))
        table.columns.names = ["scene", "metric"]
    else:
        wide = ref.pivot_table(index="label", columns="mlabel", values="value")
        table = wide.reindex(index=labels, columns=mlabels)
        table.columns.name = "metric"
    table.index.name = "method"
    datasets = ", ".join(DATASET_TITLES[d] for d in dict.fromkeys(ref["dataset"]))
    table.attrs["title"] = f"Paper Table {number}: {lb.PAPER_TABLES.get(number, '')} ({datasets})"
    table.attrs["floatfmt"] = {
        metric_label(m).lower(): max(lb.printed_decimals(p) for p in grp["printed"])
        for m, grp in ref.groupby("metric", sort=False)
    }
    notes = list(dict.fromkeys(part for n in ref["note"] if n for part in n.split("; ")))
    table.attrs["footnotes"] = [
        f"Published values of the MoE-GS paper, Table {number}, as printed; measured on "
        f"{lb.PAPER_GPU}.",
        *notes,
    ]
    return table


@register_table(
    "overview", "Every metric of every method and variant, averaged over scenes and seeds"
)
def overview_table(
    df: pd.DataFrame, dataset: str | None = None, metrics: Sequence[str] | None = None
) -> pd.DataFrame:
    """Rows: method labels; columns: metrics (sorted, or `metrics` in order). Each value is the
    mean over scenes of the per-scene mean over seeds."""
    rows = _labelled(_select_dataset(df, dataset, "overview"))
    wanted = None if metrics is None else [m.lower() for m in metrics]
    metric_list = _ordered(sorted(rows["metric"].unique()), wanted, "metrics", "overview")
    rows = rows[rows["metric"].isin(metric_list)]
    per_scene = rows.groupby(["label", "scene", "metric"], sort=False)["value"].mean()
    table = per_scene.groupby(level=["label", "metric"], sort=False).mean().unstack("metric")
    labels = list(dict.fromkeys(rows["label"]))
    table = table.reindex(index=labels, columns=metric_list)
    table.index.name = "method"
    table.columns = pd.Index([metric_label(m) for m in metric_list], name="metric")
    table.attrs["footnotes"] = ["Mean over scenes of the per-scene mean over seeds."]
    return table


# -- formatting --------------------------------------------------------------------------------
@dataclass
class _Column:
    header: tuple[str, ...]
    mean: list[Any]
    std: list[Any] | None
    decimals: int | None


def _decimals(
    header: tuple[str, ...], values: list[Any], floatfmt: Mapping[str, int]
) -> int | None:
    """Decimals for a column: the first header level naming a metric in `floatfmt` (also
    "<metric>_<suffix>"), else 0 for whole numbers and 3 otherwise; None for text columns."""
    for level in header:
        key = str(level).lower()
        for metric, dec in floatfmt.items():
            if key == metric or key.startswith(f"{metric}_") or key.startswith(f"{metric} "):
                return dec
    nums = [v for v in values if isinstance(v, (int, float, np.number)) and not isinstance(v, bool)]
    if len(nums) < sum(not _missing(v) for v in values):
        return None
    finite = [float(v) for v in nums if math.isfinite(float(v))]
    return 0 if finite and all(v.is_integer() for v in finite) else 3


def _missing(value: Any) -> bool:
    return value is None or (isinstance(value, (float, np.floating)) and math.isnan(value))


def _columns(table: pd.DataFrame, floatfmt: Mapping[str, int]) -> list[_Column]:
    """Columns of `table`, folding a "stat" level into (mean, std) pairs."""
    cols = table.columns
    names = list(cols.names) if isinstance(cols, pd.MultiIndex) else [cols.name]
    keys = [c if isinstance(c, tuple) else (c,) for c in cols]
    if STAT not in names:
        out = []
        for key, col in zip(keys, cols, strict=True):
            vals = table[col].tolist()
            out.append(
                _Column(tuple(str(k) for k in key), vals, None, _decimals(key, vals, floatfmt))
            )
        return out
    si = names.index(STAT)
    out = []
    for key in dict.fromkeys(k[:si] + k[si + 1 :] for k in keys):
        full = {k[si]: k for k in keys if k[:si] + k[si + 1 :] == key}
        mean = table[full["mean"]].tolist() if "mean" in full else [math.nan] * len(table)
        std = table[full["std"]].tolist() if "std" in full else None
        out.append(_Column(tuple(str(k) for k in key), mean, std, _decimals(key, mean, floatfmt)))
    return out


def _num(value: Any, decimals: int | None) -> str:
    return str(value) if decimals is None else f"{float(value):.{decimals}f}"


def _cell(col: _Column, i: int, fmt: str) -> str:
    """One rendered cell: "mean ± std" (std shown where finite), the dash where missing."""
    mean = col.mean[i]
    if _missing(mean):
        return DASH[fmt]
    text = _num(mean, col.decimals)
    if col.decimals is None:
        return latex_escape(text) if fmt == "latex" else text
    std = col.std[i] if col.std is not None else math.nan
    if not _missing(std) and fmt != "csv":
        pm = " $\\pm$ " if fmt == "latex" else " ± "
        text += pm + _num(std, col.decimals)
    return text


def _index_parts(table: pd.DataFrame) -> tuple[list[str], list[tuple[str, ...]]]:
    names = [str(n) if n is not None else "" for n in table.index.names]
    rows = [tuple(str(x) for x in (v if isinstance(v, tuple) else (v,))) for v in table.index]
    return names, rows


def format_table(
    table: pd.DataFrame,
    fmt: str = "markdown",
    floatfmt: Mapping[str, int] | None = None,
    title: str | None = None,
) -> str:
    """Render a table: "markdown" (paper-style two-row headers), "csv" (mean and std in separate
    columns, footnotes left out) or "latex" (booktabs). `floatfmt` maps metric -> decimals
    (default PSNR 2, SSIM/LPIPS 3). Footnotes come from `table.attrs["footnotes"]`."""
    if fmt not in DASH:
        raise ConfigError(f"unknown table format {fmt!r}; valid formats: {', '.join(DASH)}")
    # a builder may fix decimals in attrs["floatfmt"] (e.g. the paper's printed precision)
    cols = _columns(
        table, {**DEFAULT_FLOATFMT, **table.attrs.get("floatfmt", {}), **(floatfmt or {})}
    )
    index_names, index_rows = _index_parts(table)
    footnotes = [str(f) for f in table.attrs.get("footnotes", [])]
    render = {"markdown": _markdown, "csv": _csv, "latex": _latex}[fmt]
    return render(cols, index_names, index_rows, footnotes, title)


def _header_levels(cols: list[_Column]) -> int:
    return max((len(c.header) for c in cols), default=1)


def _level(col: _Column, level: int, depth: int) -> str:
    """Header text of `col` at `level` (short headers are padded at the top)."""
    pad = ("",) * (depth - len(col.header)) + col.header
    return pad[level]


def _spans(cols: list[_Column], level: int, depth: int) -> list[tuple[str, int]]:
    """Runs of equal header text at `level` (within equal parents): (text, width)."""
    spans: list[tuple[str, int]] = []
    prev = None
    for col in cols:
        key = tuple(_level(col, lv, depth) for lv in range(level + 1))
        if spans and key == prev:
            spans[-1] = (spans[-1][0], spans[-1][1] + 1)
        else:
            spans.append((key[-1], 1))
        prev = key
    return spans


def _markdown(cols, index_names, index_rows, footnotes, title) -> str:
    depth = _header_levels(cols)
    n_idx = len(index_names)
    header_rows = []
    for lv in range(depth):
        cells = []
        for text, width in _spans(cols, lv, depth):
            cells += [text] + [""] * (width - 1)
        first = index_names if lv == 0 else [""] * n_idx
        header_rows.append(first + cells)
    body = [list(idx) + [_cell(c, i, "markdown") for c in cols] for i, idx in enumerate(index_rows)]
    grid = [[cell.replace("|", "\\|") for cell in row] for row in header_rows + body]
    widths = [max(3, *(len(row[j]) for row in grid)) for j in range(len(grid[0]))]

    def line(row: list[str]) -> str:
        cells = [
            c.ljust(w) if j < n_idx else c.rjust(w)
            for j, (c, w) in enumerate(zip(row, widths, strict=True))
        ]
        return "| " + " | ".join(cells) + " |"

    sep = ["-" * w if j < n_idx else "-" * (w - 1) + ":" for j, w in enumerate(widths)]
    lines = [f"**{title}**", ""] if title else []
    lines += [line(grid[0]), "| " + " | ".join(sep) + " |"]
    lines += [line(row) for row in grid[1:]]
    if footnotes:
        lines += [""] + [f"- {f}" for f in footnotes]
    return "\n".join(lines) + "\n"


def _csv(cols, index_names, index_rows, footnotes, title) -> str:
    header = list(index_names)
    for c in cols:
        name = " ".join(h for h in c.header if h)
        header.append(name)
        if c.std is not None and any(not _missing(s) for s in c.std):
            header.append(f"{name} std")
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(header)
    for i, idx in enumerate(index_rows):
        row = list(idx)
        for c in cols:
            row.append(_cell(c, i, "csv"))
            if c.std is not None and any(not _missing(s) for s in c.std):
                row.append(DASH["csv"] if _missing(c.std[i]) else _num(c.std[i], c.decimals))
        writer.writerow(row)
    return buf.getvalue()


_LATEX_ESCAPES = {
    "\\": r"\textbackslash{}",
    "&": r"\&",
    "%": r"\%",
    "$": r"\$",
    "#": r"\#",
    "_": r"\_",
    "{": r"\{",
    "}": r"\}",
    "~": r"\textasciitilde{}",
    "^": r"\textasciicircum{}",
    "±": r"$\pm$",
    "–": "--",
    "—": "---",
}


def latex_escape(text: str) -> str:
    return "".join(_LATEX_ESCAPES.get(ch, ch) for ch in text)


def _latex(cols, index_names, index_rows, footnotes, title) -> str:
    depth = _header_levels(cols)
    n_idx = len(index_names)
    lines = ["% needs \\usepackage{booktabs}", "\\begin{table}[t]", "\\centering"]
    if title:
        lines.append(f"\\caption{{{latex_escape(title)}}}")
    lines += [f"\\begin{{tabular}}{{{'l' * n_idx}{'r' * len(cols)}}}", "\\toprule"]
    for lv in range(depth):
        first = [latex_escape(n) for n in index_names] if lv == depth - 1 else [""] * n_idx
        cells, rules, start = [], [], n_idx + 1
        for text, width in _spans(cols, lv, depth):
            if width > 1:
                cells.append(f"\\multicolumn{{{width}}}{{c}}{{{latex_escape(text)}}}")
            else:
                cells.append(latex_escape(text))
            if lv < depth - 1 and text:
                rules.append(f"\\cmidrule(lr){{{start}-{start + width - 1}}}")
            start += width
        lines.append(" & ".join(first + cells) + " \\\\")
        if rules:
            lines.append(" ".join(rules))
    lines.append("\\midrule")
    for i, idx in enumerate(index_rows):
        cells = [latex_escape(x) for x in idx] + [_cell(c, i, "latex") for c in cols]
        lines.append(" & ".join(cells) + " \\\\")
    lines += ["\\bottomrule", "\\end{tabular}"]
    if footnotes:
        lines.append(
            "\\par\\smallskip{\\footnotesize "
            + " \\\\ ".join(latex_escape(f) for f in footnotes)
            + "}"
        )
    lines.append("\\end{table}")
    return "\n".join(lines) + "\n"
