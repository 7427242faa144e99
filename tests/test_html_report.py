"""`write_report` (moegs-bench report --html): every page of the report of a tiny run store opened
in headless Chromium (Debian's package, driven by Playwright): no console or page errors, no
request leaves the folder, every image loads, every registered table and figure is there, every
link resolves, every number links to the run it comes from; plus the folder's contents."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path
from urllib.parse import unquote, urlparse

import pytest
from click.testing import CliRunner

from moegs_bench.bench.store import command_line, notes, results
from moegs_bench.cli import cli
from moegs_bench.errors import ConfigError
from moegs_bench.report.figures import FIGURES
from moegs_bench.report.figures.source import SCENES_DIR
from moegs_bench.report.html import MARKER, write_report
from moegs_bench.report.html import pages as html_pages
from moegs_bench.report.html import write as html_write
from moegs_bench.report.html.markup import slug
from moegs_bench.report.tables import TABLES, build_table

pytestmark = pytest.mark.usefixtures("one_thread")
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--disable-dev-shm-usage"]  # containers give /dev/shm a few MB: long pages crash there
VARIANT = "static@small+static@tiny"
PAPER, PAPER_SCENE = "n3v", "coffee_martini"  # a dataset and scene the paper reports
ARGS = ["--experts", "static@tiny,static@small", "--set", "train.iterations=4",
        "--set", "static@tiny:max_init_points=150", "--set", "static@small:max_init_points=100",
        "--router", "vapr", "--router-set", "iterations=2"]


@pytest.fixture(scope="module")
def store(tiny_scene_dir, tmp_path_factory):
    """A run store of two experts and their mixtures on the tiny scene (kept in the store, as
    `run` keeps the synthetic scenes it generates), plus copies of its runs as a second seed,
    a second scene and a scene of a paper dataset (the report reads the store as it is; what a
    copy holds does not matter): averaged cells have several runs behind them, and the paper's
    values have rows of ours to sit beside."""
    runs = tmp_path_factory.mktemp("runs")
    out = CliRunner().invoke(cli, ["run", *ARGS, "--scene", str(tiny_scene_dir), "--runs", str(runs)])
    assert out.exit_code == 0, out.output
    shutil.copytree(tiny_scene_dir, runs / SCENES_DIR / "mixed-tiny")  # kept in the store: ground truth shown
    scene_dir = runs / "synthetic" / "mixed"
    for done in sorted(scene_dir.glob("*/*/seed0/DONE")):
        for dataset, scene, seed in (("synthetic", "mixed", 1), ("synthetic", "other", 0), (PAPER, PAPER_SCENE, 0)):
            copy = runs / dataset / scene / done.parent.relative_to(scene_dir).parent / f"seed{seed}"
            shutil.copytree(done.parent, copy)
            config = json.loads((copy / "config.json").read_text())
            config["run"].update(dataset=dataset, scene=scene, seed=seed)
            (copy / "config.json").write_text(json.dumps(config))
    paper_scene = runs / PAPER / PAPER_SCENE
    shutil.copytree(paper_scene / "static" / "tiny", paper_scene / "stg" / "default")  # an expert the paper reports
    return runs


@pytest.fixture(scope="module")
def report(store, tmp_path_factory):
    out = tmp_path_factory.mktemp("html") / "report"
    index = write_report(store, out)
    assert index == out / "index.html" and index.is_file()
    return out


@pytest.fixture(scope="module")
def browser():
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (dev extras)")
    if not CHROMIUM.is_file():
        pytest.skip(f"{CHROMIUM} is missing (Debian's chromium package; .ci/run installs it)")
    with sync_api.sync_playwright() as pw:
        chromium = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


class Loaded:
    """One page opened in the browser: what it logged, what it requested outside the report
    folder, its images, ids, links and tables."""

    def __init__(self, browser, path: Path):
        context = browser.new_context()
        self.errors: list[str] = []
        self.outside: list[str] = []

        def route(r):
            if r.request.url.startswith("file:"):
                r.continue_()
            else:
                self.outside.append(r.request.url)
                r.abort()

        context.route("**/*", route)
        page = context.new_page()
        page.on("console", lambda m: self.errors.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: self.errors.append(str(e)))
        page.goto(path.resolve().as_uri(), wait_until="load")
        self.images = page.evaluate("[...document.images].map(i => [i.getAttribute('src'), i.complete, "
                                    "i.naturalWidth])")
        self.ids = set(page.evaluate("[...document.querySelectorAll('[id]')].map(e => e.id)"))
        self.links = page.evaluate("[...document.querySelectorAll('a[href]')].map(a => a.href)")
        self.sections = page.evaluate("[...document.querySelectorAll('section[data-table-section]')]"
                                      ".map(s => s.dataset.tableSection)")
        self.tables = page.evaluate("[...document.querySelectorAll('table[data-table]')].map(t => t.dataset.table)")
        self.figures = page.evaluate("[...document.querySelectorAll('figure[data-figure]')].map(f => "
                                     "[f.dataset.figure, f.querySelectorAll('img').length, "
                                     "f.querySelectorAll('p.missing').length])")
        # number cells: [table, row header, column index, text, href or null, paper row]
        self.cells = page.evaluate(
            "[...document.querySelectorAll('table[data-table] tbody tr')].flatMap(tr => "
            "[...tr.querySelectorAll('td')].map((td, k) => [tr.closest('table').dataset.table, "
            "tr.querySelector('th').textContent, k, td.textContent, "
            "td.querySelector('a') ? td.querySelector('a').href : null, tr.classList.contains('paper')]))")
        context.close()


@pytest.fixture(scope="module")
def pages(report, browser) -> dict[str, Loaded]:
    """Every page of the report, loaded: relative path -> Loaded."""
    return {p.relative_to(report).as_posix(): Loaded(browser, p) for p in sorted(report.rglob("*.html"))}


def test_the_pages_of_the_report(report):
    names = sorted(p.relative_to(report).as_posix() for p in report.rglob("*.html"))
    assert names == ["d-n3v/index.html", f"d-n3v/scene-{PAPER_SCENE}.html", "d-synthetic/index.html",
                     "d-synthetic/scene-mixed.html", "d-synthetic/scene-other.html", "index.html", "runs.html"]
    assert (report / MARKER).is_file()


def test_every_page_loads_without_errors_or_network(pages):
    for name, page in pages.items():
        assert page.errors == [], name
        assert page.outside == [], name
        assert page.images or name in ("index.html", "runs.html"), name
        for src, complete, width in page.images:
            assert complete and width > 0, (name, src)


def test_every_table_and_figure_is_present(store, pages):
    df, nt = results(store), notes(store)
    for name in ("d-synthetic/index.html", "d-synthetic/scene-mixed.html", "d-synthetic/scene-other.html"):
        page = pages[name]
        assert page.sections == list(TABLES), name  # a section per registered table, in order
        scene = re.search(r"scene-(\w+)", name)
        rows = df[df.scene == scene[1]] if scene else df
        for table in TABLES:
            if table == "paper":
                continue
            opts = {"dataset": "synthetic", "notes": nt, "scene": scene[1] if scene else "mixed"}
            try:
                build_table(table, rows, **opts)
            except ConfigError:
                continue
            assert table in page.tables, (name, table)  # every table that can be built is shown
        assert {"main", "router-ablation", "experts", "mixture", "overview", "per-frame"} <= set(page.tables)
    figures = {f[0]: f[1:] for f in pages["d-synthetic/index.html"].figures}
    assert list(figures) == list(FIGURES)
    for name, (images, missing) in figures.items():
        assert (images > 0) != (missing > 0), name  # an image, or the message saying what to run
    assert figures["gates"][0] == 1  # the store has a router: its gate maps are drawn
    scene = pages["d-synthetic/scene-mixed.html"]
    truth = [src for src, _, _ in scene.images if "/truth-" in src]
    gates = [src for src, _, _ in scene.images if "-gates-" in src]
    assert len(truth) == 3 and len(gates) == 2 * 3  # 3 test views; the router's and the oracle's gates
    assert not [src for src, _, _ in pages["d-synthetic/scene-other.html"].images if "/truth-" in src]


def test_every_link_resolves(report, pages):
    checked = 0
    for name, page in pages.items():
        for href in page.links:
            url = urlparse(href)
            assert url.scheme == "file", (name, href)
            target = Path(unquote(url.path))
            assert target.is_file() and report.resolve() in target.resolve().parents, (name, href)
            if url.fragment:
                rel = target.resolve().relative_to(report.resolve()).as_posix()
                assert unquote(url.fragment) in pages[rel].ids, (name, href)
            checked += 1
    assert checked > 100


def _anchor_of(pages, href: str) -> str:
    assert href is not None and "/runs.html#" in href, href
    return href.rsplit("#", 1)[1]


def _main_cell(page: Loaded, label: str, column: int) -> list:
    return [c for c in page.cells if c[0] == "main" and c[1].startswith(label) and c[2] == column]


def test_every_number_links_to_its_runs(store, report, pages):
    runs = pages["runs.html"]
    for name, page in pages.items():
        for table, row, _, text, href, paper in page.cells:
            if paper or table == "paper" or not re.search(r"\d", text):
                continue
            assert href is not None, (name, table, row, text)  # a number of ours without its run
            assert _anchor_of(pages, href) in runs.ids
    psnr = results(store).query("method == 'moe-vapr' and metric == 'psnr'").set_index(["scene", "seed"]).value
    label = f"moe-vapr ({VARIANT})"
    # one run of the scene: the cell links to that very run
    cell = _main_cell(pages["d-synthetic/scene-other.html"], label, 0)
    assert [c[3] for c in cell] == [f"{psnr[('other', 0)]:.2f}"]
    assert _anchor_of(pages, cell[0][4]) == "run-" + slug(f"synthetic/other/moe-vapr/{VARIANT}/seed0")
    # seeds 0 and 1 of a scene: the set of exactly those two runs
    cell = _main_cell(pages["d-synthetic/scene-mixed.html"], label, 0)
    assert [c[3] for c in cell] == [f"{psnr[('mixed', 0)]:.2f} ± 0.00"]  # the seeds' mean ± std (copies)
    listed = _set_members(report, _anchor_of(pages, cell[0][4]))
    assert listed == [f"synthetic/mixed/moe-vapr/{VARIANT}/seed{s}" for s in (0, 1)]
    # the dataset's average over scenes: all three runs; the text cells of the winners table too
    average = _main_cell(pages["d-synthetic/index.html"], label, 6)  # (Average, PSNR) after 2 scenes x 3 metrics
    assert len(_set_members(report, _anchor_of(pages, average[0][4]))) == 3
    winners = [c for c in pages["d-synthetic/index.html"].cells if c[0] == "winners"]
    assert winners and all(c[4] for c in winners if re.search(r"\d", c[3]))


def _set_members(report: Path, anchor: str) -> list[str]:
    """Run names listed under a set anchor of the runs page."""
    assert anchor.startswith("set-"), anchor
    item = re.search(rf'<li id="{anchor}">(.*?)</li>', (report / "runs.html").read_text())[1]
    return re.findall(r'<a href="#run-[^"]+">([^<]+)</a>', item)


def test_paper_values_sit_beside_ours_without_links(pages, report):
    cells = [c for c in pages["d-synthetic/index.html"].cells if c[0] == "router-ablation"]
    paper = [c for c in cells if c[5]]
    assert paper and all("(paper, N3V)" in c[1] for c in paper)
    assert all(c[4] is None for c in paper)  # published values have no run here
    assert any(c[4] for c in cells if not c[5])
    # on a paper dataset the main table puts the published row right after ours
    main = [c for c in pages["d-n3v/index.html"].cells if c[0] == "main" and c[2] == 0]
    rows = [c[1].removesuffix(" [uncommitted]") for c in main]
    ours = rows.index("stg")
    assert rows[ours + 1] == "stg (paper)" and main[ours + 1][5] and not main[ours][5]
    assert main[ours + 1][3] == "28.16" and main[ours + 1][4] is None  # paper Table 1, coffee_martini
    assert main[ours][4] is not None
    # and the dataset's published tables as printed; our synthetic dataset has none
    html = (report / "d-n3v" / "index.html").read_text()
    assert "<h3>Paper Table 1: PSNR per scene (N3V)</h3>" in html
    assert "The paper publishes no values for dataset synthetic." in (report / "d-synthetic" / "index.html").read_text()


def test_the_runs_page_records_provenance(store, pages, report):
    html = (report / "runs.html").read_text()
    ids = results(store).drop_duplicates("run_dir")
    assert len(ids) == 25  # 6 methods x (2 seeds of mixed, other, the paper scene) + stg there
    for _, r in ids.iterrows():
        rel = Path(r.run_dir).relative_to(store).as_posix()
        row = re.search(rf'<tr id="(run-[^"]+)"><td><a href="[^"]+">{re.escape(rel)}</a></td>(.*?)</tr>', html)
        assert row, rel
        cells = re.findall(r"<td>(.*?)</td>", row[2])
        assert cells[0] == r.key and cells[1] == r.code_version and cells[2] == r.device
        assert cells[4] == r.completed_at
        assert "<code>" in cells[5]  # the command that made it
    assert command_line().split()[0] in html


def test_command_line_names_the_program():
    assert command_line(["/venv/bin/moegs-bench", "run", "--scene", "a b"]) == "moegs-bench run --scene 'a b'"
    assert command_line(["/x/moegs_bench/__main__.py", "report"]) == "python -m moegs_bench report"


def test_the_report_is_self_contained_and_small(report, store):
    files = [p for p in report.rglob("*") if p.is_file()]
    for path in files:
        data = path.read_bytes()
        assert b"http://" not in data and b"https://" not in data, path  # nothing points to the network
    html = "".join(p.read_text() for p in report.rglob("*.html"))
    assert "<script" not in html
    for src in re.findall(r'(?:src|href)="([^"#]+)', html):
        assert not src.startswith(("/", "file:", "data:")) or src == "data:,", src  # relative links only
    size = sum(p.stat().st_size for p in files)
    assert size < 2_000_000, size
    from PIL import Image

    for path in files:
        if path.suffix in (".png", ".jpg") and "/fig/" not in path.as_posix():
            with Image.open(path) as im:
                assert im.width <= 320, path


def test_a_rewrite_replaces_the_report_and_a_failed_one_keeps_it(store, tmp_path, monkeypatch):
    monkeypatch.setattr(html_pages, "figure_section", lambda site, dataset: "")  # the folder swap is tested here
    out = tmp_path / "report"
    write_report(store, out, dataset="synthetic")
    (out / "stale.html").write_text("from an earlier report")
    write_report(store, out)
    assert not (out / "stale.html").exists()  # replaced whole
    before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}

    def broken(site):
        raise RuntimeError("disk full")

    monkeypatch.setattr(html_write, "write_runs_page", broken)
    with pytest.raises(RuntimeError, match="disk full"):
        write_report(store, out)
    assert {p: p.read_bytes() for p in out.rglob("*") if p.is_file()} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report"]  # no half-written folder left


def test_bad_input_is_one_clear_error(store, tmp_path):
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep me")
    with pytest.raises(ConfigError, match=r"--html .*mine: folder holds other files"):
        write_report(store, foreign)
    assert (foreign / "notes.txt").read_text() == "keep me"
    with pytest.raises(ConfigError, match=r"--runs .*nowhere: no such run store"):
        write_report(tmp_path / "nowhere", tmp_path / "out")
    with pytest.raises(ConfigError, match="no completed runs of dataset 'technicolor'"):
        write_report(store, tmp_path / "out", dataset="technicolor")
    assert not (tmp_path / "out").exists()
