"""End to end through the command line, as a user runs it."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import pandas as pd
import pytest


def cli(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "moegs_bench", *map(str, args)], capture_output=True,
                          text=True, cwd=cwd)


def test_help_lists_main_commands():
    out = cli("--help")
    assert out.returncode == 0
    for cmd in ("prepare", "run", "report", "train", "datasets"):
        assert cmd in out.stdout


@pytest.fixture(scope="module")
def trained(tiny_scene_dir, tmp_path_factory):
    runs = tmp_path_factory.mktemp("runs")
    out = cli("run", "--experts", "static", "--scene", tiny_scene_dir, "--runs", runs,
              "--set", "train.iterations=60")
    return runs, out


def test_run_writes_results_and_prints_metrics(trained):
    runs, out = trained
    assert out.returncode == 0, out.stderr
    assert "PSNR" in out.stdout and re.search(r"\| static( \[uncommitted\])? +\|", out.stdout)
    assert "LPIPS (alex) unavailable" in out.stdout  # no backbone weights on a test machine
    df = pd.read_csv(runs / "results.csv")
    assert set(df.columns) >= {"dataset", "scene", "method", "variant", "seed", "metric", "value"}
    row = df[(df.method == "static") & (df.metric == "psnr")]
    run_dir = runs / "synthetic" / "mixed" / "static" / "default" / "seed0"
    # the stored PSNR is the mean of the per-image rows, one per test view
    per_image = pd.read_csv(run_dir / "per_image.csv")
    assert len(per_image) == 8 and len(row) == 1 and row.value.iloc[0] == pytest.approx(per_image.psnr.mean())
    assert "lpips" not in set(df.metric)
    for name in ("config.json", "timings.json", "per_image.csv", "summary.json", "DONE", "checkpoints/model.pt"):
        assert (run_dir / name).is_file(), name
    cfg = json.loads((run_dir / "config.json").read_text())
    assert cfg["config"]["config"]["train"]["iterations"] == 60
    assert "unavailable" in json.loads((run_dir / "summary.json").read_text())["notes"]["lpips"]


def test_rerun_reuses_and_force_retrains(trained, tiny_scene_dir):
    runs, _ = trained
    again = cli("run", "--experts", "static", "--scene", tiny_scene_dir, "--runs", runs,
                "--set", "train.iterations=60")
    assert again.returncode == 0 and "reused" in again.stdout
    changed = cli("run", "--experts", "static", "--scene", tiny_scene_dir, "--runs", runs,
                  "--set", "train.iterations=20")
    assert changed.returncode == 0 and "trained" in changed.stdout


def test_report_main_table(trained):
    runs, _ = trained
    out = cli("report", "--table", "main", "--runs", runs)
    assert out.returncode == 0, out.stderr
    assert "static" in out.stdout and "PSNR" in out.stdout and out.stdout.count("|") > 6
    csv = cli("report", "--table", "main", "--runs", runs, "--format", "csv")
    assert csv.returncode == 0 and "," in csv.stdout


def test_missing_image_is_one_clear_line(scene_copy, tmp_path):
    (scene_copy / "frames" / "cam01" / "00003.png").unlink()
    out = cli("run", "--experts", "static", "--scene", scene_copy, "--runs", tmp_path / "runs")
    assert out.returncode == 2
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and "frames/cam01/00003.png" in lines[0] and "missing" in lines[0]


def test_malformed_scene_json_names_the_field(scene_copy, tmp_path):
    meta = json.loads((scene_copy / "scene.json").read_text())
    meta["cameras"][2]["K"] = [[1, 0], [0, 1]]
    (scene_copy / "scene.json").write_text(json.dumps(meta))
    out = cli("run", "--experts", "static", "--scene", scene_copy, "--runs", tmp_path / "runs")
    assert out.returncode == 2
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and "scene.json" in lines[0] and "cameras[2].K" in lines[0]
    (scene_copy / "scene.json").write_text("{not json")
    out = cli("run", "--experts", "static", "--scene", scene_copy, "--runs", tmp_path / "runs")
    assert out.returncode == 2 and "invalid JSON" in out.stderr


def test_unknown_options_fail_clearly(tiny_scene_dir, tmp_path):
    out = cli("run", "--experts", "nope", "--scene", tiny_scene_dir, "--runs", tmp_path)
    assert out.returncode == 2 and "unknown expert 'nope'" in out.stderr
    out = cli("run", "--experts", "static", "--scene", "no-such-scene", "--runs", tmp_path)
    assert out.returncode == 2 and "--scene" in out.stderr
    out = cli("report", "--runs", tmp_path / "empty")
    assert out.returncode == 2 and "--runs" in out.stderr


def test_report_paper_table_needs_no_runs(tmp_path):
    out = cli("report", "--table", "paper", "--paper-table", "4", "--runs", tmp_path / "none")
    assert out.returncode == 0, out.stderr
    assert "33.23" in out.stdout and "0.954" in out.stdout
