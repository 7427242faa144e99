"""Where each expert wins (MoE-GS Fig. 1): the best expert per scene and per motion regime
(a), and PSNR frame by frame for experts and mixtures (c). The per-pixel best expert (b) is a
label image of every test view, saved by the per-pixel oracle (oracle-pixel/.../best/)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from ...errors import ConfigError
from .common import labelled, select_dataset, select_labels
from .registry import register_table


def _experts() -> set[str]:
    from ...experts.registry import available_experts

    return set(available_experts())


@register_table("winners", "The best expert per scene and per motion regime, by PSNR (paper Fig. 1a)")
def winners_table(df: pd.DataFrame, dataset: str | None = None) -> pd.DataFrame:
    """Rows: scenes; columns: `all` (whole images) and each regime present (psnr_<regime>);
    cells: "<expert> <PSNR>" of the expert run (method and variant, mean over seeds) with the
    highest PSNR, the runner-up's margin in a footnote."""
    rows = labelled(select_dataset(df, dataset, "winners"))
    rows = rows[rows["method"].isin(_experts()) & rows["metric"].str.match(r"^psnr(_|$)")]
    if len(rows) == 0:
        raise ConfigError("table winners: no expert runs with PSNR in these results")
    means = rows.groupby(["scene", "metric", "label"])["value"].mean()
    metrics = ["psnr", *sorted(m for m in rows["metric"].unique() if m != "psnr")]
    out: dict[str, dict[str, str]] = {}
    margins = []
    for scene in dict.fromkeys(rows["scene"]):
        cells = {}
        for m in metrics:
            if (scene, m) not in means.index.droplevel("label"):
                continue
            ranked = means.loc[(scene, m)].sort_values(ascending=False)
            cells["all" if m == "psnr" else m[5:]] = f"{ranked.index[0]} {ranked.iloc[0]:.2f}"
            if len(ranked) > 1:
                margins.append(ranked.iloc[0] - ranked.iloc[1])
        out[scene] = cells
    table = pd.DataFrame.from_dict(out, orient="index")
    table.index.name = "scene"
    table.columns.name = "region"
    table.attrs["footnotes"] = ["Each cell: the expert run with the highest mean PSNR over seeds there."]
    if margins:
        table.attrs["footnotes"].append(f"Margin over the runner-up: {np.min(margins):.2f} to {np.max(margins):.2f} dB.")
    return table


@register_table("per-frame", "PSNR frame by frame of experts and mixtures on the test views (paper Fig. 1c)")
def per_frame_table(df: pd.DataFrame, dataset: str | None = None, scene: str | None = None,
                    methods: Sequence[str] | None = None, seed: int | None = None) -> pd.DataFrame:
    """Rows: frames; columns: method labels (every run of one scene, or `methods`); cells: the
    PSNR of the run's test views at that frame (mean over test cameras), read from each run's
    per_image.csv. `scene` is needed when the results hold several; `seed` picks one seed
    (default: the lowest)."""
    rows = labelled(select_dataset(df, dataset, "per-frame"))
    scenes = list(dict.fromkeys(rows["scene"]))
    if scene is None and len(scenes) > 1:
        raise ConfigError(f"table per-frame: results hold several scenes ({', '.join(scenes)}); choose one with --option scene=...")
    rows = rows[rows["scene"] == (scene or scenes[0])]
    if len(rows) == 0:
        raise ConfigError(f"table per-frame: no results for scene {scene!r}")
    rows = rows[rows["seed"] == (seed if seed is not None else rows["seed"].min())]
    runs = rows.drop_duplicates("label").set_index("label")["run_dir"]
    columns = {}
    for label in select_labels(rows, methods, "per-frame"):
        path = Path(runs[label]) / "per_image.csv"
        if path.is_file():
            per_image = pd.read_csv(path)
            columns[label] = per_image.groupby("frame")["psnr"].mean()
    table = pd.DataFrame(columns)
    table.index.name = "frame"
    table.columns.name = "method"
    table.attrs["footnotes"] = ["PSNR of each frame's test views (mean over the test cameras at that frame)."]
    return table
