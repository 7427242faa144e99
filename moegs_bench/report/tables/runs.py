"""One row per stored run: the tables `moegs-bench run` prints after training (experts, then
the mixtures of an expert set), also available to `report` for a whole store."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import pandas as pd

from .common import note_text, run_label, select_dataset
from .registry import register_table

# column title -> metric, for each table (the run's own numbers, no averaging)
EXPERT_COLUMNS = {"PSNR": "psnr", "SSIM": "ssim", "SSIM (skimage)": "ssim_skimage", "LPIPS (3DGS)": "lpips_3dgs",
                  "Gaussians": "num_gaussians", "train s": "train_seconds", "it/s": "iters_per_second"}
MIXTURE_COLUMNS = {"PSNR": "psnr", "SSIM": "ssim", "LPIPS (3DGS)": "lpips_3dgs", "oracle gain share": "oracle_gain_share",
                   "router train s": "train_seconds"}
DECIMALS = {"train s": 1, "router train s": 1, "it/s": 1, "oracle gain share": 2, "ssim": 4}


def _expert_methods() -> set[str]:
    from ...experts.registry import available_experts

    return set(available_experts())


def _mixture_methods(present=()) -> set[str]:
    """Stage-2 methods: baselines, routers, the fused model, and the pruned mixtures among `present`."""
    from ...moe.baselines import BASELINES
    from ...moe.prune import is_pruned_method
    from ...moe.responsibility import METHOD as FUSED
    from ...moe.routers import ROUTERS, router_names

    pruned = {m for m in present if is_pruned_method(m)}
    return set(BASELINES) | {ROUTERS[n].method() for n in router_names()} | {FUSED} | pruned


def _run_table(df: pd.DataFrame, methods: set[str], columns: Mapping[str, str], table: str,
               dataset: str | None, runs: Sequence[str] | None, status: Mapping[str, str] | None,
               notes: pd.DataFrame | None, label_variant: bool) -> pd.DataFrame:
    rows = select_dataset(df, dataset, table) if len(df) else df
    rows = rows[rows["method"].isin(methods)]
    if runs is not None:
        rows = rows[rows["run_dir"].isin(list(runs))]
    order = list(runs) if runs is not None else list(dict.fromkeys(rows["run_dir"]))
    order = [r for r in order if r in set(rows["run_dir"])]
    ids = rows.drop_duplicates("run_dir").set_index("run_dir")
    several = ids["scene"].nunique() > 1 or ids["seed"].nunique() > 1 if len(ids) else False
    values = rows.pivot_table(index="run_dir", columns="metric", values="value", aggfunc="first")
    index, body = [], []
    for run_dir in order:
        r = ids.loc[run_dir]
        label = run_label(r["method"], r["variant"]) if label_variant else str(r["method"])
        if several:
            label += f" [{r['scene']}, seed {int(r['seed'])}]"
        index.append(label)
        line = {title: values.loc[run_dir].get(metric, float("nan")) if run_dir in values.index else float("nan")
                for title, metric in columns.items()}
        if status is not None:
            line["run"] = status.get(run_dir, "")
        body.append(line)
    cols = list(columns) + (["run"] if status is not None else [])
    out = pd.DataFrame(body, index=pd.Index(index, name="method"), columns=cols)
    out.columns.name = "metric"
    out.attrs["floatfmt"] = dict(DECIMALS)
    labels = [run_label(m, v) for m, v in zip(ids["method"], ids["variant"], strict=True)]
    # LPIPS in the paper's (3DGS-family) convention; the official one is the metric lpips
    out.attrs["footnotes"] = [f"LPIPS (3DGS): {n}" for n in note_text(notes, dataset, "lpips_3dgs", labels)
                              if out["LPIPS (3DGS)"].isna().any()]
    return out


@register_table("experts", "Every expert run: quality, Gaussians and training cost (one row per run)")
def experts_table(df: pd.DataFrame, dataset: str | None = None, runs: Sequence[str] | None = None,
                  status: Mapping[str, str] | None = None, notes: pd.DataFrame | None = None) -> pd.DataFrame:
    """Rows: expert runs (methods of registered experts), labelled method (variant), in the
    order of `runs` (run folders to show; default all); columns: PSNR, SSIM, SSIM (skimage),
    LPIPS (3DGS convention), Gaussians, train s, it/s, and with `status` (run folder -> text) a `run` column."""
    return _run_table(df, _expert_methods(), EXPERT_COLUMNS, "experts", dataset, runs, status, notes, True)


@register_table("mixture", "Every baseline and router run of an expert set (one row per run)")
def mixture_table(df: pd.DataFrame, dataset: str | None = None, runs: Sequence[str] | None = None,
                  status: Mapping[str, str] | None = None, notes: pd.DataFrame | None = None) -> pd.DataFrame:
    """Rows: stage-2 runs (registered baselines and `moe-<router>` methods), labelled by method
    (and variant, the expert set, when several are shown), in the order of `runs`; columns:
    PSNR, SSIM, LPIPS, oracle gain share, router train s, and with `status` a `run` column."""
    methods = _mixture_methods(set(df["method"]) if len(df) else ())
    rows = df[df["method"].isin(methods)]
    if runs is not None:
        rows = rows[rows["run_dir"].isin(list(runs))]
    several_sets = rows["variant"].nunique() > 1
    out = _run_table(df, methods, MIXTURE_COLUMNS, "mixture", dataset, runs, status, notes, several_sets)
    # baselines are not trained: their router-training cell is empty, not zero
    for label in out.index:
        if not label.startswith("moe-"):
            out.loc[label, "router train s"] = float("nan")
    return out
