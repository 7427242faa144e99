"""The efficiency tables (report/tables/efficiency.py): paper Table 3 (`efficiency`) and Table 5
(`efficiency-ablation`) built from a synthetic results frame: which stored number lands in which
row and column, the paper's values against the CSVs, and missing runs."""

from __future__ import annotations

import csv

import pandas as pd
import pytest

from moegs_bench.bench.efficiency import CPU_NOTE
from moegs_bench.errors import ConfigError
from moegs_bench.report import leaderboard as lb
from moegs_bench.report.tables import build_table, format_table
from moegs_bench.report.tables.efficiency import pruned_methods

SET2 = "ex4dgs+stg"
# (method, variant) -> index i: every metric's value encodes i, so a row or metric mix-up shows
RUNS = {("ex4dgs", "default"): 0, ("stg", "default"): 1, ("moe-vapr", SET2): 2, ("moe-vapr-p55", SET2): 3}
MIXTURES = {"moe-vapr", "moe-vapr-p55"}
# metric -> value of run i in scene "s1"; scene "s2" holds each value + 2, so the average is + 1
BASE = {"psnr": lambda i: 30.0 + i, "fps_n3v": lambda i: 100.0 + 10 * i, "fps": lambda i: 200.0 + 10 * i,
        "model_mb": lambda i: 50.0 + i, "render_memory_mb_n3v": lambda i: 500.0 + i,
        "num_gaussians": lambda i: 1000.0 * (i + 1)}
MULTI = {"fps_multipass_n3v": lambda i: 60.0 + i, "fps_multipass": lambda i: 150.0 + i,
         "render_memory_mb_multipass_n3v": lambda i: 700.0 + i}


def frame(runs=RUNS, scenes=("s1", "s2"), skip=()) -> pd.DataFrame:
    """Tidy rows of `runs` on `scenes`, seed 0, without the metrics in `skip`."""
    rows = []
    for (method, variant), i in runs.items():
        metrics = {**BASE, **(MULTI if method.startswith("moe-") else {})}
        for k, scene in enumerate(scenes):
            for metric, value in metrics.items():
                if metric not in skip:
                    rows.append(dict(dataset="synthetic", scene=scene, method=method, variant=variant, seed=0,
                                     metric=metric, value=value(i) + 2 * k, device="cuda:0 (Test GPU)"))
    return pd.DataFrame(rows)


def avg(metric: str, i: int) -> float:
    return {**BASE, **MULTI}[metric](i) + 1.0


def paper_csv(name: str) -> dict[tuple[str, str, str], float]:
    """(method, variant, metric) -> value, read straight from the published CSV."""
    with open(lb.paper_dir() / name, newline="") as f:
        return {(r["method"], r["variant"], r["metric"]): float(r["value"]) for r in csv.DictReader(f)}


def cell(table: pd.DataFrame, row: tuple[str, str], column: str) -> float:
    return float(table.loc[row, (column, "mean")])


def test_table3_rows_columns_and_paper_values():
    """Catches: a column reading the wrong metric (FPS from `fps` instead of the 1352x1014
    `fps_n3v`, Memory from the render peak instead of storage), rows swapped between the mixture
    and its pruned version, a plain mean over all rows instead of over scenes, paper rows not
    matching the CSV or not placed after ours, the missing 75% run left unmentioned."""
    table = build_table("efficiency", frame())
    assert list(table.index) == [
        ("Expert", "ex4dgs"), ("Expert", "ex4dgs (paper)"), ("Expert", "stg"), ("Expert", "stg (paper)"),
        ("MoE-GS (N=2)", f"moe-vapr ({SET2})"), ("MoE-GS (N=2)", "moe-vapr (N=2) (paper)"),
        ("MoE-GS (55% pruning)", f"moe-vapr-p55 ({SET2})"),
        ("MoE-GS (55% pruning)", "moe-vapr (N=2, pruning 55%) (paper)"),
        ("MoE-GS (75% pruning)", "moe-vapr (N=2, pruning 75%) (paper)"),
    ]
    columns = {"PSNR": "psnr", "FPS": "fps_n3v", "FPS (scene)": "fps", "Memory (MB)": "model_mb",
               "Render memory (MB)": "render_memory_mb_n3v", "Gaussians": "num_gaussians"}
    assert list(dict.fromkeys(table.columns.get_level_values(0))) == list(columns)
    ours = {"ex4dgs": 0, "stg": 1, f"moe-vapr ({SET2})": 2, f"moe-vapr-p55 ({SET2})": 3}
    for (model, label) in table.index:
        if label in ours:
            for column, metric in columns.items():
                assert cell(table, (model, label), column) == pytest.approx(avg(metric, ours[label])), (label, column)
    published = paper_csv("table03_efficiency-n2.csv")
    paper_rows = {("Expert", "stg (paper)"): ("stg", "default"),
                  ("MoE-GS (N=2)", "moe-vapr (N=2) (paper)"): ("moe-vapr", "N=2"),
                  ("MoE-GS (75% pruning)", "moe-vapr (N=2, pruning 75%) (paper)"): ("moe-vapr", "N=2, pruning 75%")}
    for row, (method, variant) in paper_rows.items():
        assert cell(table, row, "PSNR") == published[(method, variant, "psnr")]
        assert cell(table, row, "FPS") == published[(method, variant, "fps")]
        assert cell(table, row, "Memory (MB)") == published[(method, variant, "memory_mb")]
        assert pd.isna(table.loc[row, ("FPS (scene)", "mean")])  # the paper prints no such value
    notes = " ".join(table.attrs["footnotes"])
    assert "moe-vapr-p75" in notes and "1352x1014" in notes and "Test GPU" in notes
    line = next(x for x in format_table(table, "markdown").splitlines() if f"moe-vapr ({SET2})" in x)
    assert [c.strip() for c in line.split("|")[3:-1]] == ["33.00", "121.0", "221.0", "53.0", "503.0", "3001"]


def test_table3_without_paper_and_without_pruned_runs():
    """Catches: a table that fails (or invents rows) when no pruned mixture is stored, and
    paper rows shown with paper=False."""
    runs = {k: v for k, v in RUNS.items() if k[0] != "moe-vapr-p55"}
    table = build_table("efficiency", frame(runs), paper=False)
    assert [label for _, label in table.index] == ["ex4dgs", "stg", f"moe-vapr ({SET2})"]
    notes = " ".join(table.attrs["footnotes"])
    assert f"No pruned moe-vapr of {SET2} is stored" in notes
    assert "moegs-bench run --experts 2 --router vapr --prune 55" in notes


def test_table5_modes_and_pruning_in_the_right_rows():
    """Catches: the w/o Single-Pass rows reading the single-pass `fps_n3v` (or the full row the
    multi-pass one: a swapped suffix), the pruned and unpruned runs swapped, Memory changing
    with the render mode, paper values off the Table 5 CSV."""
    table = build_table("efficiency-ablation", frame())
    mix, p55 = f"moe-vapr ({SET2})", f"moe-vapr-p55 ({SET2})"
    ours = [("w/o Single-Pass & Pruning", mix, 2, True), ("w/o Single-Pass", p55, 3, True),
            ("w/o Pruning", mix, 2, False), ("MoE-GS (full)", p55, 3, False)]
    assert [r for r in table.index if "(paper)" not in r[1]] == [(a, lab) for a, lab, *_ in ours]
    for ablation, label, i, multi in ours:
        row = (ablation, label)
        assert cell(table, row, "FPS") == avg("fps_multipass_n3v" if multi else "fps_n3v", i)
        assert cell(table, row, "FPS (scene)") == avg("fps_multipass" if multi else "fps", i)
        assert cell(table, row, "Render memory (MB)") == avg(
            "render_memory_mb_multipass_n3v" if multi else "render_memory_mb_n3v", i)
        assert cell(table, row, "PSNR") == avg("psnr", i) and cell(table, row, "Memory (MB)") == avg("model_mb", i)
        assert cell(table, row, "Gaussians") == avg("num_gaussians", i)
    published = paper_csv("table05_efficiency-ablation.csv")
    variants = {"w/o Single-Pass & Pruning": "N=3, w/o single-pass & pruning", "w/o Single-Pass":
                "N=3, w/o single-pass", "w/o Pruning": "N=3, w/o pruning", "MoE-GS (full)": "N=3"}
    for ablation, variant in variants.items():
        row = (ablation, f"moe-vapr ({variant}) (paper)")
        assert list(table.index).index(row) == list(table.index).index(next(r for r in table.index
                                                                            if r[0] == ablation)) + 1
        for column, metric in (("PSNR", "psnr"), ("FPS", "fps"), ("Memory (MB)", "memory_mb")):
            assert cell(table, row, column) == published[("moe-vapr", variant, metric)]
    assert any("moe-vapr-p55 (55% pruning" in n for n in table.attrs["footnotes"])


def test_table5_missing_pruned_run_is_named():
    """Catches: a missing pruned run filled from the unpruned one (or the table failing),
    and `pruning=` ignored: asking for 75% with only p55 stored must not use p55."""
    no_pruned = build_table("efficiency-ablation", frame({k: v for k, v in RUNS.items() if k[0] != "moe-vapr-p55"}))
    blank = no_pruned.loc[("MoE-GS (full)", f"moe-vapr-p55 ({SET2})")]
    assert blank.isna().all()
    assert cell(no_pruned, ("w/o Pruning", f"moe-vapr ({SET2})"), "FPS") == avg("fps_n3v", 2)
    assert any("No stored moe-vapr-p55" in n and "--prune 55`" in n for n in no_pruned.attrs["footnotes"])
    other = build_table("efficiency-ablation", frame(), pruning=75)
    assert other.loc[("MoE-GS (full)", f"moe-vapr-p75 ({SET2})")].isna().all()
    assert any("No stored moe-vapr-p75" in n and "stored: moe-vapr-p55" in n for n in other.attrs["footnotes"])
    with pytest.raises(ConfigError, match="pruning must be a percentage"):
        build_table("efficiency-ablation", frame(), pruning=100)


@pytest.mark.parametrize("name, experts", [("efficiency", 2), ("efficiency-ablation", 3)])
def test_no_mixture_names_the_run_to_make(name, experts):
    """Catches: an empty table (or a KeyError) instead of one line naming the run to make."""
    only_experts = frame({k: v for k, v in RUNS.items() if k[0] not in MIXTURES})
    for df in (only_experts, only_experts.iloc[0:0]):
        with pytest.raises(ConfigError, match=f"no moe-vapr runs; make one with `moegs-bench run --experts "
                                              f"{experts} --router vapr"):
            build_table(name, df)


def test_expert_set_choice_and_cpu_notes():
    """Catches: the table mixing two expert sets' mixtures, the default set not the one with
    pruned runs, `variant=` ignored, and blank timings without the runs' reason (the CPU note)."""
    set3 = "ed3dgs+ex4dgs+stg"
    runs = {**RUNS, ("moe-vapr", set3): 5, ("ed3dgs", "default"): 6}
    df = frame(runs)
    table = build_table("efficiency", df)
    assert f"moe-vapr ({set3})" not in {label for _, label in table.index}
    assert any(f"other expert sets stored: {set3}" in n for n in table.attrs["footnotes"])
    three = build_table("efficiency", df, variant=set3)
    assert ("MoE-GS (N=3)", f"moe-vapr ({set3})") in three.index and ("Expert", "ed3dgs") in three.index
    assert cell(three, ("MoE-GS (N=3)", f"moe-vapr ({set3})"), "FPS") == avg("fps_n3v", 5)
    with pytest.raises(ConfigError, match="no moe-vapr runs of expert set 'a\\+b'"):
        build_table("efficiency", df, variant="a+b")
    cpu = frame(skip=("fps", "fps_n3v", "render_memory_mb_n3v", *MULTI))
    notes = pd.DataFrame([dict(dataset="synthetic", scene=s, method=m, variant=v, seed=0, metric=metric,
                               note=CPU_NOTE) for (m, v) in RUNS for s in ("s1", "s2")
                          for metric in ("fps", "fps_multipass")])
    table = build_table("efficiency-ablation", cpu, notes=notes)
    assert table.loc[("w/o Pruning", f"moe-vapr ({SET2})"), ("FPS", "mean")] != table.loc[
        ("w/o Pruning", f"moe-vapr ({SET2})"), ("FPS", "mean")]  # NaN
    assert cell(table, ("w/o Pruning", f"moe-vapr ({SET2})"), "PSNR") == avg("psnr", 2)
    assert any(CPU_NOTE in n and "fps_n3v" in n for n in table.attrs["footnotes"])
    assert any(CPU_NOTE in n and "fps_multipass_n3v" in n for n in table.attrs["footnotes"])


def test_pruned_methods_match_only_the_mixtures_percentages():
    """Catches: a loose pattern taking another router's pruned runs or a router named like a
    prefix (moe-vapr-pixel), or a 100% "pruning"."""
    methods = ["moe-vapr", "moe-vapr-p75", "moe-vapr-p55", "moe-pixel-p55", "moe-vapr-pixel", "moe-vapr-p100",
               "moe-vapr-p55x"]
    assert pruned_methods(methods, "moe-vapr") == {55: "moe-vapr-p55", 75: "moe-vapr-p75"}


def test_rule_picks_that_rules_pruned_runs():
    """Catches: the importance-max (or sigmoid) runs mixed into the Eq. 10 rows, or the rule
    option ignored (the -max run's numbers must land in the full row when asked for)."""
    runs = {**RUNS, ("moe-vapr-p55-max", SET2): 4}
    df = frame(runs)
    assert pruned_methods(df["method"], "moe-vapr") == {55: "moe-vapr-p55"}
    assert pruned_methods(df["method"], "moe-vapr", "-max") == {55: "moe-vapr-p55-max"}
    default = build_table("efficiency-ablation", df)
    assert cell(default, ("MoE-GS (full)", f"moe-vapr-p55 ({SET2})"), "PSNR") == avg("psnr", 3)
    top = build_table("efficiency-ablation", df, rule="importance-max")
    assert cell(top, ("MoE-GS (full)", f"moe-vapr-p55-max ({SET2})"), "PSNR") == avg("psnr", 4)
    t3 = build_table("efficiency", df, rule="importance-max")
    assert [r[1] for r in t3.index if r[0].startswith("MoE-GS (55%")][0] == f"moe-vapr-p55-max ({SET2})"
    with pytest.raises(ConfigError, match="rule"):
        build_table("efficiency", df, rule="loudest")


def test_report_option_reaches_the_table(tmp_path, monkeypatch):
    """Catches: `report --option` dropped (the footnotes' `option pruning=` / `rule=` unusable from
    the command line), values not converted (pruning=75 as text fails the builder), an unknown
    key silently ignored, or options accepted with --figure."""
    from click.testing import CliRunner

    import moegs_bench.bench.store as store
    from moegs_bench.cli import cli

    df = frame({**RUNS, ("moe-vapr-p75", SET2): 5, ("moe-vapr-p55-max", SET2): 4})
    monkeypatch.setattr(store, "results", lambda root: df.assign(code_version="0.1.0+git.abc"))
    monkeypatch.setattr(store, "notes", lambda root: pd.DataFrame())
    runner = CliRunner()
    base = ["report", "--table", "efficiency-ablation", "--runs", str(tmp_path)]
    out = runner.invoke(cli, [*base, "--option", "pruning=75"])
    assert out.exit_code == 0, out.output
    assert f"| MoE-GS (full) | moe-vapr-p75 ({SET2})" in " ".join(out.output.split())
    out = runner.invoke(cli, [*base, "--option", "rule=importance-max"])
    assert f"moe-vapr-p55-max ({SET2})" in out.output and f"moe-vapr-p55 ({SET2})" not in out.output
    out = runner.invoke(cli, [*base, "--option", "prunning=75"])
    said = f"{out.output} {out.exception}"
    assert out.exit_code != 0 and "no option 'prunning'" in said and "options: mixture, paper, pruning" in said
    out = runner.invoke(cli, ["report", "--figure", "gates", "--runs", str(tmp_path), "--option", "rule=x"])
    assert out.exit_code != 0 and "--option" in f"{out.output} {out.exception}"
    listed = runner.invoke(cli, ["report", "--list"]).output
    assert "options: mixture, paper, pruning, rule, variant" in listed


def test_table_option_values():
    """Catches: numbers left as text, booleans read as truthy strings, lists not split."""
    from moegs_bench.report.tables.registry import parse_table_options

    opts = parse_table_options("budget", ["metric=ssim", "paper=false", "methods=stg,ed3dgs"])
    assert opts == {"metric": "ssim", "paper": False, "methods": ["stg", "ed3dgs"]}
    assert parse_table_options("efficiency-ablation", ["pruning=75"]) == {"pruning": 75}
    assert parse_table_options("budget", ["methods=stg"]) == {"methods": ["stg"]}  # a list of one
    assert parse_table_options("seeds", ["variant=ex4dgs+stg"]) == {"variant": "ex4dgs+stg"}
    with pytest.raises(ConfigError, match="KEY=VALUE"):
        parse_table_options("budget", ["metric"])
