"""`moegs-bench run --router all` end to end on two static experts of different presets."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pandas as pd
import pytest

VARIANT = "static@small+static@tiny"
# two configurations of one expert: presets, plus one setting scoped to each label
ARGS = ("--experts", "static@tiny,static@small", "--set", "train.iterations=8",
        "--set", "static@tiny:max_init_points=200", "--set", "static@small:max_init_points=120",
        "--router-set", "iterations=3")


def cli(*args):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}  # the reference rasteriser on a shared CPU
    return subprocess.run([sys.executable, "-m", "moegs_bench", *map(str, args)], capture_output=True, text=True,
                          env=env)


@pytest.fixture(scope="module")
def moe_run(tiny_scene_dir, tmp_path_factory):
    runs = tmp_path_factory.mktemp("runs")
    out = cli("run", *ARGS, "--router", "all", "--scene", tiny_scene_dir, "--runs", runs)
    return runs, out


def test_run_router_all_stores_every_method(moe_run):
    runs, out = moe_run
    assert out.returncode == 0, out.stderr
    for method in ("| static@tiny |", "| static@small |", "| uniform-average |", "| oracle-pixel |",
                   "| oracle-image |", "| moe-vapr |", "| moe-pixel |", "| moe-volume |"):
        assert method in out.stdout, method
    assert "router training" in out.stdout and "experts' training" in out.stdout
    df = pd.read_csv(runs / "results.csv")
    psnr = df[df.metric == "psnr"].set_index(["method", "variant"]).value
    for method in ("uniform-average", "oracle-pixel", "oracle-image", "moe-vapr", "moe-pixel", "moe-volume"):
        assert 5 < psnr[(method, VARIANT)] < 60, method
    assert psnr[("static", "tiny")] > 0 and psnr[("static", "small")] > 0
    # the two configurations really differ: the per-pixel oracle gains over both
    assert psnr[("oracle-pixel", VARIANT)] > max(psnr[("static", "tiny")], psnr[("static", "small")])
    moe_metrics = set(df[df.method == "moe-vapr"].metric)
    assert {"psnr", "ssim", "train_seconds", "iterations", "best_expert_psnr", "oracle_gain_share"} <= moe_metrics


def test_run_dir_holds_router_gates_and_expert_renders(moe_run):
    runs, _ = moe_run
    root = runs / "synthetic" / "mixed"
    vapr = root / "moe-vapr" / VARIANT / "seed0"
    assert (vapr / "checkpoints" / "router.pt").is_file() and (vapr / "DONE").is_file()
    renders, gates = sorted((vapr / "renders").glob("*.png")), sorted((vapr / "gates").glob("*.png"))
    assert len(renders) == len(gates) == 8  # the tiny scene's test views
    experts = root / "uniform-average" / VARIANT / "seed0" / "experts"
    assert len(list((experts / "static@tiny").glob("*.png"))) == 8
    assert len(list((root / "oracle-pixel" / VARIANT / "seed0" / "gates").glob("*.png"))) == 8
    cfg = json.loads((vapr / "config.json").read_text())["config"]
    assert cfg["router"] == "vapr" and cfg["config"]["iterations"] == 3 and len(cfg["experts"]) == 2


def test_rerun_reuses_routers_and_a_changed_config_retrains(moe_run, tiny_scene_dir):
    runs, _ = moe_run
    again = cli("run", *ARGS, "--router", "vapr", "--scene", tiny_scene_dir, "--runs", runs)
    assert again.returncode == 0, again.stderr
    assert "| moe-vapr |" in again.stdout and "computed" not in again.stdout
    changed = cli("run", *ARGS[:-1], "iterations=2", "--router", "pixel", "--scene", tiny_scene_dir,
                  "--runs", runs)
    assert changed.returncode == 0, changed.stderr
    line = next(s for s in changed.stdout.splitlines() if s.startswith("| moe-pixel |"))
    assert line.endswith("| computed |")


def test_bad_router_options_fail_clearly(tiny_scene_dir, tmp_path):
    out = cli("run", "--experts", "static", "--router", "best", "--scene", tiny_scene_dir, "--runs", tmp_path)
    assert out.returncode == 2 and "--router best" in out.stderr


def test_expert_labels_routers_and_scoped_settings():
    from moegs_bench.bench.harness import expert_overrides, resolve_expert_specs, resolve_routers
    from moegs_bench.errors import ConfigError

    assert resolve_expert_specs("static@tiny, static@small") == ["static@tiny", "static@small"]
    assert resolve_expert_specs("static") == ["static"]
    assert resolve_routers("all") == ["vapr", "pixel", "volume"] and resolve_routers("none") == []
    assert resolve_routers("pixel,vapr") == ["pixel", "vapr"]
    labels = ["static@tiny", "static@small"]
    items = ["train.iterations=5", "static@small:sh_degree=0"]
    assert expert_overrides("static@tiny", items, labels) == ["train.iterations=5"]
    assert expert_overrides("static@small", items, labels) == ["train.iterations=5", "sh_degree=0"]
    with pytest.raises(ConfigError, match="'nope'"):
        resolve_expert_specs("static@nope")
    with pytest.raises(ConfigError, match="named twice"):
        resolve_expert_specs("static@tiny,static@tiny")
    with pytest.raises(ConfigError, match="'stg' is not one of the experts"):
        expert_overrides("static@tiny", ["stg:sh_degree=0"], labels)
