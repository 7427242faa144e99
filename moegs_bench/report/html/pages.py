"""The report's pages: the index (datasets, scenes, methods), one page per dataset (every
registered table and every figure), one page per scene (every table of that scene, renders and
gate maps of a few test views) and the runs page (every run's id, key, code version, device,
times and command; the sets of runs behind averaged numbers)."""

from __future__ import annotations

import datetime as _dt
import shutil
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd

from ... import __version__
from ...errors import ConfigError
from ...eval.evaluate import RENDERS
from .. import leaderboard as lb
from ..tables import TABLES, build_table, dataset_label, table_options
from .images import GATES, IMAGE_KINDS, Thumb, chosen_views, write_thumbnail
from .markup import bullet_list, esc, link, offline, page, slug, tag
from .runs import RUNS_PAGE, RunLinks, RunRecord
from .table import html_table

if TYPE_CHECKING:
    from ..figures.source import StoreView

INDEX_PAGE = "index.html"
FIGURE_WIDTH = 960  # figures are drawn at print resolution; this keeps their text legible on screen
MIN_SHOWN = 192  # renders narrower than this are shown scaled up, pixelated


@dataclass
class Site:
    """What every page is made from: the report folder being written, the run store, its tidy
    results and notes, its runs and the links to them, how many test views and how wide."""

    root: Path
    runs_dir: Path
    results: pd.DataFrame
    notes: pd.DataFrame
    runs: list[RunRecord]
    views: int
    width: int
    links: RunLinks = field(init=False)
    _stores: dict = field(init=False, default_factory=dict)

    def __post_init__(self) -> None:
        self.links = RunLinks(self.runs)

    def store(self, dataset: str) -> StoreView:
        """The figures' view of `dataset`'s runs (`figures.source.StoreView`), opened once."""
        from ..figures.source import open_store

        if dataset not in self._stores:
            self._stores[dataset] = open_store(self.runs_dir, dataset)
        return self._stores[dataset]

    def datasets(self) -> list[str]:
        return list(dict.fromkeys(r.run_id.dataset for r in self.runs))

    def scenes(self, dataset: str) -> list[str]:
        return list(dict.fromkeys(r.run_id.scene for r in self.runs if r.run_id.dataset == dataset))

    def scope(self, dataset: str, scene: str | None = None) -> list[RunRecord]:
        return [r for r in self.runs if r.run_id.dataset == dataset and scene in (None, r.run_id.scene)]


def dataset_dir(dataset: str) -> str:
    """Folder of a dataset's pages and images, relative to the report root."""
    return f"d-{slug(dataset)}"


def dataset_page(dataset: str) -> str:
    return f"{dataset_dir(dataset)}/{INDEX_PAGE}"


def scene_page(dataset: str, scene: str) -> str:
    return f"{dataset_dir(dataset)}/scene-{slug(scene)}.html"


def _nav(site: Site, dataset: str | None, up: str) -> list[tuple[str, str]]:
    """Navigation bar of a page `up` ("" or "../") below the root."""
    items = [(up + INDEX_PAGE, "Index"), (up + RUNS_PAGE, "Runs")]
    if dataset is not None:
        items.append((up + dataset_page(dataset), dataset_label(dataset)))
        items += [(up + scene_page(dataset, s), s) for s in site.scenes(dataset)]
    return items


def _write(site: Site, rel: str, text: str) -> None:
    path = site.root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)  # the folder is built whole, then swapped in (write.py)


# -- tables --------------------------------------------------------------------------------------
def table_sections(site: Site, dataset: str, scene: str | None, up: str) -> str:
    """A `<section data-table-section=name>` per registered table, built from the rows of
    `dataset` (and `scene`); a table that cannot be built says why instead."""
    rows = site.results[site.results["dataset"] == dataset]
    if scene is not None:
        rows = rows[rows["scene"] == scene]
    scope = site.scope(dataset, scene)
    scenes = [scene] if scene is not None else site.scenes(dataset)
    out = []
    for spec in TABLES.values():
        if spec.name == "paper":
            body = _paper_tables(site, dataset, scope, up)
        else:
            body = _table(site, spec.name, rows, dataset, scenes, scope, up)
        title = tag("h2", esc(f"{spec.name}: {spec.description}"))
        out.append(tag("section", title + body, id=f"table-{slug(spec.name)}", data_table_section=spec.name))
    return "".join(out)


def _table(site: Site, name: str, rows: pd.DataFrame, dataset: str, scenes: Sequence[str],
           scope: Sequence[RunRecord], up: str) -> str:
    """One registered table (one per scene when it takes a `scene` and the page has several)."""
    takes_scene = "scene" in table_options(name)
    per_scene = takes_scene and len(scenes) > 1
    parts = []
    for scene in scenes if per_scene else scenes[:1]:
        opts = {"dataset": dataset, "notes": site.notes, **({"scene": scene} if takes_scene else {})}
        head = tag("h3", esc(scene)) if per_scene else ""
        try:
            table = build_table(name, rows, **opts)
        except ConfigError as exc:
            parts.append(head + tag("p", esc(offline(exc)), cls="missing"))
            continue
        parts.append(head + html_table(table, name, site.links, scope, up=up))
    return "".join(parts)


def _paper_tables(site: Site, dataset: str, scope: Sequence[RunRecord], up: str) -> str:
    """Every published table of the paper with values for `dataset` (none for our own
    datasets), as printed."""
    empty = site.results.iloc[0:0]
    parts = []
    for number in sorted(lb.PAPER_TABLES):
        try:
            table = build_table("paper", empty, paper_table=number, dataset=dataset)
        except ConfigError:  # this table holds no values of the dataset
            continue
        parts.append(tag("h3", esc(table.attrs.get("title", f"Table {number}")))
                     + html_table(table, "paper", site.links, scope, published=True, up=up))
    if not parts:
        return tag("p", esc(f"The paper publishes no values for dataset {dataset}."), cls="missing")
    return "".join(parts)


# -- figures -------------------------------------------------------------------------------------
def figure_section(site: Site, dataset: str) -> str:
    """Every registered figure of `dataset` as a PNG in the dataset's folder; a figure whose data
    the store lacks shows the message naming the run that makes it."""
    from ..figures import FIGURES, FigureDataMissing, draw_figure

    scratch = site.root / ".figures"
    parts = []
    for name, spec in FIGURES.items():
        caption = tag("figcaption", esc(f"{name}: {spec.description}"))
        try:
            drawn = draw_figure(name, site.runs_dir, scratch, dataset=dataset, formats=("png",))
        except FigureDataMissing as exc:
            body = tag("p", esc(offline(exc)), cls="missing")
        else:
            body = "".join(_figure_img(site, dataset, name, p) for p in drawn if p.suffix == ".png")
        parts.append(tag("figure", body + caption, id=f"figure-{slug(name)}", data_figure=name))
    shutil.rmtree(scratch, ignore_errors=True)
    return tag("section", tag("h2", "Figures") + "".join(parts), id="figures")


def _figure_img(site: Site, dataset: str, name: str, png: Path) -> str:
    rel = f"{dataset_dir(dataset)}/fig/{slug(png.stem)}"
    thumb = write_thumbnail(png, site.root, rel, FIGURE_WIDTH, palette=True)
    return _img(thumb, dataset_dir(dataset) + "/", name)


def _img(thumb: Thumb, page_dir: str, alt: str) -> str:
    """`<img>` of a written image, from a page in `page_dir` (relative to the root)."""
    src = thumb.rel.removeprefix(page_dir)
    scale = max(1, MIN_SHOWN // thumb.width)
    return tag("img", src=src, alt=alt, width=thumb.width * scale, height=thumb.height * scale,
               cls="px" if scale > 1 else None)


# -- pages ---------------------------------------------------------------------------------------
def write_dataset_page(site: Site, dataset: str) -> None:
    scenes = site.scenes(dataset)
    listing = bullet_list(link(f"scene-{slug(s)}.html", s) for s in scenes)
    body = (tag("p", f"{len(site.scope(dataset))} runs on {len(scenes)} scene(s):") + listing
            + table_sections(site, dataset, None, "../") + figure_section(site, dataset))
    _write(site, dataset_page(dataset), page(f"{dataset_label(dataset)} ({dataset})", body,
                                             _nav(site, dataset, "../")))


def write_scene_page(site: Site, dataset: str, scene: str) -> None:
    body = (table_sections(site, dataset, scene, "../")
            + tag("section", tag("h2", "Test views") + views_grid(site, dataset, scene), id="views"))
    _write(site, scene_page(dataset, scene), page(f"{dataset_label(dataset)} / {scene}", body,
                                                  _nav(site, dataset, "../")))


def views_grid(site: Site, dataset: str, scene: str) -> str:
    """Ground truth (when the prepared scene is kept in the store), renders and gate maps of a
    few test views: one row per method (its lowest seed) and image kind, one column per view;
    a colour key for the gate maps."""
    first: dict[str, RunRecord] = {}
    for r in sorted(site.scope(dataset, scene), key=lambda r: (r.label, r.run_id.seed)):
        first.setdefault(r.label, r)
    views = chosen_views([r.run_dir for r in first.values()], site.views)
    if not views:
        return tag("p", "No run of this scene saved renders of its test views.", cls="missing")
    page_dir = dataset_dir(dataset) + "/"
    folder = f"{page_dir}img/{slug(scene)}"
    head = tag("tr", tag("th", "method") + tag("th", "images") + "".join(tag("th", esc(v[:-4])) for v in views))
    rows = [_truth_row(site, dataset, scene, views, first.values(), folder, page_dir)]
    keys: dict[str, None] = {}
    for label, run in first.items():
        for kind in IMAGE_KINDS:
            if not (run.run_dir / kind).is_dir():
                continue
            cells = []
            for view in views:
                src = run.run_dir / kind / view
                if not src.is_file():
                    cells.append(tag("td", "—"))
                    continue
                rel = f"{folder}/{slug(run.run_id.method)}-{slug(run.run_id.variant)}-{kind}-{slug(view[:-4])}"
                thumb = write_thumbnail(src, site.root, rel, site.width, lossless=kind == GATES)
                cells.append(tag("td", _img(thumb, page_dir, f"{label}: {kind} of {view}")))
            name = link(f"../{RUNS_PAGE}#{run.anchor}", label, run.describe())
            rows.append(tag("tr", tag("th", name, scope="row") + tag("td", esc(kind)) + "".join(cells)))
            if kind == GATES:
                keys[run.run_id.variant] = None
    grid = tag("div", tag("table", tag("thead", head) + tag("tbody", "".join(rows)), data_views=scene),
               cls="scroll")
    return grid + "".join(_gate_key(v) for v in keys)


def _truth_row(site: Site, dataset: str, scene: str, views: Sequence[str], runs, folder: str,
               page_dir: str) -> str:
    """The ground-truth images of `views` at the renders' size, from the prepared scene kept in
    the store (`figures.source`); "" when it is not there."""
    from PIL import Image

    store = site.store(dataset)
    cells = []
    for view in views:
        src = next((r.run_dir / RENDERS / view for r in runs if (r.run_dir / RENDERS / view).is_file()), None)
        camera, _, frame = view[:-4].rpartition("_")
        if src is None or not frame.isdigit():
            return ""
        with Image.open(src) as im:
            size = im.size
        truth = store.ground_truth(scene, camera, int(frame), size)
        if truth is None:
            return ""
        thumb = write_thumbnail(truth, site.root, f"{folder}/truth-{slug(view[:-4])}", site.width)
        cells.append(tag("td", _img(thumb, page_dir, f"ground truth of {view}")))
    return tag("tr", tag("th", "ground truth", scope="row") + tag("td", "") + "".join(cells))


def _gate_key(variant: str) -> str:
    """Colour of each expert in the gate maps of expert set `variant` (experts in the order of
    the variant name, the pool's order; colours of `moe.blend.PALETTE`)."""
    from ...moe.blend import PALETTE

    cells = []
    for k, expert in enumerate(variant.split("+")):
        r, g, b = (round(float(c) * 255) for c in PALETTE[k % len(PALETTE)])
        cells.append(tag("span", "", cls="swatch", style=f"background:rgb({r},{g},{b})") + esc(expert))
    return tag("p", esc(f"Gate maps of {variant}:") + "".join(cells))


def write_runs_page(site: Site) -> None:
    """Every run (id, content key, code version, device, created and completed, command), then
    every set of runs that an averaged number links to."""
    head = tag("tr", "".join(tag("th", h) for h in ("run", "key", "code version", "device", "created",
                                                      "completed", "command")))
    parts = []
    for dataset in site.datasets():
        rows = []
        for r in site.scope(dataset):
            where = link(scene_page(dataset, r.run_id.scene), r.name)
            command = tag("code", esc(r.command)) if r.command else "not recorded"
            cells = [where, esc(r.key or "?"), esc(r.code_version or "?"), esc(r.device or "?"),
                     esc(r.created_at or "?"), esc(r.completed_at or "?"), command]
            rows.append(tag("tr", "".join(tag("td", c) for c in cells), id=r.anchor))
        table = tag("table", tag("thead", head) + tag("tbody", "".join(rows)), data_runs=dataset)
        parts.append(tag("h2", link(dataset_page(dataset), dataset_label(dataset))) + tag("div", table, cls="scroll"))
    sets = [tag("li", esc(what) + ": " + ", ".join(link(f"#{r.anchor}", r.name) for r in runs), id=anchor)
            for anchor, (what, runs) in sorted(site.links.sets.items())]
    if sets:
        parts.append(tag("h2", "Sets of runs behind averaged numbers") + tag("ul", "".join(sets)))
    root = esc(site.runs_dir)
    intro = tag("p", f"Completed runs of the store <code>{root}</code>. A number in a table links to its run, "
                     "or to the set of runs it averages.")
    _write(site, RUNS_PAGE, page("Runs", intro + "".join(parts), _nav(site, None, "")))


def write_index_page(site: Site) -> None:
    """Datasets with their scenes and methods; every method's runs linked."""
    parts = []
    for dataset in site.datasets():
        scenes = site.scenes(dataset)
        scope = site.scope(dataset)
        scene_rows = "".join(
            tag("tr", tag("td", link(scene_page(dataset, s), s))
                + tag("td", str(len(site.scope(dataset, s))), cls="num")) for s in scenes)
        labels: dict[str, list[RunRecord]] = {}
        for r in scope:
            labels.setdefault(r.label, []).append(r)
        method_rows = []
        for label, runs in labels.items():
            href, title = site.links.target(runs)
            seen = ", ".join(dict.fromkeys(r.run_id.scene for r in runs))
            method_rows.append(tag("tr", tag("td", esc(label)) + tag("td", esc(seen))
                                   + tag("td", tag("a", str(len(runs)), href=href, title=title), cls="num")))
        parts.append(
            tag("h2", link(dataset_page(dataset), f"{dataset_label(dataset)} ({dataset})"))
            + _table(site, "main", site.results[site.results["dataset"] == dataset], dataset, scenes, scope, "")
            + tag("table", tag("thead", tag("tr", tag("th", "scene") + tag("th", "runs")))
                  + tag("tbody", scene_rows), data_scenes=dataset)
            + tag("table", tag("thead", tag("tr", tag("th", "method") + tag("th", "scenes") + tag("th", "runs")))
                  + tag("tbody", "".join(method_rows)), data_methods=dataset))
    when = _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds")
    intro = tag("p", f"{len(site.runs)} completed runs of <code>{esc(site.runs_dir)}</code>; written {when} by "
                     f"moegs-bench {esc(__version__)}. Published values of the MoE-GS paper are shown beside ours "
                     "(shaded rows) where the paper reports them.")
    _write(site, INDEX_PAGE, page("MoE-GS benchmark report", intro + "".join(parts), _nav(site, None, "")))
