"""Report tables: registry, the main table's values, and markdown / CSV / LaTeX output."""

from __future__ import annotations

import csv
import io
import math

import pandas as pd
import pytest

from moegs_bench.errors import ConfigError
from moegs_bench.report.tables import (
    TABLES,
    build_table,
    format_table,
    latex_escape,
    register_table,
)

# psnr by (method, variant, scene, seed); ssim = psnr / 100; lpips only for "stg"
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
            rows.append({**base, "metric": "lpips", "value": 0.1 + seed * 0.02})
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
    with pytest.raises(ConfigError, match="colour"):
        build_table("main", _tidy(), colour="red")
    with pytest.raises(ConfigError, match="value"):
        build_table("main", _tidy().drop(columns="value"))
    with pytest.raises(ValueError, match="already registered"):
        register_table("main", "again")(lambda df: df)


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
    assert stg[("Average", "LPIPS", "mean")] == pytest.approx(0.11)
    assert moe[("Average", "PSNR", "mean")] == pytest.approx(31.0)
    assert math.isnan(moe[("birthday", "PSNR", "std")])  # one seed: no std
    assert math.isnan(moe[("train", "LPIPS", "mean")]) and math.isnan(
        moe[("Average", "LPIPS", "mean")]
    )
    notes = t.attrs["footnotes"]
    assert any("over seeds (n = 1–2)" in n for n in notes)
    assert any(n.startswith("LPIPS") and "unavailable" in n for n in notes)


def test_main_table_notes_explain_missing_lpips():
    notes = pd.DataFrame(
        [
            dict(
                dataset="technicolor",
                scene="train",
                method="moe",
                variant="n3",
                seed=0,
                metric="lpips",
                note="unavailable: AlexNet weights not found",
            )
        ]
    )
    t = build_table("main", _tidy(), notes=notes)
    assert (
        "LPIPS missing in 2 cell(s): unavailable: AlexNet weights not found" in t.attrs["footnotes"]
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
    assert "\n- LPIPS missing" in md


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
        body["moe (n3)"]["train LPIPS"] == "n/a" and body["moe (n3)"]["birthday PSNR std"] == "n/a"
    )
    back = pd.read_csv(io.StringIO(text), index_col=0)
    assert back.loc["stg", "Average PSNR"] == pytest.approx(29.0)
    assert math.isnan(back.loc["moe (n3)", "Average LPIPS"])


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
