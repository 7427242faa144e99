"""The depth table: multi-view depth consistency (MDC, MoE-GS Eq. 16) and depth error against
ground truth of every method, from the metrics `eval.depth.evaluate_depth` records."""

from __future__ import annotations

import math
from collections.abc import Sequence

import pandas as pd

from ...errors import ConfigError
from ...eval.depth import ALPHA_THRESHOLD, OCCLUSION_TOL
from .common import labelled, select_dataset, select_labels
from .registry import register_table

DEPTH_COLUMNS = {  # metric -> column, in the table's order
    "mdc": "MDC",
    "mdc_valid_fraction": "Valid fraction",
    "depth_l1": "Depth L1",
    "depth_abs_rel": "Depth abs rel",
}
SETTINGS = ("mdc_max_pairs", "mdc_frames")  # how MDC was computed: for the footnote, not shown


@register_table("mdc", "Multi-view depth consistency (MDC) and depth error, averaged over scenes and seeds")
def mdc_table(df: pd.DataFrame, dataset: str | None = None,
              methods: Sequence[str] | None = None) -> pd.DataFrame:
    """Rows: method labels (those with any depth metric, or `methods`); columns: MDC, valid
    fraction, depth L1, depth abs rel (those present). Each value is the mean over scenes of
    the per-scene mean over seeds; a method without a metric (e.g. no MDC on a monocular scene)
    is blank there."""
    rows = labelled(select_dataset(df, dataset, "mdc"))
    shown = rows[rows["metric"].isin(DEPTH_COLUMNS)]
    if len(shown) == 0:
        raise ConfigError(f"table mdc: no depth metrics ({', '.join(DEPTH_COLUMNS)}) in the results")
    metrics = [m for m in DEPTH_COLUMNS if m in set(shown["metric"])]
    labels = select_labels(shown, methods, "mdc")
    shown = shown[shown["label"].isin(labels)]
    per_scene = shown.groupby(["label", "scene", "metric"], sort=False)["value"].mean()
    table = per_scene.groupby(level=["label", "metric"], sort=False).mean().unstack("metric")
    table = table.reindex(index=labels, columns=metrics)
    table.index.name = "method"
    table.columns = pd.Index([DEPTH_COLUMNS[m] for m in metrics], name="metric")
    settings = rows[rows["label"].isin(labels) & rows["metric"].isin(SETTINGS)]
    table.attrs["footnotes"] = mdc_footnotes(settings, "mdc" in metrics, "depth_l1" in metrics)
    return table


def mdc_footnotes(settings: pd.DataFrame, has_mdc: bool, has_error: bool) -> list[str]:
    """What the columns are and how MDC was sampled (from the `mdc_max_pairs` and `mdc_frames`
    rows of `settings`, labelled tidy rows), and which direction is better."""
    notes = ["Mean over scenes of the per-scene mean over seeds. Lower is better for MDC, depth "
             "L1 and depth abs rel; the valid fraction is the share of pixels MDC compared."]
    if has_mdc:
        notes.append("MDC: mean |z - D_j| (scene units) over the valid pixels of ordered camera "
                     "pairs (i, j) at one frame, where z is the camera-z in view j of view i's "
                     "depth re-projected and D_j view j's depth at the nearest pixel; pixels "
                     f"outside view j, with alpha <= {ALPHA_THRESHOLD:g}, or more than "
                     f"{OCCLUSION_TOL:.0%} behind view j's surface (occluded) are left out. "
                     f"Sampled: {_sampling(settings)}.")
    if has_error:
        notes.append("Depth L1 / abs rel: mean |D - D_gt| and |D - D_gt| / D_gt over the "
                     "pixels of the test views against ground-truth camera-z depth.")
    return notes


def _sampling(settings: pd.DataFrame) -> str:
    """"all ordered pairs per frame, 8 frames per scene" or the ranges found in `settings`."""
    pairs = sorted({int(v) for v in settings.loc[settings["metric"] == "mdc_max_pairs", "value"]
                    if not math.isnan(v)})
    frames = sorted({int(v) for v in settings.loc[settings["metric"] == "mdc_frames", "value"]
                     if not math.isnan(v)})
    pair_text = ("pair sampling not recorded" if not pairs else
                 "; ".join("all ordered pairs per frame" if p == 0 else
                           f"at most {p} ordered pairs per frame (seeded draw)" for p in pairs))
    frame_text = ("frames not recorded" if not frames else
                  f"{frames[0]} frames per scene" if len(frames) == 1 else
                  f"{frames[0]} to {frames[-1]} frames per scene")
    return f"{pair_text}, {frame_text}"
