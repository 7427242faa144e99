"""Figures of saved images: router gate maps beside the experts' renders, the mixture and the
ground truth (MoE-GS Fig. 4), and the per-pixel best expert (Fig. 1b)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from ...eval.evaluate import RENDERS
from ...moe.blend import PALETTE
from .common import (
    View,
    colour_legend,
    empty_panel,
    expert_labels,
    first_seed_runs,
    image_panel,
    middle_view,
    router_rank,
    row_label,
    view_from_files,
    view_metric,
    with_psnr,
)
from .registry import register_figure
from .source import StoreView, read_png, renders_of, view_stem
from .style import PAGE_WIDTH, method_color, method_rgb, new_figure

GATES = "gates"  # folder of a router run's gate maps (moe/train_router.router_renderer)
BEST = "best"  # folder of the per-pixel oracle's label maps (moe/baselines)
ORACLE = "oracle-pixel"
EXPERTS_DIR = "experts"  # the uniform average keeps every expert's render here (moe/baselines)
AVERAGE = "uniform-average"
TITLE_INCHES = 0.36  # room for a two-line panel title
LABEL_INCHES = 0.35  # room for the row labels left of the first panel
LEGEND_INCHES = 0.2


def decode_gates(image: np.ndarray, k: int) -> np.ndarray | None:
    """The gates behind a saved gate map (Σ_k G_k · PALETTE_k, moe.blend.gate_image):
    image uint8 [H,W,3], k experts -> gates [k,H,W] (non-negative, summing to 1). Exact up to the
    8-bit rounding for k <= 3 (the palette's first three colours are independent); None for more
    experts, whose mixtures the three colour channels cannot separate."""
    palette = PALETTE.numpy().astype(np.float64)[np.arange(k) % len(PALETTE)]  # [k,3]
    if k > 3 or np.linalg.matrix_rank(palette) < k:
        return None
    colour = image.reshape(-1, 3).astype(np.float64) / 255.0
    gates = np.linalg.lstsq(palette.T, colour.T, rcond=None)[0].clip(0.0, None)  # [k,N]
    gates /= np.maximum(gates.sum(0, keepdims=True), 1e-8)
    return gates.reshape(k, *image.shape[:2])


def gate_colours(gates: np.ndarray, labels: list[str]) -> np.ndarray:
    """Gates [K,H,W] drawn in the experts' figure colours: Σ_k G_k · colour_k -> [H,W,3]."""
    colours = np.array([method_rgb(lab) for lab in labels])  # [K,3]
    return np.einsum("khw,kc->hwc", gates, colours).clip(0.0, 1.0)


def label_colours(labels_map: np.ndarray, labels: list[str]) -> np.ndarray:
    """A label map [H,W] of expert indices drawn in the experts' colours -> [H,W,3]."""
    colours = np.array([method_rgb(lab) for lab in labels])
    return colours[labels_map.clip(0, len(labels) - 1)]


def _expert_render(store: StoreView, scene: str, label: str, seed: int, variant: str, view: View,
                   ) -> tuple[np.ndarray | None, float | None]:
    """An expert's render of a view and its PSNR there: from its own run, else from the
    uniform average of the mixture, which keeps every expert's render."""
    stem = view_stem(view.camera, view.frame)
    run = store.expert_run_dir(scene, label, seed)
    if run is not None and (path := renders_of(run, stem)) is not None:
        return read_png(path), view_metric(store.per_image(run), view)
    avg = store.run_dir(scene, AVERAGE, variant, seed)
    if avg is not None and (path := renders_of(avg, stem, f"{EXPERTS_DIR}/{label}")) is not None:
        return read_png(path), None
    return None, None


def _gt_note(store: StoreView) -> str:
    return f"ground truth:\nscene not kept\nin {store.runs_dir}/scenes"


@register_figure(
    "gates",
    "Router gate maps beside each expert's render, the mixture and the ground truth for one test "
    "view (paper Fig. 4); needs a router run (gates/); ground truth needs the prepared scene in "
    "<runs>/scenes",
)
def gates_figure(store: StoreView) -> Figure:
    """One row per (scene, expert set): ground truth, each expert's render, the router's gate
    map in the experts' colours, the mixture; the first test camera at its middle frame; PSNR
    of that view from each run's per_image.csv. The paper's router (moe-vapr) when several."""
    runs = first_seed_runs(store.runs)
    routers = runs[runs["method"].str.startswith("moe-")]
    routers = routers[[(Path(d) / GATES).is_dir() for d in routers["run_dir"]]]
    if len(routers) == 0:
        raise store.missing("no router run with gate maps", "--experts 2 --router vapr")
    routers = routers.assign(rank=[router_rank(m) for m in routers["method"]]).sort_values(
        ["scene", "variant", "rank"], kind="stable").drop_duplicates(["scene", "variant"])
    rows = list(routers.itertuples(index=False))
    ncols = max(len(expert_labels(r.variant)) for r in rows) + 3
    h, w = read_png(next((Path(rows[0].run_dir) / RENDERS).glob("*.png"))).shape[:2]
    panel = (PAGE_WIDTH - LABEL_INCHES) / ncols
    fig = new_figure(PAGE_WIDTH, len(rows) * (panel * h / w + TITLE_INCHES) + LEGEND_INCHES)
    axes = fig.subplots(len(rows), ncols, squeeze=False)
    shown: list[str] = []
    for ax_row, r in zip(axes, rows, strict=True):
        labels = expert_labels(r.variant)
        per_image = store.per_image(Path(r.run_dir))
        view = middle_view(per_image) or view_from_files(Path(r.run_dir) / GATES)
        stem = view_stem(view.camera, view.frame)
        mixture = read_png(Path(r.run_dir) / RENDERS / stem)
        size = (mixture.shape[1], mixture.shape[0])
        image_panel(ax_row[0], store.ground_truth(r.scene, view.camera, view.frame, size), "Ground truth",
                    missing=_gt_note(store))
        row_label(ax_row[0], f"{r.scene}\n{view.camera}, frame {view.frame}")
        for k, label in enumerate(labels):
            image, psnr = _expert_render(store, r.scene, label, int(r.seed), r.variant, view)
            image_panel(ax_row[1 + k], image, with_psnr(label, psnr), method_color(label))
        gate_png = read_png(Path(r.run_dir) / GATES / stem)
        gates = decode_gates(gate_png, len(labels))
        if gates is not None:
            image_panel(ax_row[len(labels) + 1], gate_colours(gates, labels), f"Gates ({r.method})")
        else:  # more than three experts: the saved map, in the router's palette, not our colours
            image_panel(ax_row[len(labels) + 1], gate_png, f"Gates ({r.method},\nrouter palette)")
        image_panel(ax_row[len(labels) + 2], mixture, with_psnr(r.method, view_metric(per_image, view)),
                    method_color(r.method))
        for ax in ax_row[len(labels) + 3:]:
            empty_panel(ax)
        shown += [lab for lab in labels if lab not in shown]
    colour_legend(fig, shown)
    return fig


@register_figure(
    "regions",
    "The per-pixel best expert (closest to the ground truth) of one test view and its share of "
    "all test pixels (paper Fig. 1b); needs the per-pixel oracle's label maps (best/, stored "
    "with any router run)",
)
def regions_figure(store: StoreView) -> Figure:
    """One row per (scene, expert set): the reference image (ground truth if the scene is in
    the store, else the per-pixel oracle's render), the per-pixel best expert in the experts'
    colours, the two overlaid, and the share of pixels each expert wins over every stored test
    view (bars)."""
    runs = first_seed_runs(store.runs)
    oracles = runs[(runs["method"] == ORACLE).to_numpy() & np.array([(Path(d) / BEST).is_dir()
                                                                      for d in runs["run_dir"]], dtype=bool)]
    if len(oracles) == 0:
        raise store.missing("no per-pixel oracle run with label maps (best/)", "--experts 2 --router vapr")
    rows = list(oracles.sort_values(["scene", "variant"], kind="stable").itertuples(index=False))
    h, w = read_png(next((Path(rows[0].run_dir) / BEST).glob("*.png"))).shape[:2]
    panel = (PAGE_WIDTH - LABEL_INCHES) / 4
    fig = new_figure(PAGE_WIDTH, len(rows) * (panel * h / w + TITLE_INCHES) + LEGEND_INCHES)
    axes = fig.subplots(len(rows), 4, squeeze=False)
    shown: list[str] = []
    for ax_row, r in zip(axes, rows, strict=True):
        labels = expert_labels(r.variant)
        run = Path(r.run_dir)
        view = middle_view(store.per_image(run)) or view_from_files(run / BEST)
        stem = view_stem(view.camera, view.frame)
        best = read_png(run / BEST / stem)
        gt = store.ground_truth(r.scene, view.camera, view.frame, (best.shape[1], best.shape[0]))
        reference, title = (gt, "Ground truth") if gt is not None else (
            read_png(run / RENDERS / stem), "Per-pixel oracle")
        image_panel(ax_row[0], reference, title)
        row_label(ax_row[0], f"{r.scene}\n{view.camera}, frame {view.frame}")
        coloured = label_colours(best, labels)
        image_panel(ax_row[1], coloured, "Best expert per pixel")
        image_panel(ax_row[2], 0.5 * coloured + 0.5 * reference / 255.0, "Overlay")
        shares = pixel_shares(run / BEST, len(labels))
        ax = ax_row[3]
        ax.bar(range(len(labels)), 100 * shares, color=[method_color(lab) for lab in labels], width=0.6)
        ax.set_xticks(range(len(labels)), labels, rotation=20, ha="right")
        ax.set_ylabel("pixels won (%)")
        ax.set_ylim(0, 100)
        ax.set_title("All test views", pad=2)
        ax.grid(axis="x", visible=False)
        shown += [lab for lab in labels if lab not in shown]
    colour_legend(fig, shown)
    return fig


def pixel_shares(folder: Path, k: int) -> np.ndarray:
    """Fraction of the pixels of every label map in `folder` that each of k experts wins: [k]."""
    counts = np.zeros(k)
    for path in sorted(folder.glob("*.png")):
        counts += np.bincount(read_png(path).ravel(), minlength=k)[:k]
    return counts / max(counts.sum(), 1.0)


__all__ = ["gates_figure", "regions_figure", "decode_gates", "gate_colours", "label_colours",
           "pixel_shares"]
