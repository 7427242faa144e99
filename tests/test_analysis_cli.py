"""`run --analysis all` end to end on two static experts: the fused model as a stored method,
MDC and depth error for every method that renders depth, trajectories of the experts, the
per-pixel best expert as label images, and the tables that show them."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner
from PIL import Image

from moegs_bench.cli import cli

pytestmark = pytest.mark.usefixtures("one_thread")
VARIANT = "static@small+static@tiny"
# two configurations of one expert that render differently (their oracle picks both)
ARGS = ["--experts", "static@tiny,static@small", "--set", "train.iterations=6",
        "--set", "static@tiny:max_init_points=200", "--set", "static@small:max_init_points=120",
        "--router", "vapr", "--router-set", "iterations=3", "--analysis", "all", "--mdc-frames", "2",
        "--mdc-pairs", "4", "--trajectory-gaussians", "50"]


@pytest.fixture(scope="module")
def store(tiny_scene_dir, tmp_path_factory):
    runs = tmp_path_factory.mktemp("runs")
    out = CliRunner().invoke(cli, ["run", *ARGS, "--scene", str(tiny_scene_dir), "--runs", str(runs)])
    assert out.exit_code == 0, out.output
    return runs, out


def metrics(runs, method: str, variant: str) -> pd.Series:
    df = pd.read_csv(runs / "results.csv")
    return df[(df.method == method) & (df.variant == variant)].set_index("metric").value


def test_the_fused_model_is_a_stored_method(store):
    runs, out = store
    assert "| moe-fused " in out.output
    fused = metrics(runs, "moe-fused", VARIANT)
    assert {"psnr", "ssim", "psnr_static", "num_gaussians", "resp_weighted_static@tiny", "resp_p50_static@small",
            "gate_static@tiny_static", "mdc", "depth_l1"} <= set(fused.index)
    run = runs / "synthetic" / "mixed" / "moe-fused" / VARIANT / "seed0"
    assert (run / "checkpoints" / "responsibilities.pt").is_file() and len(list((run / "renders").glob("*.png"))) == 8


def test_mdc_for_every_method_with_depth_and_trajectories_for_experts(store):
    runs, _ = store
    for method, variant in (("static", "tiny"), ("static", "small"), ("moe-vapr", VARIANT), ("moe-fused", VARIANT)):
        m = metrics(runs, method, variant)
        assert {"mdc", "mdc_valid_fraction", "depth_l1", "depth_abs_rel"} <= set(m.index), method
        assert m["mdc_frames"] == 2 and m["mdc_max_pairs"] == 4 and m["mdc"] > 0, method
    assert "mdc" not in set(metrics(runs, "uniform-average", VARIANT).index)  # a blend of images, no depth
    for variant in ("tiny", "small"):
        m = metrics(runs, "static", variant)
        assert {"traj_speed", "traj_error", "traj_count"} <= set(m.index)
        assert m["traj_speed"] == pytest.approx(0.0, abs=1e-6)  # static Gaussians do not move
    tracks = np.load(runs / "synthetic" / "mixed" / "static" / "tiny" / "seed0" / "analysis" / "trajectories.npz")
    assert tracks["tracks"].shape[1] == 8  # every frame of the tiny scene


def test_the_per_pixel_best_expert_is_a_label_image(store):
    runs, _ = store
    best = sorted((runs / "synthetic" / "mixed" / "oracle-pixel" / VARIANT / "seed0" / "best").glob("*.png"))
    assert len(best) == 8
    labels = np.asarray(Image.open(best[0]))
    assert labels.ndim == 2 and set(np.unique(labels)) <= {0, 1} and len(np.unique(labels)) == 2


def test_analysis_tables(store):
    runs, _ = store
    runner = CliRunner()
    for table, expect in (("mdc", "moe-fused"), ("trajectories", "static (tiny)"), ("winners", "mixed"),
                          ("per-frame", "moe-vapr")):
        out = runner.invoke(cli, ["report", "--table", table, "--runs", str(runs)])
        assert out.exit_code == 0, (table, out.output)
        assert expect in out.output, table


def test_a_rerun_reuses_every_analysis(store, tiny_scene_dir):
    runs, _ = store
    analysis = runs / "synthetic" / "mixed" / "moe-vapr" / VARIANT / "seed0" / "analysis" / "mdc.json"
    before = analysis.stat().st_mtime_ns
    out = CliRunner().invoke(cli, ["run", *ARGS, "--scene", str(tiny_scene_dir), "--runs", str(runs)])
    assert out.exit_code == 0, out.output
    assert analysis.stat().st_mtime_ns == before and "trained" not in out.output


def test_fusion_needs_its_router(tiny_scene_dir, tmp_path):
    out = CliRunner().invoke(cli, ["run", "--experts", "static", "--analysis", "fusion", "--router", "pixel",
                                   "--scene", str(tiny_scene_dir), "--runs", str(tmp_path)])
    assert out.exit_code != 0 and "--router vapr" in str(out.exception)
