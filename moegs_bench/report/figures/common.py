"""Pieces the figures share: which runs and which test view a figure shows, image panels,
legends of method colours, and a panel that says what is missing."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.patches import Patch

from .style import method_color

ROUTER_ORDER = ("moe-vapr", "moe-pixel", "moe-volume")  # the paper's router first


@dataclass(frozen=True)
class View:
    """A test view: camera name and frame index (as in per_image.csv and saved file names)."""

    camera: str
    frame: int


def first_seed_runs(runs: pd.DataFrame) -> pd.DataFrame:
    """The runs of each (scene, method, variant) at its lowest seed: figures of images show one
    seed (the tables average them)."""
    low = runs.groupby(["scene", "method", "variant"])["seed"].transform("min")
    return runs[runs["seed"] == low]


def router_rank(method: str) -> tuple[int, str]:
    """Order of router methods: the paper's router, the other registered ones, then by name."""
    return (ROUTER_ORDER.index(method) if method in ROUTER_ORDER else len(ROUTER_ORDER), method)


def expert_labels(variant: str) -> list[str]:
    """The expert labels of a mixture's variant ("ex4dgs+stg"), in the pool's order: index k
    of a gate map or label map is expert k."""
    return variant.split("+")


def middle_view(per_image: pd.DataFrame) -> View | None:
    """The first test camera (as listed) at its middle frame: one fixed rule, not the view
    that looks best. None without rows."""
    if len(per_image) == 0:
        return None
    camera = str(per_image["camera"].iloc[0])
    frames = sorted(int(f) for f in per_image.loc[per_image["camera"].astype(str) == camera, "frame"])
    return View(camera, frames[len(frames) // 2])


def view_from_files(folder: Path) -> View | None:
    """The first saved view (<camera>_<frame>.png) of a folder, for a run without per-image rows."""
    first = next(iter(sorted(Path(folder).glob("*_*.png"))), None)
    if first is None:
        return None
    camera, frame = first.stem.rsplit("_", 1)
    return View(camera, int(frame))


def view_metric(per_image: pd.DataFrame, view: View, metric: str = "psnr") -> float | None:
    """A run's metric at one view (its per-image row), or None."""
    if metric not in per_image.columns:
        return None
    hit = per_image[(per_image["camera"].astype(str) == view.camera) & (per_image["frame"] == view.frame)]
    return float(hit[metric].iloc[0]) if len(hit) else None


def image_panel(ax: Axes, image: np.ndarray | None, title: str, color: str = "black",
                missing: str = "not stored") -> None:
    """An image without ticks and its title (in `color`); text `missing` when image is None."""
    ax.grid(False)
    ax.set_xticks([])
    ax.set_yticks([])
    for spine in ax.spines.values():
        spine.set_visible(False)
    ax.set_title(title, color=color, pad=2)
    if image is None:
        ax.set_facecolor("#f2f2f2")
        ax.text(0.5, 0.5, missing, ha="center", va="center", fontsize=6, color="#555555",
                transform=ax.transAxes, wrap=True)
    else:
        ax.imshow(image)


def empty_panel(ax: Axes) -> None:
    ax.set_axis_off()


def with_psnr(label: str, psnr: float | None) -> str:
    return label if psnr is None else f"{label}\n{psnr:.2f} dB"


def colour_legend(fig: Figure, labels: Sequence[str], ncol: int | None = None) -> None:
    """A legend of method colours under the figure."""
    handles = [Patch(facecolor=method_color(lab), edgecolor="none", label=lab) for lab in labels]
    fig.legend(handles=handles, loc="outside lower center", ncol=ncol or len(handles),
               handlelength=1.0, columnspacing=1.2)


def row_label(ax: Axes, text: str) -> None:
    """A row's name left of its first panel."""
    ax.set_ylabel(text, fontsize=6.5)


__all__ = ["View", "first_seed_runs", "router_rank", "expert_labels", "middle_view", "view_from_files",
           "view_metric",
           "image_panel", "empty_panel", "with_psnr", "colour_legend", "row_label", "ROUTER_ORDER"]
