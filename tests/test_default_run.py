"""What `moegs-bench run` without options does: the dataset's default expert set, the VAPR
over it and the baselines; explicit --experts / --router keep their meaning. Nothing is
trained here: the command's Experiment is captured and resolved."""

from __future__ import annotations

import shutil

import pandas as pd
import pytest
from click.testing import CliRunner

from moegs_bench.bench.experiment import resolve_experts, resolve_routers, router_spec
from moegs_bench.cli import cli
from moegs_bench.cli import run as run_cmd
from moegs_bench.data import datasets
from moegs_bench.errors import ConfigError
from moegs_bench.experts.registry import available_experts
from moegs_bench.moe.baselines import BASELINES
from moegs_bench.report.tables import build_table, format_table


@pytest.fixture
def captured(monkeypatch):
    """Invoke `run ARGS` and return the Experiment it would run (and the command's output)."""
    seen = []
    monkeypatch.setattr(run_cmd, "_run_and_print", lambda exp: seen.append(exp))
    import moegs_bench.report.html as html

    reports = []
    monkeypatch.setattr(html, "write_report", lambda runs, out: reports.append((runs, out)) or out / "index.html")

    def invoke(*args):
        out = CliRunner().invoke(cli, ["run", *args])
        assert out.exit_code == 0, out.output
        seen[-1].html_reports = list(reports)
        reports.clear()
        return seen[-1]

    return invoke


def test_the_default_run_ends_with_the_html_report(captured, tmp_path):
    """No options: the HTML report of the store is written to RUNS/report; with --experts
    only when --html asks; --html none: never. (A run that forgot the report, wrote it
    for every run, or ignored --html would fail.)"""
    runs = tmp_path / "r"
    assert captured("--runs", runs).html_reports == [(runs, runs / "report")]
    assert captured("--runs", runs, "--experts", "static").html_reports == []
    assert captured("--runs", runs, "--experts", "static", "--html", tmp_path / "h").html_reports == [
        (runs, tmp_path / "h")]
    assert captured("--runs", runs, "--html", "none").html_reports == []


def plan(exp, dataset="synthetic"):
    """(expert labels, routers, baselines) that run_experiment trains for `exp`."""
    routers = resolve_routers(router_spec(exp))
    return resolve_experts(exp.experts, dataset), routers, sorted(BASELINES) if routers else []


def test_no_argument_run_is_the_default_set_with_the_vapr_and_the_baselines(captured):
    # catches: the old default (every expert, no router), a default set not read from the dataset file
    experts, routers, baselines = plan(captured())
    assert experts == ["ex4dgs", "stg", "ed3dgs"]  # synthetic.toml default_experts = 3
    assert routers == ["vapr"]
    assert baselines == ["oracle-image", "oracle-pixel", "uniform-average"]


def test_explicit_experts_and_routers_keep_their_meaning(captured):
    # catches: a default router forced onto named experts (a single expert would fail), or over `none`
    assert plan(captured("--experts", "static")) == (["static"], [], [])
    assert plan(captured("--experts", "2")) == (["ex4dgs", "stg"], [], [])
    assert plan(captured("--router", "none")) == (["ex4dgs", "stg", "ed3dgs"], [], [])
    assert plan(captured("--experts", "stg,static", "--router", "pixel"))[:2] == (["stg", "static"], ["pixel"])
    assert plan(captured("--experts", "all"))[0] == available_experts()


def test_default_set_comes_from_the_dataset_file(tmp_path, monkeypatch):
    # catches: a hard-coded default set, an unchecked default_experts
    copy = tmp_path / "datasets"
    shutil.copytree(datasets.datasets_dir(), copy)
    monkeypatch.setattr(datasets, "datasets_dir", lambda: copy)
    path = copy / "synthetic.toml"
    text = path.read_text()
    path.write_text(text.replace("default_experts = 3", "default_experts = 2"))
    assert resolve_experts(None, "synthetic") == ["ex4dgs", "stg"]
    path.write_text(text.replace("default_experts = 3", "default_experts = 5"))
    with pytest.raises(ConfigError, match=r"synthetic.toml: default_experts: expected a size of \[expert_sets\]"):
        resolve_experts(None, "synthetic")
    assert resolve_experts(None, "a-dataset-without-a-file") == available_experts()


def _rows(method, variant, psnr):
    return [{"dataset": "synthetic", "scene": "mixed", "method": method, "variant": variant, "seed": 0,
             "metric": m, "value": v, "run_dir": f"/runs/{method}/{variant}"} for m, v in psnr.items()]


def test_regimes_table_shows_each_regime_and_the_mixtures_gain():
    # catches: columns out of the regimes' order, psnr_min/max taken for regimes, a gain over
    # the wrong expert (the best overall instead of the best per regime)
    experts = {"stg": {"psnr": 24.0, "psnr_static": 25.0, "psnr_fast": 17.0, "psnr_min": 20.0},
               "ex4dgs": {"psnr": 23.0, "psnr_static": 26.0, "psnr_fast": 14.0, "psnr_min": 19.0}}
    rows = [r for name, p in experts.items() for r in _rows(name, "default", p)]
    rows += _rows("moe-vapr", "ex4dgs+stg", {"psnr": 24.5, "psnr_static": 26.5, "psnr_fast": 16.0})
    rows += _rows("uniform-average", "ex4dgs+stg", {"psnr": 23.9, "psnr_static": 26.2, "psnr_fast": 15.0})
    df = pd.DataFrame(rows)
    table = build_table("regimes", df)
    assert list(table.columns) == ["all", "static", "fast"]
    assert list(table.index) == ["stg", "ex4dgs", "moe-vapr", "uniform-average"]
    assert table.loc["moe-vapr", "static"] == 26.5
    notes = table.attrs["footnotes"]
    assert "Best expert: all stg 24.00, static ex4dgs 26.00, fast stg 17.00" in notes
    assert "moe-vapr minus the best expert: all +0.50, static +0.50, fast -1.00" in notes
    only = build_table("regimes", df, runs=["/runs/moe-vapr/ex4dgs+stg", "/runs/stg/default"])
    assert list(only.index) == ["moe-vapr", "stg"]
    assert "| moe-vapr" in format_table(only, "markdown")
    with pytest.raises(ConfigError, match="no per-regime PSNR"):
        build_table("regimes", pd.DataFrame(_rows("stg", "default", {"psnr": 30.0, "psnr_min": 28.0})))
