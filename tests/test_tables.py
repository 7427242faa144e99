"""Report tables: registry, the main table's values, and markdown / CSV / LaTeX output."""

from __future__ import annotations

import csv
import io
import math
import sys
import types

import pandas as pd
import pytest

from moegs_bench.data import datasets as ds
from moegs_bench.errors import ConfigError
from moegs_bench.report import leaderboard as lb
from moegs_bench.report import tables as tables_pkg
from moegs_bench.report.tables import (
    TABLES,
    TIDY_COLUMNS,
    build_table,
    dataset_label,
    format_table,
    latex_escape,
    register_table,
    table_options,
)
from moegs_bench.report.tables import common as table_common

# psnr by (method, variant, scene, seed); ssim = psnr / 100; LPIPS only for "stg": lpips_3dgs
# (the convention the main table shows) 0.1 + 0.02 seed, the official lpips 0.3 + 0.02 seed
PSNR = {
    ("stg", "default", "birthday", 0): 30.0,
    ("stg", "default", "birthday", 1): 32.0,
    ("stg", "default", "train", 0): 26.0,
    ("stg", "default", "train", 1): 28.0,
    ("moe", "n3", "birthday", 0): 33.0,
    ("moe", "n3", "train", 0): 29.0,
}


def _tidy(with_other_dataset: bool = False) -> pd.DataFrame:
    rows = []
    for (method, variant, scene, seed), psnr in PSNR.items():
        base = dict(dataset="technicolor", scene=scene, method=method, variant=variant, seed=seed)
        rows.append({**base, "metric": "psnr", "value": psnr})
        rows.append({**base, "metric": "ssim", "value": psnr / 100})
        if method == "stg":
            rows.append({**base, "metric": "lpips_3dgs", "value": 0.1 + seed * 0.02})
            rows.append({**base, "metric": "lpips", "value": 0.3 + seed * 0.02})
        rows.append({**base, "metric": "train_seconds", "value": 100.0})
    if with_other_dataset:
        rows.append(
            dict(
                dataset="n3v",
                scene="flame_steak",
                method="stg",
                variant="default",
                seed=0,
                metric="psnr",
                value=31.0,
            )
        )
    return pd.DataFrame(rows)


def test_registry_and_unknown_names():
    assert "main" in TABLES and TABLES["main"].description
    with pytest.raises(ConfigError, match="valid tables: .*main"):
        build_table("nope", _tidy())
    with pytest.raises(ConfigError, match="value"):
        build_table("main", _tidy().drop(columns="value"))
    with pytest.raises(ValueError, match="already registered"):
        register_table("main", "again")(lambda df: df)


def _notes(dataset: str = "technicolor") -> pd.DataFrame:
    """A `bench.store.notes` frame: LPIPS (both conventions) of moe (n3) is unavailable."""
    return pd.DataFrame(
        [
            dict(dataset=dataset, scene="train", method="moe", variant="n3", seed=0,
                 metric=metric, note="unavailable: AlexNet weights not found")
            for metric in ("lpips", "lpips_3dgs")
        ]
    )  # fmt: skip


def _same(a: pd.DataFrame, b: pd.DataFrame) -> None:
    pd.testing.assert_frame_equal(a, b)
    assert a.attrs == b.attrs


def test_table_options_are_the_builders_keyword_parameters():
    assert table_options("overview") == {"dataset", "metrics"}
    assert table_options("paper") == {"paper_table", "dataset"}
    assert {"dataset", "notes", "paper", "methods"} <= table_options("main")
    assert "df" not in table_options("main")
    with pytest.raises(ConfigError, match="valid tables"):
        table_options("nope")


def test_build_table_drops_options_a_table_does_not_take():
    # the CLI passes notes= to every table; overview takes none. The two datasets make dataset=
    # necessary, and metrics= must arrive too: only the unknown option may be dropped.
    df = _tidy(with_other_dataset=True)
    plain = build_table("overview", df, dataset="technicolor", metrics=["ssim", "psnr"])
    with_notes = build_table(
        "overview", df, notes=_notes(), dataset="technicolor", metrics=["ssim", "psnr"]
    )
    _same(with_notes, plain)
    assert list(plain.columns) == ["SSIM", "PSNR"]
    assert list(plain.index) == ["stg", "moe (n3)"]
    _same(build_table("main", _tidy(), colour="red"), build_table("main", _tidy()))
    # the options a table does take are still checked by it
    with pytest.raises(ConfigError, match="kitti"):
        build_table("overview", df, notes=_notes(), dataset="kitti")
    with pytest.raises(ConfigError, match="several datasets"):
        build_table("overview", df, notes=_notes())
    with pytest.raises(ConfigError, match="paper must be"):
        build_table("main", _tidy(), paper="some", colour="red")


@pytest.fixture
def scratch_tables():
    """Names of tables a test registers from outside the package; unregistered afterwards."""
    names: list[str] = []
    yield names
    for name in names:
        TABLES.pop(name, None)


def test_table_registered_outside_the_package(scratch_tables):
    seen: dict[str, dict] = {}

    @register_table("test-count", "Rows per method")
    def count_table(df: pd.DataFrame, *, method: str | None = None) -> pd.DataFrame:
        rows = df if method is None else df[df["method"] == method]
        seen["count"] = {"method": method}
        return rows.groupby("method").size().to_frame("rows")

    @register_table("test-any", "Takes every option")
    def any_table(df: pd.DataFrame, **opts) -> pd.DataFrame:
        seen["any"] = opts
        return pd.DataFrame({"n": [len(df)]})

    @register_table("test-required", "Needs an option")
    def required_table(df: pd.DataFrame, column: str) -> pd.DataFrame:
        return df[[column]]

    scratch_tables += ["test-count", "test-any", "test-required"]
    assert table_options("test-count") == {"method"}
    t = build_table("test-count", _tidy(), method="stg", notes=_notes())
    assert seen["count"] == {"method": "stg"} and t.loc["stg", "rows"] == 20
    assert t.attrs == {"title": "Rows per method", "footnotes": []}
    assert "| stg    |   20 |" in format_table(t, "markdown")
    build_table("test-any", _tidy(), dataset="technicolor", colour="red")
    assert seen["any"] == {"dataset": "technicolor", "colour": "red"}  # **opts: nothing dropped
    assert list(build_table("test-required", _tidy(), column="scene").columns) == ["scene"]
    with pytest.raises(ConfigError, match="table test-required: .*column"):
        build_table("test-required", _tidy(), notes=_notes())


def test_every_module_of_the_package_registers_its_tables(tmp_path, monkeypatch, scratch_tables):
    # a new table is one new module in report/tables/: put one on the package's path
    (tmp_path / "extra_table.py").write_text(
        "from moegs_bench.report.tables import register_table\n\n\n"
        "@register_table('test-extra', 'From a new module')\n"
        "def extra_table(df):\n"
        "    return df\n"
    )
    scratch_tables.append("test-extra")
    monkeypatch.setattr(tables_pkg, "__path__", [*tables_pkg.__path__, str(tmp_path)])
    try:
        tables_pkg._load_all()
        assert TABLES["test-extra"].description == "From a new module"
    finally:
        sys.modules.pop(f"{tables_pkg.__name__}.extra_table", None)
    assert list(TABLES)[:4] == ["main", "router-ablation", "paper", "overview"]


def test_dataset_label_from_the_dataset_files():
    assert [dataset_label(n) for n in ("n3v", "technicolor", "hypernerf", "synthetic")] == [
        "N3V",
        "Technicolor",
        "HyperNeRF",
        "Synthetic",
    ]
    with pytest.raises(ConfigError, match="unknown dataset"):
        dataset_label("kitti")


def test_tables_name_datasets_by_their_label(tmp_path, monkeypatch):
    # relabel n3v in a copy of moegs_bench/datasets/: the tables must follow the file, not a fixed name
    for path in ds.datasets_dir().glob("*.toml"):
        text = path.read_text()
        if path.stem == "n3v":
            assert 'label = "N3V"' in text
            text = text.replace('label = "N3V"', 'label = "Neural 3D"')
        (tmp_path / path.name).write_text(text)
    monkeypatch.setattr(ds, "datasets_dir", lambda: tmp_path)
    assert dataset_label("n3v") == "Neural 3D"
    empty = pd.DataFrame(columns=TIDY_COLUMNS)
    assert build_table("paper", empty, paper_table=4).attrs["title"].endswith("(Neural 3D)")
    ours = pd.DataFrame(
        [dict(dataset="n3v", scene="flame_steak", method="stg", variant="default", seed=0,
              metric="psnr", value=31.0)]
    )  # fmt: skip
    main = build_table("main", ours, metrics=["psnr"])
    assert "stg (paper)" in main.index
    assert any("MoE-GS paper on Neural 3D (PSNR" in n for n in main.attrs["footnotes"])
    router = build_table("router-ablation", ours)
    assert "Volume-aware Pixel Router (paper, Neural 3D)" in router.index
    # without a label key the loader falls back to the title
    n3v = tmp_path / "n3v.toml"
    n3v.write_text(n3v.read_text().replace('label = "Neural 3D"\n', ""))
    assert dataset_label("n3v") == "Neural 3D Video (DyNeRF)"


def test_dataset_label_without_a_label_field(monkeypatch):
    # a DatasetSpec from before the `label` field: its title
    monkeypatch.setattr(
        table_common, "load_dataset", lambda name: types.SimpleNamespace(title=f"{name} title")
    )
    assert dataset_label("n3v") == "n3v title"


def test_main_table_values():
    t = build_table("main", _tidy())
    assert list(t.index) == ["stg", "moe (n3)"]
    assert list(dict.fromkeys(t.columns.get_level_values("scene"))) == [
        "birthday",
        "train",
        "Average",
    ]
    stg, moe = t.loc["stg"], t.loc["moe (n3)"]
    assert stg[("birthday", "PSNR", "mean")] == pytest.approx(31.0)
    assert stg[("birthday", "PSNR", "std")] == pytest.approx(math.sqrt(2))
    assert stg[("train", "SSIM", "mean")] == pytest.approx(0.27)
    assert stg[("Average", "PSNR", "mean")] == pytest.approx(29.0)
    # per-seed scene averages are 28 and 30
    assert stg[("Average", "PSNR", "std")] == pytest.approx(math.sqrt(2))
    assert stg[("Average", "LPIPS (3DGS)", "mean")] == pytest.approx(0.11)
    assert moe[("Average", "PSNR", "mean")] == pytest.approx(31.0)
    assert math.isnan(moe[("birthday", "PSNR", "std")])  # one seed: no std
    assert math.isnan(moe[("train", "LPIPS (3DGS)", "mean")]) and math.isnan(
        moe[("Average", "LPIPS (3DGS)", "mean")]
    )
    notes = t.attrs["footnotes"]
    assert any("over seeds (n = 1–2)" in n for n in notes)
    assert any(n.startswith("LPIPS") and "unavailable" in n for n in notes)


def test_main_table_notes_explain_missing_lpips():
    t = build_table("main", _tidy(), notes=_notes())
    assert (
        "LPIPS (3DGS) missing in 2 cell(s): unavailable: AlexNet weights not found"
        in t.attrs["footnotes"]
    )


def test_main_table_options():
    df = _tidy(with_other_dataset=True)
    with pytest.raises(ConfigError, match="several datasets"):
        build_table("main", df)
    with pytest.raises(ConfigError, match="kitti"):
        build_table("main", df, dataset="kitti")
    t = build_table(
        "main",
        df,
        dataset="technicolor",
        methods=["moe"],
        scenes=["train"],
        metrics=["psnr"],
        average=False,
    )
    assert list(t.index) == ["moe (n3)"]
    assert list(t.columns) == [("train", "PSNR", "mean"), ("train", "PSNR", "std")]
    assert t.iloc[0, 0] == pytest.approx(29.0)
    with pytest.raises(ConfigError, match="no results for method"):
        build_table("main", df, dataset="technicolor", methods=["hexplane"])


def test_main_table_missing_scene_blanks_average():
    df = _tidy()
    df = df[~((df.method == "moe") & (df.scene == "train"))]
    t = build_table("main", df)
    assert math.isnan(t.loc["moe (n3)", ("Average", "PSNR", "mean")])
    assert not math.isnan(t.loc["stg", ("Average", "PSNR", "mean")])
    assert any("no completed run" in n for n in t.attrs["footnotes"])
    assert any("Average is left blank" in n for n in t.attrs["footnotes"])


def test_markdown_format():
    md = format_table(build_table("main", _tidy()), "markdown")
    lines = md.splitlines()
    assert lines[0].startswith("| method") and "birthday" in lines[0] and "Average" in lines[0]
    sep = [c.strip() for c in lines[1].strip("|").split("|")]
    assert set(sep[0]) == {"-"} and all(c.rstrip(":") == "-" * (len(c) - 1) for c in sep[1:])
    widths = {len(line) for line in lines[:5]}
    assert len(widths) == 1  # aligned columns
    stg = next(line for line in lines if line.startswith("| stg"))
    cells = [c.strip() for c in stg.strip("|").split("|")]
    assert cells[:4] == ["stg", "31.00 ± 1.41", "0.310 ± 0.014", "0.110 ± 0.014"]
    moe = next(line for line in lines if line.startswith("| moe (n3)"))
    cells = [c.strip() for c in moe.strip("|").split("|")]
    assert cells[1:4] == ["33.00", "0.330", "—"]
    assert "\n- LPIPS (3DGS) missing" in md


def test_csv_format():
    text = format_table(build_table("main", _tidy()), "csv")
    rows = list(csv.reader(io.StringIO(text)))
    header = rows[0]
    assert header[:5] == [
        "method",
        "birthday PSNR",
        "birthday PSNR std",
        "birthday SSIM",
        "birthday SSIM std",
    ]
    body = {r[0]: dict(zip(header, r, strict=True)) for r in rows[1:]}
    assert body["stg"]["birthday PSNR"] == "31.00" and body["stg"]["birthday PSNR std"] == "1.41"
    assert (
        body["moe (n3)"]["train LPIPS (3DGS)"] == "n/a"
        and body["moe (n3)"]["birthday PSNR std"] == "n/a"
    )
    back = pd.read_csv(io.StringIO(text), index_col=0)
    assert back.loc["stg", "Average PSNR"] == pytest.approx(29.0)
    assert math.isnan(back.loc["moe (n3)", "Average LPIPS (3DGS)"])


def test_latex_format():
    tex = format_table(build_table("main", _tidy()), "latex", title="Technicolor: 100% of frames")
    assert "\\begin{tabular}{l" in tex and "\\toprule" in tex and "\\bottomrule" in tex
    assert "\\multicolumn{3}{c}{birthday}" in tex and "\\cmidrule(lr){2-4}" in tex
    assert "\\caption{Technicolor: 100\\% of frames}" in tex
    assert "stg & 31.00 $\\pm$ 1.41 & 0.310 $\\pm$ 0.014" in tex
    assert "moe (n3) & 33.00 & 0.330 & --" in tex
    body = [
        line for line in tex.splitlines() if line.endswith("\\\\") and not line.startswith(" &")
    ]
    assert all(line.count("&") == 9 for line in body if line.startswith(("stg", "moe", "method")))
    assert latex_escape("a_b & c#") == "a\\_b \\& c\\#"


def test_floatfmt_and_overview():
    t = build_table("overview", _tidy(), metrics=["psnr", "train_seconds"])
    assert list(t.columns) == ["PSNR", "train_seconds"]
    assert t.loc["stg", "PSNR"] == pytest.approx(29.0)
    md = format_table(t, "markdown")
    assert "| 29.00 |" in md and "|           100 |" in md  # whole numbers: no decimals
    md4 = format_table(t, "markdown", floatfmt={"psnr": 4})
    assert "29.0000" in md4
    with pytest.raises(ConfigError, match="html"):
        format_table(t, "html")


# -- the paper's LPIPS beside ours: same convention (3DGS-family, [0,1] inputs) ------------------
OURS_LPIPS = {"lpips": 0.5, "lpips_3dgs": 0.03}  # official vs 3DGS convention: far apart


def _with_lpips(dataset: str, scene: str, methods: dict[tuple[str, str], float]) -> pd.DataFrame:
    """One seed of `methods` ((method, variant) -> psnr) on one scene, with both LPIPS values."""
    rows = []
    for (method, variant), psnr in methods.items():
        base = dict(dataset=dataset, scene=scene, method=method, variant=variant, seed=0)
        metrics = {"psnr": psnr, "ssim": 0.9, **OURS_LPIPS}
        rows += [{**base, "metric": m, "value": v} for m, v in metrics.items()]
    return pd.DataFrame(rows, columns=TIDY_COLUMNS)


def test_main_table_compares_the_papers_lpips_with_lpips_3dgs():
    ours = _with_lpips("n3v", "sear_steak", {("stg", "default"): 30.0})
    t = build_table("main", ours)
    # by default the LPIPS column is the 3DGS convention, labelled so; no official column
    assert list(dict.fromkeys(t.columns.get_level_values("metric"))) == [
        "PSNR", "SSIM", "LPIPS (3DGS)"
    ]  # fmt: skip
    assert t.loc["stg", ("sear_steak", "LPIPS (3DGS)", "mean")] == pytest.approx(0.03)
    assert t.loc["stg (paper)", ("sear_steak", "LPIPS (3DGS)", "mean")] == 0.026  # Table 8
    notes = t.attrs["footnotes"]
    assert table_common.LPIPS_3DGS_NOTE in notes
    assert any("LPIPS (3DGS): Table 8" in n for n in notes)
    assert table_common.OFFICIAL_LPIPS_NOTE not in notes
    assert "LPIPS (3DGS)" in "\n".join(format_table(t, "markdown").splitlines()[:3])

    # the official convention on request: ours shown, the paper's row blank in that column
    both = build_table("main", ours, metrics=["psnr", "lpips", "lpips_3dgs"])
    assert both.loc["stg", ("sear_steak", "LPIPS", "mean")] == pytest.approx(0.5)
    assert math.isnan(both.loc["stg (paper)", ("sear_steak", "LPIPS", "mean")])
    assert both.loc["stg (paper)", ("sear_steak", "LPIPS (3DGS)", "mean")] == 0.026
    assert table_common.OFFICIAL_LPIPS_NOTE in both.attrs["footnotes"]
    official = build_table("main", ours, metrics=["psnr", "lpips"])
    assert official.loc["stg (paper)", ("sear_steak", "PSNR", "mean")] == 33.77  # Table 1
    assert math.isnan(official.loc["stg (paper)", ("sear_steak", "LPIPS", "mean")])
    assert table_common.LPIPS_3DGS_NOTE not in official.attrs["footnotes"]


def test_router_ablation_compares_the_papers_lpips_with_lpips_3dgs():
    routers = {("moe-pixel", "ex4dgs+stg"): 29.0, ("moe-vapr", "ex4dgs+stg"): 31.0}
    ours = _with_lpips("n3v", "sear_steak", routers)
    t = build_table("router-ablation", ours)
    assert list(dict.fromkeys(t.columns.get_level_values("metric"))) == [
        "PSNR", "SSIM", "LPIPS (3DGS)"
    ]  # fmt: skip
    paper_row = "Volume-aware Pixel Router (paper, N3V)"
    assert t.loc["Volume-aware Pixel Router", ("LPIPS (3DGS)", "mean")] == pytest.approx(0.03)
    assert t.loc[paper_row, ("LPIPS (3DGS)", "mean")] == 0.021  # Table 4
    assert table_common.LPIPS_3DGS_NOTE in t.attrs["footnotes"]
    both = build_table("router-ablation", ours, metrics=["psnr", "lpips", "lpips_3dgs"])
    assert both.loc["Volume-aware Pixel Router", ("LPIPS", "mean")] == pytest.approx(0.5)
    assert math.isnan(both.loc[paper_row, ("LPIPS", "mean")])
    assert both.loc[paper_row, ("LPIPS (3DGS)", "mean")] == 0.021
    assert table_common.OFFICIAL_LPIPS_NOTE in both.attrs["footnotes"]


def test_paper_lpips_maps_to_lpips_3dgs_and_stays_printed_as_lpips():
    assert lb.our_metric("lpips") == "lpips_3dgs" and lb.our_metric("psnr") == "psnr"
    t4 = lb.load_paper(table=4)
    assert "lpips" in set(t4["metric"])  # the files keep the paper's own name
    renamed = lb.as_our_metrics(t4)
    assert set(renamed["metric"]) == {"psnr", "ssim", "lpips_3dgs"}
    assert "lpips" in set(t4["metric"])  # a copy: the input is unchanged
    empty = pd.DataFrame(columns=TIDY_COLUMNS)
    assert list(build_table("paper", empty, paper_table=4).columns) == ["PSNR", "SSIM", "LPIPS"]
