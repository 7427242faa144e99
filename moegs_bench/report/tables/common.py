"""Row selection and labels shared by the table builders: which rows a table shows, how a method,
metric and dataset are named, and the mean / std over scenes and seeds."""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

import numpy as np
import pandas as pd

from ...data.datasets import load_dataset
from ...errors import ConfigError

METRIC_LABELS = {
    "psnr": "PSNR",
    "ssim": "SSIM",
    "lpips": "LPIPS",
    "lpips_3dgs": "LPIPS (3DGS)",
    "fps": "FPS",
    "memory_mb": "Memory (MB)",
    "train_hours": "Training (h)",
    "psnr_min": "PSNR min",
    "psnr_max": "PSNR max",
    "psnr_mean": "PSNR mean",
}
AVERAGE = "Average"  # the scene label of the average over scenes
LPIPS_3DGS_NOTE = (
    "LPIPS (3DGS): LPIPS with [0,1] images fed to the network without mapping to [-1,1], as "
    "the 3DGS-family evaluation code (3DGS metrics.py, copied by STG and MoE-GS) does: the "
    "convention of the paper's LPIPS. The official lpips convention ([-1,1] inputs) is the "
    "metric lpips."
)
OFFICIAL_LPIPS_NOTE = (
    "LPIPS: the official lpips convention ([-1,1] inputs). The paper's LPIPS is in the 3DGS "
    "convention, so (paper) rows leave this column blank; they are compared under LPIPS (3DGS) "
    "(metric lpips_3dgs)."
)


def dataset_label(name: str) -> str:
    """Short display name of dataset `name` ("n3v" -> "N3V") from its moegs_bench/datasets/<name>.toml:
    the `label` key, else the `title`."""
    spec = load_dataset(name)
    return getattr(spec, "label", "") or spec.title


def run_label(method: str, variant: str) -> str:
    """Row label of a method: the variant is shown when it is not "default"."""
    return method if variant == "default" else f"{method} ({variant})"


def metric_label(metric: str) -> str:
    """Display name of a metric ("psnr" -> "PSNR"); unknown metrics as they are."""
    return METRIC_LABELS.get(metric.lower(), metric)


def select_dataset(df: pd.DataFrame, dataset: str | None, table: str) -> pd.DataFrame:
    """The rows of `dataset`; without one, all rows if they hold a single dataset (ConfigError
    otherwise, and for a dataset without rows)."""
    present = sorted(df["dataset"].astype(str).unique())
    if dataset is None:
        if len(present) > 1:
            raise ConfigError(
                f"table {table}: results hold several datasets ({', '.join(present)}); "
                "choose one with --dataset (dataset= in Python)"
            )
        return df
    if dataset not in present:
        raise ConfigError(
            f"table {table}: no results for dataset {dataset!r}; "
            f"present: {', '.join(present) or 'none'}"
        )
    return df[df["dataset"] == dataset]


def labelled(df: pd.DataFrame) -> pd.DataFrame:
    """Copy of the tidy rows with `label` (method + variant) and lower-case `metric`."""
    out = df.copy()
    out["label"] = [
        run_label(str(m), str(v)) for m, v in zip(out["method"], out["variant"], strict=True)
    ]
    out["metric"] = out["metric"].astype(str).str.lower()
    out["scene"] = out["scene"].astype(str)
    return out


def ordered(
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


def select_labels(df: pd.DataFrame, methods: Sequence[str] | None, table: str) -> list[str]:
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


def seed_means(rows: pd.DataFrame) -> pd.DataFrame:
    """Per (label, scene, metric, seed) value (mean if a seed appears twice)."""
    return (
        rows.groupby(["label", "scene", "metric", "seed"], sort=False)["value"].mean().reset_index()
    )


def average_stats(
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


def lpips_3dgs_footnote(metrics: Sequence[str]) -> list[str]:
    """[LPIPS_3DGS_NOTE] when the table shows the 3DGS-convention LPIPS (lower-case metric
    names in `metrics`), else []: the reader learns which convention the column holds."""
    return [LPIPS_3DGS_NOTE] if "lpips_3dgs" in metrics else []


def official_lpips_footnote(metrics: Sequence[str], paper_lpips: bool) -> list[str]:
    """[OFFICIAL_LPIPS_NOTE] when the table shows the official LPIPS beside paper rows that
    publish an LPIPS (`paper_lpips`), else []: why those rows are blank in that column."""
    return [OFFICIAL_LPIPS_NOTE] if paper_lpips and "lpips" in metrics else []


def note_text(
    notes: pd.DataFrame | None, dataset: str | None, metric: str, labels: list[str]
) -> list[str]:
    """Distinct notes on `metric` of the shown runs (e.g. "unavailable: no weights")."""
    if notes is None or len(notes) == 0:
        return []
    nt = labelled(notes)
    nt = nt[(nt["metric"] == metric) & nt["label"].isin(labels)]
    if dataset is not None:
        nt = nt[nt["dataset"] == dataset]
    return list(dict.fromkeys(str(n) for n in nt["note"]))

