"""The paper's published tables (moegs_bench/leaderboards/paper) and the report tables that show them."""

from __future__ import annotations

import csv
import io
import math
import re
import shutil
from pathlib import Path

import pandas as pd
import pytest

from moegs_bench.errors import ConfigError
from moegs_bench.report import leaderboard as lb
from moegs_bench.report.tables import TIDY_COLUMNS, build_table, format_table

PAPER_TEXT = Path("/work/shared/paper/moe-gs-paper.txt")
N3V = ["coffee_martini", "cook_spinach", "cut_roasted_beef", "flame_salmon_1", "flame_steak",
       "sear_steak"]  # fmt: skip

# (table, scene, method, variant, metric) -> value as printed in the paper
SPOT = {
    (1, "sear_steak", "moe-vapr", "N=4", "psnr"): 34.42,
    (1, "average", "HyperReel", "default", "psnr"): 31.10,
    (2, "Birthday", "stg", "default", "psnr"): 32.16,
    (3, "average", "moe-vapr", "N=2, pruning 55%", "fps"): 83,
    (3, "average", "stg", "default", "memory_mb"): 609.5,
    (4, "average", "moe-vapr", "N=3", "psnr"): 33.23,
    (4, "average", "moe-vapr", "N=3", "ssim"): 0.954,
    (4, "average", "moe-vapr", "N=3", "lpips"): 0.021,
    (4, "average", "moe-pixel", "N=3", "psnr"): 31.12,
    (5, "average", "moe-vapr", "N=3, w/o single-pass", "memory_mb"): 270,
    (6, "average", "moe-vapr", "N=3, budget 20%", "psnr"): 32.60,
    (7, "average", "ex4dgs", "distilled", "lpips"): 0.079,
    (8, "cut_roasted_beef", "moe-vapr", "N=4", "psnr"): 35.08,
    (9, "Birthday", "stg", "default", "psnr"): 31.90,
    (10, "banana", "moe-vapr", "N=2", "psnr"): 24.75,
    (11, "Fabien", "ed3dgs", "retrained", "psnr"): 34.7,
    (12, "average", "4dgs", "default", "psnr_min"): 30.18,
    (13, "average", "ed3dgs", "distilled", "ssim"): 0.918,
}


@pytest.fixture(scope="module")
def paper() -> pd.DataFrame:
    return lb.load_paper()


def _value(paper: pd.DataFrame, table, scene, method, variant, metric) -> float:
    hit = paper[
        (paper["table"] == table)
        & (paper["scene"] == scene)
        & (paper["method"] == method)
        & (paper["variant"] == variant)
        & (paper["metric"] == metric)
    ]
    assert len(hit) == 1, (table, scene, method, variant, metric)
    return float(hit["value"].iloc[0])


def test_spot_values_match_the_paper(paper):
    for key, expected in SPOT.items():
        assert _value(paper, *key) == pytest.approx(expected, abs=1e-9), key
    stg = paper[(paper["table"] == 1) & (paper["method"] == "stg")]
    assert set(stg["note"]) == {"†: trained on a dataset split into 150 frames"}


def test_every_file_parses_with_required_columns(paper):
    files = lb.paper_files()
    assert sorted(files) == list(range(1, 14))
    for number, path in files.items():
        with path.open() as f:
            header = next(csv.reader(f))
        assert header[:7] == list(lb.PAPER_COLUMNS) and header[7:] in ([], ["note"]), path
        one = lb.read_paper_csv(path)
        assert len(one) and (one["table"] == number).all()
        assert one["value"].map(math.isfinite).all()
    assert set(paper["dataset"]) == set(lb.PAPER_DATASETS)
    assert set(paper["metric"]) <= set(lb.PAPER_METRICS)
    assert len(lb.load_paper(table=4)) == 9 and set(
        lb.load_paper(dataset="hypernerf")["table"]
    ) == {10}


def _table_block(text: str, number: int) -> list[str]:
    """Markdown rows of the paper's Table `number` (from its caption to the next caption)."""
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(f"Table {number}:"))
    end = next(
        (i for i in range(start + 1, len(lines)) if re.match(r"Table \d+:", lines[i])), len(lines)
    )
    return [line for line in lines[start:end] if line.startswith("|")]


@pytest.mark.skipif(not PAPER_TEXT.is_file(), reason="paper text not present")
def test_every_printed_number_is_transcribed(paper):
    """Each CSV value is a cell of its table as printed, and each numeric cell has a row."""
    text = PAPER_TEXT.read_text()
    for number in range(1, 14):
        block = _table_block(text, number)
        cells = [c.strip() for row in block for c in row.strip("|").split("|")]
        numeric = [c for c in cells if re.fullmatch(r"\d+(\.\d+)?", c)]
        rows = paper[paper["table"] == number]
        from_text = rows["note"].str.contains("from the text")
        assert sorted(rows.loc[~from_text, "printed"]) == sorted(numeric), number
        for printed in rows.loc[from_text, "printed"]:
            assert f"{printed} hours" in text


def _copy_papers(tmp_path: Path) -> Path:
    root = tmp_path / "paper"
    shutil.copytree(lb.paper_dir(), root)
    return root


@pytest.mark.parametrize(
    ("old", "new", "match"),
    [
        ("sear_steak,moe-vapr,N=4,psnr,34.42", "sear_steak,moe-vapr,N=4,psnr,abc", "not a number"),
        ("sear_steak,moe-vapr,N=4,psnr,34.42", "sear_steak,moe-vapr,N=4,psnr,inf", "not finite"),
        ("sear_steak,moe-vapr,N=4,psnr,34.42", "searsteak,moe-vapr,N=4,psnr,34.42", "scene"),
        ("sear_steak,moe-vapr,N=4,psnr,34.42", "sear_steak,moe-vapr,N=4,PSNR,34.42", "metric"),
        ("1,n3v,sear_steak,moe-vapr,N=4", "1,kitti,sear_steak,moe-vapr,N=4", "dataset"),
        ("1,n3v,sear_steak,moe-vapr,N=4", "2,n3v,sear_steak,moe-vapr,N=4", "file name"),
        ("sear_steak,moe-vapr,N=4,psnr,34.42", "cut_roasted_beef,moe-vapr,N=4,psnr,35.20", "dup"),
        ("table,dataset,scene", "tab,dataset,scene", "header"),
    ],
)
def test_bad_csv_names_the_file_and_row(tmp_path, old, new, match):
    root = _copy_papers(tmp_path)
    path = root / "table01_n3v-psnr.csv"
    text = path.read_text()
    assert old in text
    path.write_text(text.replace(old, new, 1))
    with pytest.raises(ConfigError, match=match) as err:
        lb.load_paper(table=1, root=root)
    assert "table01_n3v-psnr.csv" in str(err.value)
    if match != "header":
        assert re.search(r"table01_n3v-psnr\.csv:\d+:", str(err.value))


def test_unknown_table_dataset_and_bad_file_name(tmp_path):
    with pytest.raises(ConfigError, match="published tables: 1, 2"):
        lb.load_paper(table=14)
    with pytest.raises(ConfigError, match="synthetic"):
        lb.load_paper(dataset="synthetic")
    root = _copy_papers(tmp_path)
    (root / "table1_x.csv").write_text("x\n")
    with pytest.raises(ConfigError, match="table1_x.csv"):
        lb.load_paper(root=root)


def test_expert_set_variants():
    assert lb.variant_matches("n3v", "N=2", "stg+ex4dgs")
    assert lb.variant_matches("technicolor", "N=3", "ex4dgs+ed3dgs+stg")
    assert not lb.variant_matches("n3v", "N=3", "ex4dgs+stg")
    assert lb.variant_matches("n3v", "default", "default")


# -- report tables --------------------------------------------------------------------------------
def _tidy(entries: dict[tuple[str, str], float], scenes, dataset="n3v", seeds=(0, 1)):
    """psnr = base + scene index + seed; ssim = 0.9; lpips_3dgs = 0.05 + seed / 100 (the
    convention the tables compare with the paper); the official lpips = 0.5 + seed / 100."""
    rows = []
    for (method, variant), base in entries.items():
        for i, scene in enumerate(scenes):
            for seed in seeds:
                ident = dict(
                    dataset=dataset, scene=scene, method=method, variant=variant, seed=seed
                )
                rows.append({**ident, "metric": "psnr", "value": base + i + seed})
                rows.append({**ident, "metric": "ssim", "value": 0.9})
                rows.append({**ident, "metric": "lpips_3dgs", "value": 0.05 + seed / 100})
                rows.append({**ident, "metric": "lpips", "value": 0.5 + seed / 100})
    return pd.DataFrame(rows, columns=TIDY_COLUMNS)


ROUTERS = {
    ("moe-pixel", "ex4dgs+stg"): 29.0,
    ("moe-volume", "ex4dgs+stg"): 30.0,
    ("moe-vapr", "ex4dgs+stg"): 31.0,
    ("uniform-average", "ex4dgs+stg"): 28.0,
}


def test_router_ablation_shape_and_values():
    t = build_table("router-ablation", _tidy(ROUTERS, ["a", "b"], dataset="synthetic"))
    assert list(t.index) == [
        "Pixel Router",
        "Volume Router",
        "Volume-aware Pixel Router",
        "Uniform average",
        "Pixel Router (paper, N3V)",
        "Volume Router (paper, N3V)",
        "Volume-aware Pixel Router (paper, N3V)",
    ]
    assert list(t.columns) == [
        (m, s) for m in ("PSNR", "SSIM", "LPIPS (3DGS)") for s in ("mean", "std")
    ]
    # scenes a, b add 0 and 1, seeds 0 and 1 add 0 and 1: mean +1.0, per-seed averages differ by 1
    assert t.loc["Volume-aware Pixel Router", ("PSNR", "mean")] == pytest.approx(32.0)
    assert t.loc["Pixel Router", ("PSNR", "std")] == pytest.approx(math.sqrt(0.5))
    assert t.loc["Volume Router", ("LPIPS (3DGS)", "mean")] == pytest.approx(0.055)
    assert t.loc["Volume-aware Pixel Router (paper, N3V)", ("PSNR", "mean")] == 33.23
    assert t.loc["Volume-aware Pixel Router (paper, N3V)", ("SSIM", "mean")] == 0.954
    assert t.loc["Volume-aware Pixel Router (paper, N3V)", ("LPIPS (3DGS)", "mean")] == 0.021
    assert math.isnan(t.loc["Pixel Router (paper, N3V)", ("PSNR", "std")])
    assert any("Table 4" in n for n in t.attrs["footnotes"])

    md = format_table(t, "markdown")
    assert "| Volume-aware Pixel Router (paper, N3V) |" in md and "33.23" in md
    assert "32.00 ± 0.71" in md
    rows = list(csv.reader(io.StringIO(format_table(t, "csv"))))
    assert rows[0] == [
        "router", "PSNR", "PSNR std", "SSIM", "SSIM std", "LPIPS (3DGS)", "LPIPS (3DGS) std"
    ]
    assert rows[3][:2] == ["Volume-aware Pixel Router", "32.00"]
    tex = format_table(t, "latex")
    assert "Volume-aware Pixel Router (paper, N3V) & 33.23 & 0.954 & 0.021 \\\\" in tex


def test_router_ablation_options():
    both = {**ROUTERS, ("moe-vapr", "ex4dgs+stg+ed3dgs"): 32.0}
    df = _tidy(both, ["a"], seeds=(0,))
    t = build_table("router-ablation", df, paper=False, baselines=False)
    assert list(t.index) == [
        "Pixel Router (ex4dgs+stg)",
        "Volume Router (ex4dgs+stg)",
        "Volume-aware Pixel Router (ex4dgs+stg)",
        "Volume-aware Pixel Router (ex4dgs+stg+ed3dgs)",
    ]
    assert math.isnan(t.iloc[0][("PSNR", "std")])  # one seed
    t = build_table("router-ablation", df, variants=["ex4dgs+stg+ed3dgs"], paper=False)
    assert list(t.index) == ["Volume-aware Pixel Router"]
    with pytest.raises(ConfigError, match="no results for methods"):
        build_table("router-ablation", _tidy({("stg", "default"): 30.0}, ["a"]), paper=False)
    only_paper = build_table("router-ablation", _tidy({("stg", "default"): 30.0}, ["a"]))
    assert len(only_paper) == 3


def test_main_shows_paper_rows_beside_ours():
    entries = {("stg", "default"): 30.0, ("moe-vapr", "ex4dgs+stg"): 31.0, ("mine", "x"): 1.0}
    t = build_table("main", _tidy(entries, N3V))
    assert list(t.index) == [
        "stg",
        "stg (paper)",
        "moe-vapr (ex4dgs+stg)",
        "moe-vapr (ex4dgs+stg) (paper)",
        "mine (x)",
    ]
    assert t.loc["stg (paper)", ("flame_steak", "PSNR", "mean")] == 33.25  # Table 1
    assert t.loc["stg (paper)", ("Average", "PSNR", "mean")] == 31.92  # published average
    assert t.loc["stg (paper)", ("sear_steak", "LPIPS (3DGS)", "mean")] == 0.026  # Table 8
    assert t.loc["moe-vapr (ex4dgs+stg) (paper)", ("Average", "PSNR", "mean")] == 32.54
    assert math.isnan(t.loc["moe-vapr (ex4dgs+stg) (paper)", ("sear_steak", "SSIM", "mean")])
    notes = " ".join(t.attrs["footnotes"])
    assert "Table 1" in notes and "Table 8" in notes and "150 frames" in notes
    assert list(build_table("main", _tidy(entries, N3V), paper=False).index) == [
        "stg",
        "moe-vapr (ex4dgs+stg)",
        "mine (x)",
    ]
    sub = build_table("main", _tidy(entries, N3V[:2]), metrics=["psnr"])
    # over a subset of scenes the paper's average is recomputed over those scenes
    assert sub.loc["stg (paper)", ("Average", "PSNR", "mean")] == pytest.approx((28.16 + 33.09) / 2)
    every = build_table("main", _tidy(entries, N3V[:2]), metrics=["psnr"], paper="all")
    assert "HyperReel (paper)" in every.index and "moe-vapr (N=4) (paper)" in every.index
    for fmt in ("markdown", "csv", "latex"):
        assert "stg (paper)" in format_table(t, fmt)
    with pytest.raises(ConfigError, match="paper"):
        build_table("main", _tidy(entries, N3V), paper="some")


def test_main_paper_rows_on_technicolor():
    entries = {("moe-vapr", "stg+ed3dgs+ex4dgs"): 31.0}
    t = build_table("main", _tidy(entries, ["Birthday"], dataset="technicolor"))
    assert list(t.index) == ["moe-vapr (stg+ed3dgs+ex4dgs)", "moe-vapr (stg+ed3dgs+ex4dgs) (paper)"]
    assert t.iloc[1][("Birthday", "PSNR", "mean")] == 33.26


def test_paper_table():
    empty = pd.DataFrame(columns=TIDY_COLUMNS)
    t = build_table("paper", empty, paper_table=4)
    assert list(t.index) == ["moe-pixel (N=3)", "moe-volume (N=3)", "moe-vapr (N=3)"]
    assert list(t.columns) == ["PSNR", "SSIM", "LPIPS"]
    assert t.loc["moe-vapr (N=3)", "SSIM"] == 0.954
    t1 = build_table("paper", empty, paper_table=1)
    assert t1.loc["stg †", ("sear_steak", "PSNR")] == 33.77
    assert t1.loc["moe-vapr (N=4)", ("Average", "PSNR")] == 33.27
    t3 = build_table("paper", empty, paper_table=3)
    md = format_table(t3, "markdown")
    assert " 88.5 |" in md and "Memory (MB)" in md and "609.5" in md
    t9 = build_table("paper", empty, paper_table=9)
    assert list(dict.fromkeys(t9.columns.get_level_values("metric"))) == ["PSNR", "SSIM", "LPIPS"]
    assert math.isnan(t9.loc["DyNeRF", ("Birthday", "SSIM")])  # printed N/A
    for fmt in ("markdown", "csv", "latex"):
        assert "0.954" in format_table(t, fmt)
    with pytest.raises(ConfigError, match="published tables"):
        build_table("paper", empty, paper_table=99)


def test_router_ablation_explains_missing_metric():
    df = _tidy(ROUTERS, ["a", "b"])
    gone = (df["method"] == "moe-volume") & df["metric"].str.startswith("lpips")
    df = df[~(gone & (df["scene"] == "b"))]
    notes = pd.DataFrame(
        [
            dict(dataset="n3v", scene="b", method="moe-volume", variant="ex4dgs+stg", seed=0,
                 metric=metric, note="unavailable: AlexNet weights not found")
            for metric in ("lpips", "lpips_3dgs")
        ]
    )  # fmt: skip
    t = build_table("router-ablation", df, notes=notes, paper=False)
    assert math.isnan(t.loc["Volume Router", ("LPIPS (3DGS)", "mean")])
    assert (
        "Volume Router: LPIPS (3DGS) blank (unavailable: AlexNet weights not found)."
        in (t.attrs["footnotes"])
    )
    assert t.loc["Volume Router", ("PSNR", "mean")] == pytest.approx(31.0)
