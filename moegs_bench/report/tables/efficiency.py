"""Efficiency tables: PSNR, render FPS, memory and Gaussian count of a router mixture's experts,
the mixture and its pruned versions (`efficiency`, paper Table 3), and the ablation of
single-pass rendering and pruning (`efficiency-ablation`, paper Table 5), each with the
paper's values beside ours.

A pruned mixture is any stored method `<mixture>-p<NN>` (NN: the percentage of Gaussians
pruned) of the mixture's expert set. What each number is, and why the paper's "Memory" is read
as storage, is in docs/metrics.md ("Efficiency tables").
"""

from __future__ import annotations

import re
from collections.abc import Iterable

import numpy as np
import pandas as pd

from ...bench.efficiency import multipass_metric
from ...errors import ConfigError
from .. import leaderboard as lb
from ..format import STAT
from .common import (
    average_stats,
    dataset_label,
    labelled,
    note_text,
    run_label,
    seed_means,
    select_dataset,
)
from .registry import register_table

MIXTURE = "moe-vapr"  # the paper's MoE-GS: the Volume-aware Pixel Router
FULL_PRUNING = 55  # Table 5's full model: the paper's lighter pruning (Table 3: -0.02 dB PSNR)
PAPER_ROW = "(paper)"

# column -> our metric (single-pass rows); FPS at 1352x1014, the paper's N3V test resolution
COLUMNS: dict[str, str] = {
    "PSNR": "psnr",
    "FPS": "fps_n3v",
    "FPS (scene)": "fps",
    "Memory (MB)": "model_mb",
    "Render memory (MB)": "render_memory_mb_n3v",
    "Gaussians": "num_gaussians",
}
TIMED = ("fps_n3v", "fps", "render_memory_mb_n3v")  # metrics that depend on the render mode
PAPER_COLUMNS = {"psnr": "PSNR", "fps": "FPS", "memory_mb": "Memory (MB)"}  # published -> column
FLOATFMT = {"psnr": 2, "fps": 1, "memory": 1, "render memory": 1, "gaussians": 0}

# Table 5's rows: (label, pruned, multi-pass, the paper's variant)
ABLATION = (
    ("w/o Single-Pass & Pruning", False, True, "N=3, w/o single-pass & pruning"),
    ("w/o Single-Pass", True, True, "N=3, w/o single-pass"),
    ("w/o Pruning", False, False, "N=3, w/o pruning"),
    ("MoE-GS (full)", True, False, "N=3"),
)
PAPER_N = {3: 2, 5: 3}  # experts of the paper's mixture in Tables 3 and 5
_RESOLUTION = re.compile(r"^(\d+x\d+):")  # eval.efficiency's notes begin with the image size


def rule_suffix(rule: str, table: str) -> str:
    """The method-name suffix of pruning rule `rule` ("" for Eq. 10's importance, "-max",
    "-sigmoid"); ConfigError naming the table's option otherwise."""
    from ...moe.prune import RULE_SUFFIX

    if rule not in RULE_SUFFIX:
        raise ConfigError(f"table {table}: rule must be one of {', '.join(RULE_SUFFIX)}; got {rule!r}")
    return RULE_SUFFIX[rule]


def pruned_methods(methods: Iterable[str], mixture: str, suffix: str = "") -> dict[int, str]:
    """Pruned versions of `mixture` among `methods`: {NN: "<mixture>-p<NN><suffix>"}, NN
    ascending (0 < NN < 100); suffix: the pruning rule's (`rule_suffix`)."""
    pattern = re.compile(rf"{re.escape(mixture)}-p(\d{{1,2}}){re.escape(suffix)}")
    found = {int(m.group(1)): m.group(0) for m in map(pattern.fullmatch, set(map(str, methods))) if m}
    return {nn: found[nn] for nn in sorted(found) if 0 < nn < 100}


def mixture_run_hint(mixture: str, n: int) -> str:
    """The command that stores `mixture` over the dataset's set of `n` experts, on CUDA."""
    router = mixture.removeprefix("moe-")
    return f"moegs-bench run --experts {n} --router {router} (on a CUDA machine: FPS is measured only there)"


def pruned_run_hint(mixture: str, nns: Iterable[int], n: int, rule: str = "importance") -> str:
    """The command that stores the pruned versions `<mixture>-p<NN>` (gate-aware pruning, Eq. 10)."""
    router = mixture.removeprefix("moe-")
    extra = "" if rule == "importance" else f" --prune-rule {rule}"
    return f"make with `moegs-bench run --experts {n} --router {router} --prune {','.join(map(str, nns))}{extra}`"


def _pick_variant(rows: pd.DataFrame, mixture: str, variant: str | None, n_paper: int, table: str,
                  suffix: str = "") -> tuple[str, list[str]]:
    """The expert set whose mixture the table shows, and every set the mixture has: `variant`
    if given, else one with pruned runs, then one of the paper's size, then the first sorted."""
    mine = rows[rows["method"] == mixture]
    variants = sorted(set(mine["variant"].astype(str)))
    if not variants:
        raise ConfigError(f"table {table}: no {mixture} runs; make one with `{mixture_run_hint(mixture, n_paper)}`")
    if variant is not None:
        if variant not in variants:
            raise ConfigError(f"table {table}: no {mixture} runs of expert set {variant!r}; "
                              f"present: {', '.join(variants)}")
        return variant, variants
    pruned = set(rows.loc[rows["method"].isin(list(pruned_methods(rows["method"], mixture, suffix).values())),
                          "variant"])
    return min(variants, key=lambda v: (v not in pruned, len(v.split("+")) != n_paper, v)), variants


def _expert_labels(variant: str) -> list[str]:
    """Run labels of the experts of expert set "a+b@preset": "a", "b (preset)"."""
    out = []
    for label in variant.split("+"):
        name, _, preset = label.partition("@")
        out.append(run_label(name, preset or "default"))
    return out


def _columns() -> pd.MultiIndex:
    return pd.MultiIndex.from_product([list(COLUMNS), ["mean", "std"]], names=["metric", STAT])


def _our_row(rows: pd.DataFrame, label: str, metrics: dict[str, str], scenes: list[str]) -> pd.Series:
    """Column -> the mean over `scenes` of the per-scene mean over seeds of its metric, and the
    std over the seeds covering every scene (NaN where a scene lacks the metric)."""
    out = pd.Series(np.nan, index=_columns())
    per_seed = seed_means(rows[rows["label"] == label])
    for column, metric in metrics.items():
        sub = per_seed[per_seed["metric"] == metric]
        scene_means = sub.groupby("scene")["value"].mean().to_dict()
        out[(column, "mean")], out[(column, "std")] = average_stats(per_seed, label, metric, scenes, scene_means)
    return out


def _paper_row(ref: pd.DataFrame, method: str, variant: str) -> pd.Series | None:
    """The paper's average values of (method, variant) over the table's columns, or None."""
    hit = ref[(ref["method"] == method) & (ref["variant"] == variant) & (ref["scene"] == lb.AVERAGE_SCENE)]
    if len(hit) == 0:
        return None
    out = pd.Series(np.nan, index=_columns())
    for metric, value in zip(hit["metric"], hit["value"], strict=True):
        if metric in PAPER_COLUMNS:
            out[(PAPER_COLUMNS[metric], "mean")] = value
    return out


def _multipass(metrics: dict[str, str]) -> dict[str, str]:
    return {c: multipass_metric(m) if m in TIMED else m for c, m in metrics.items()}


def _common_footnotes(rows: pd.DataFrame, shown: list[str], scenes: list[str], mixture: str, variant: str,
                      variants: list[str], notes: pd.DataFrame | None, dataset: str | None,
                      metrics: Iterable[str]) -> list[str]:
    """What the columns hold, where the numbers come from and why some are blank."""
    n = len(variant.split("+"))
    out = [f"{mixture} over expert set {variant} (N={n})"
           + (f"; other expert sets stored: {', '.join(v for v in variants if v != variant)} "
              "(--option variant=...)." if len(variants) > 1 else ".")]
    out.append(f"Averaged over {len(scenes)} scene(s) ({', '.join(scenes)}): the mean over scenes of the per-scene "
               "mean over seeds; ± is the std over seeds.")
    sizes = sorted(set(_resolutions(notes, dataset, shown)))
    out.append("FPS: render FPS at 1352x1014, the paper's N3V test resolution (the test cameras' intrinsics "
               "scaled: fps_n3v); FPS (scene): at the scene's resolution"
               + (f" ({', '.join(sizes)})" if sizes else "") + ". Each: the median over the test views of "
               "synchronised renders (docs/metrics.md, Efficiency rows).")
    out.append("Memory (MB): the model's storage size (model_mb: its files on disk; a mixture's adds its experts' "
               "model files and its own router or pruned model), the reading of the paper's Memory (the paper "
               "prints the same Memory with and without single-pass rendering, which a render-time peak would not "
               "show). Render memory (MB): the peak GPU memory while rendering at 1352x1014 (render_memory_mb_n3v).")
    timed = rows[rows["label"].isin(shown) & rows["metric"].isin(list(TIMED))]
    if "device" in rows.columns and len(timed):
        devices = sorted({str(d) for d in timed["device"].dropna()})
        if devices:
            out.append(f"Timed on {', '.join(devices)}.")
    present = set(zip(rows["label"], rows["metric"], strict=True))
    gaps: dict[tuple[str, str], list[str]] = {}  # (runs, reason) -> metrics: one footnote per reason
    for metric in dict.fromkeys(metrics):
        for lab in shown:
            if lab in set(rows["label"]) and (lab, metric) not in present:
                gaps.setdefault((lab, _why_missing(notes, dataset, metric, lab)), []).append(metric)
    out += [f"{lab}: {', '.join(ms)} not stored ({why})." for (lab, why), ms in gaps.items()]
    return out


def _why_missing(notes: pd.DataFrame | None, dataset: str | None, metric: str, label: str) -> str:
    """A run's note on `metric`, else on the metric it was measured with (the timings' notes sit
    on fps / fps_multipass, e.g. "unavailable on CPU"), else a plain reason."""
    base = metric.removesuffix("_n3v")
    for name in dict.fromkeys((metric, base, "fps_multipass" if "multipass" in base else "fps")):
        why = note_text(notes, dataset, name, [label])
        if why:
            return "; ".join(why)
    return "no value in the run"


def _resolutions(notes: pd.DataFrame | None, dataset: str | None, labels: list[str]) -> list[str]:
    """Image sizes "WxH" of the scene-resolution FPS of the shown runs (their `fps` notes)."""
    return [m.group(1) for m in map(_RESOLUTION.match, note_text(notes, dataset, "fps", labels)) if m]


def _paper_footnote(ref: pd.DataFrame, number: int, shown: bool) -> list[str]:
    if not shown:
        return []
    marks = "; ".join(dict.fromkeys(part for n in ref["note"] if n for part in n.split("; ")))
    where = ", ".join(dataset_label(d) for d in dict.fromkeys(ref["dataset"]))
    return [f"Rows marked {PAPER_ROW}: the MoE-GS paper's Table {number} ({where}, N={PAPER_N[number]}), measured on "
            f"{lb.PAPER_GPU}; it prints PSNR, FPS and Memory only" + (f" ({marks})." if marks else ".")]


def _frame(index: list[tuple[str, str]], body: list[pd.Series], names: list[str]) -> pd.DataFrame:
    out = pd.DataFrame(body, index=pd.MultiIndex.from_tuples(index, names=names))
    return out.reindex(columns=_columns())


def _prepare(df: pd.DataFrame, dataset: str | None, mixture: str, variant: str | None, number: int, table: str,
             suffix: str = "") -> tuple[pd.DataFrame, str, list[str], list[str], dict[int, str]]:
    """(labelled rows of the dataset, expert set, every expert set, scenes, {NN: pruned method})."""
    if len(df) == 0 or mixture not in set(df["method"].astype(str)):
        raise ConfigError(f"table {table}: no {mixture} runs; make one with "
                          f"`{mixture_run_hint(mixture, PAPER_N[number])}`")
    rows = labelled(select_dataset(df, dataset, table))
    chosen, variants = _pick_variant(rows, mixture, variant, PAPER_N[number], table, suffix)
    rows = rows[rows["variant"].astype(str).isin([chosen]) | rows["label"].isin(_expert_labels(chosen))]
    scenes = list(dict.fromkeys(rows.loc[rows["method"] == mixture, "scene"]))
    rows = rows[rows["scene"].isin(scenes)]
    return rows, chosen, variants, scenes, pruned_methods(rows["method"], mixture, suffix)


@register_table("efficiency",
                "PSNR, FPS, memory and Gaussians of the experts, a mixture and its pruned versions (paper Table 3)")
def efficiency_table(
    df: pd.DataFrame,
    dataset: str | None = None,
    mixture: str = MIXTURE,
    variant: str | None = None,
    notes: pd.DataFrame | None = None,
    paper: bool = True,
    rule: str = "importance",
) -> pd.DataFrame:
    """Rows (model, method): each expert of the mixture's expert set, the mixture ("MoE-GS
    (N=k)"), every stored pruned version `<mixture>-p<NN>` ("MoE-GS (NN% pruning)"), and with
    `paper` the paper's Table 3 row after each of ours it reports (and its pruned rows we lack).
    Columns (metric, stat): PSNR, FPS (1352x1014), FPS (scene), Memory (MB) (storage),
    Render memory (MB) (peak at 1352x1014), Gaussians; mean over scenes of the per-scene mean
    over seeds, ± std over seeds. variant: the expert set "a+b" (default: one with pruned runs,
    then of the paper's N=2); rule: the pruning rule whose versions are shown (importance:
    `-p55`; importance-max: `-p55-max`; sigmoid: `-p55-sigmoid`). ConfigError naming the run to
    make when no mixture is stored."""
    suffix = rule_suffix(rule, "efficiency")
    rows, chosen, variants, scenes, pruned = _prepare(df, dataset, mixture, variant, 3, "efficiency", suffix)
    ref = lb.load_paper(table=3) if paper else None
    index: list[tuple[str, str]] = []
    body: list[pd.Series] = []
    shown: list[str] = []

    def add(model: str, label: str | None, paper_method: str, paper_variant: str) -> None:
        if label is not None:
            index.append((model, label))
            body.append(_our_row(rows, label, COLUMNS, scenes))
            shown.append(label)
        published = _paper_row(ref, paper_method, paper_variant) if ref is not None else None
        if published is not None:
            index.append((model, f"{run_label(paper_method, paper_variant)} {PAPER_ROW}"))
            body.append(published)

    for label in _expert_labels(chosen):
        if label in set(rows["label"]):
            add("Expert", label, label.split(" (")[0], "default")
    k = len(chosen.split("+"))
    add(f"MoE-GS (N={k})", run_label(mixture, chosen), mixture, f"N={PAPER_N[3]}")
    published_nn = set()
    if ref is not None:
        published_nn = {int(m.group(1)) for v in ref["variant"] if (m := re.search(r"pruning (\d+)%", v))}
    missing = []
    for nn in sorted(set(pruned) | published_nn):
        label = run_label(pruned[nn], chosen) if nn in pruned else None
        if label is None:
            missing.append(nn)
        add(f"MoE-GS ({nn}% pruning)", label, mixture, f"N={PAPER_N[3]}, pruning {nn}%")
    table = _frame(index, body, ["model", "method"])
    footnotes = _common_footnotes(rows, shown, scenes, mixture, chosen, variants, notes, dataset, COLUMNS.values())
    if not pruned:
        wanted = sorted(published_nn or {FULL_PRUNING})
        footnotes.append(f"No pruned {mixture} of {chosen} is stored (methods {mixture}-p<NN>{suffix}): "
                         f"{pruned_run_hint(mixture, wanted, k, rule)}.")
    elif missing:
        footnotes.append(f"No stored {', '.join(f'{mixture}-p{nn}{suffix}' for nn in missing)} of {chosen}: "
                         f"{pruned_run_hint(mixture, missing, k, rule)}.")
    footnotes += _paper_footnote(ref, 3, ref is not None and any(PAPER_ROW in i[1] for i in index))
    table.attrs["footnotes"] = footnotes
    table.attrs["floatfmt"] = dict(FLOATFMT)
    return table


@register_table("efficiency-ablation",
                "Single-pass rendering and pruning switched off in turn: PSNR, FPS, memory (paper Table 5)")
def efficiency_ablation_table(
    df: pd.DataFrame,
    dataset: str | None = None,
    mixture: str = MIXTURE,
    variant: str | None = None,
    pruning: int = FULL_PRUNING,
    notes: pd.DataFrame | None = None,
    paper: bool = True,
    rule: str = "importance",
) -> pd.DataFrame:
    """Rows (ablation, method): w/o Single-Pass & Pruning (the mixture, multi-pass timings), w/o
    Single-Pass (`<mixture>-p<pruning>`, multi-pass), w/o Pruning (the mixture, single-pass),
    MoE-GS (full) (the pruned mixture, single-pass); with `paper` the paper's Table 5 row after
    each. Columns as the `efficiency` table; the multi-pass rows take FPS, FPS (scene) and Render
    memory from the `_multipass` metrics (fps_multipass_n3v, ...). A row whose run is missing
    stays blank and a footnote names the run to make. pruning: which pruned version is the full
    model (default 55); rule: its pruning rule (as the `efficiency` table's)."""
    if not isinstance(pruning, int) or not 0 < pruning < 100:
        raise ConfigError(f"table efficiency-ablation: pruning must be a percentage 1..99; got {pruning!r}")
    suffix = rule_suffix(rule, "efficiency-ablation")
    rows, chosen, variants, scenes, pruned = _prepare(df, dataset, mixture, variant, 5, "efficiency-ablation",
                                                      suffix)
    ref = lb.load_paper(table=5) if paper else None
    labels = {False: run_label(mixture, chosen), True: run_label(f"{mixture}-p{pruning}{suffix}", chosen)}
    index: list[tuple[str, str]] = []
    body: list[pd.Series] = []
    for name, is_pruned, multi, paper_variant in ABLATION:
        label = labels[is_pruned]
        index.append((name, label))
        body.append(_our_row(rows, label, _multipass(COLUMNS) if multi else COLUMNS, scenes))
        published = _paper_row(ref, mixture, paper_variant) if ref is not None else None
        if published is not None:
            index.append((name, f"{run_label(mixture, paper_variant)} {PAPER_ROW}"))
            body.append(published)
    table = _frame(index, body, ["ablation", "method"])
    metrics = [*COLUMNS.values(), *_multipass(COLUMNS).values()]
    footnotes = _common_footnotes(rows, list(labels.values()), scenes, mixture, chosen, variants, notes, dataset,
                                  metrics)
    footnotes.append("PSNR, Memory and Gaussians do not depend on the render mode (single-pass images equal "
                     "multi-pass ones to float error): each run's appear in both of its rows. The w/o Single-Pass "
                     "rows take FPS, FPS (scene) and Render memory from the same run's multi-pass timing "
                     f"({', '.join(multipass_metric(m) for m in TIMED)}).")
    if pruning not in pruned:
        others = f" (stored: {', '.join(pruned.values())}; --option pruning=NN)" if pruned else ""
        footnotes.append(f"No stored {mixture}-p{pruning}{suffix} of {chosen}{others}: the w/o Single-Pass and full "
                         f"rows stay blank; {pruned_run_hint(mixture, [pruning], len(chosen.split('+')), rule)}.")
    else:
        footnotes.append(f"Full model: {mixture}-p{pruning}{suffix} ({pruning}% pruning; --option pruning=NN picks "
                         "another, --option rule=... another pruning rule).")
    footnotes += _paper_footnote(ref, 5, ref is not None)
    table.attrs["footnotes"] = footnotes
    table.attrs["floatfmt"] = dict(FLOATFMT)
    return table


__all__ = ["MIXTURE", "FULL_PRUNING", "COLUMNS", "ABLATION", "pruned_methods", "efficiency_table",
           "efficiency_ablation_table"]
