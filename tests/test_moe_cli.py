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


def table_rows(stdout: str) -> dict[str, list[str]]:
    """Markdown table rows printed by `run`: first cell (the method) -> the other cells of its
    first row (the experts and mixture tables come before the per-regime one)."""
    out = {}
    for line in stdout.splitlines():
        if line.startswith("| ") and not line.startswith("| ---"):
            cells = [c.strip() for c in line.strip().strip("|").split("|")]
            # a checkout with edits marks rows
            out.setdefault(cells[0].removesuffix(" [uncommitted]"), cells[1:])
    return out


@pytest.fixture(scope="module")
def moe_run(tiny_scene_dir, tmp_path_factory):
    runs = tmp_path_factory.mktemp("runs")
    out = cli("run", *ARGS, "--router", "all", "--scene", tiny_scene_dir, "--runs", runs)
    return runs, out


def test_run_router_all_stores_every_method(moe_run):
    runs, out = moe_run
    assert out.returncode == 0, out.stderr
    printed = table_rows(out.stdout)
    for method in ("static (tiny)", "static (small)", "uniform-average", "oracle-pixel", "oracle-image",
                   "moe-vapr", "moe-pixel", "moe-volume"):
        assert printed[method][-1] == "trained", method
    assert "router training" in out.stdout and "experts' training" in out.stdout
    df = pd.read_csv(runs / "results.csv")
    psnr = df[df.metric == "psnr"].set_index(["method", "variant"]).value
    root = runs / "synthetic" / "mixed"
    for method in ("uniform-average", "oracle-pixel", "oracle-image", "moe-vapr", "moe-pixel", "moe-volume"):
        # the stored PSNR is the mean of the run's per-image rows
        rows = pd.read_csv(root / method / VARIANT / "seed0" / "per_image.csv")
        assert len(rows) == 8 and psnr[(method, VARIANT)] == pytest.approx(rows.psnr.mean()), method
    experts = max(psnr[("static", "tiny")], psnr[("static", "small")])
    # the two configurations really differ: the per-pixel oracle gains over both; the
    # per-image oracle is never below the best expert
    assert psnr[("oracle-pixel", VARIANT)] > experts and psnr[("oracle-image", VARIANT)] >= experts - 1e-9
    moe_metrics = set(df[df.method == "moe-vapr"].metric)
    assert {"psnr", "ssim", "train_seconds", "iterations", "best_expert_psnr", "oracle_gain_share"} <= moe_metrics
    # one evaluation path: every mixture and baseline row has the experts' per-regime PSNR too
    regimes = {m for m in set(df[df.method == "static"].metric) if m.startswith("psnr_")}
    assert len(regimes) == 5
    for method in ("moe-vapr", "moe-pixel", "moe-volume", "uniform-average", "oracle-pixel", "oracle-image"):
        assert regimes <= set(df[df.method == method].metric), method
    # the baselines were evaluated in one pass: their time is stored as such, not split
    base = df[df.method.isin(["uniform-average", "oracle-pixel"]) & (df.metric == "baselines_eval_seconds")]
    assert len(base) == 2 and base.value.nunique() == 1


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
    assert len(list((root / "static" / "tiny" / "seed0" / "renders").glob("*.png"))) == 8
    cfg = json.loads((vapr / "config.json").read_text())["config"]
    assert cfg["router"] == "vapr" and cfg["config"]["iterations"] == 3 and len(cfg["experts"]) == 2


def test_rerun_reuses_routers_and_a_changed_config_retrains(moe_run, tiny_scene_dir):
    runs, _ = moe_run
    again = cli("run", *ARGS, "--router", "vapr", "--scene", tiny_scene_dir, "--runs", runs)
    assert again.returncode == 0, again.stderr
    printed = table_rows(again.stdout)
    assert printed["moe-vapr"][-1] == "reused" and "trained" not in again.stdout
    changed = cli("run", *ARGS[:-1], "iterations=2", "--router", "pixel", "--scene", tiny_scene_dir,
                  "--runs", runs)
    assert changed.returncode == 0, changed.stderr
    assert table_rows(changed.stdout)["moe-pixel"][-1] == "trained"
    scoped = cli("run", *ARGS, "--router", "pixel", "--router-set", "pixel:lr_pixel=0.01", "--scene",
                 tiny_scene_dir, "--runs", runs)
    assert scoped.returncode == 0, scoped.stderr
    assert table_rows(scoped.stdout)["moe-pixel"][-1] == "trained"


def test_bad_router_options_fail_clearly(tiny_scene_dir, tmp_path):
    out = cli("run", "--experts", "static", "--router", "best", "--scene", tiny_scene_dir, "--runs", tmp_path)
    assert out.returncode == 2 and "--router best" in out.stderr


def test_routers_and_router_settings():
    from moegs_bench.bench.experiment import resolve_routers, router_configs
    from moegs_bench.errors import ConfigError

    assert resolve_routers("all") == ["pixel", "volume", "vapr"] and resolve_routers("none") == []
    assert resolve_routers("pixel,vapr") == ["pixel", "vapr"]
    cfgs = router_configs(["vapr", "pixel"], "tiny", ["iterations=7", "lr_phi=0.2", "pixel:lr_pixel=0.1"])
    assert cfgs["vapr"].iterations == cfgs["pixel"].iterations == 7
    assert cfgs["vapr"].lr_phi == 0.2 and cfgs["pixel"].lr_pixel == 0.1  # each where it exists
    assert router_configs(["vapr"], None, [])["vapr"].iterations == 5000  # no scene: paper
    with pytest.raises(ConfigError, match="no pixel has a setting 'lr_phi'"):
        router_configs(["pixel"], "tiny", ["lr_phi=0.2"])
    with pytest.raises(ConfigError, match="'volume' is not one of"):
        router_configs(["vapr"], "tiny", ["volume:gate=softmax"])
