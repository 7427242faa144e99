"""Where each expert wins: the `winners` and `per-frame` tables on hand-made results."""

from __future__ import annotations

import pandas as pd
import pytest

from moegs_bench.errors import ConfigError
from moegs_bench.report.tables import build_table


def _rows(method, variant, seed, values, run_dir="r"):
    return [{"dataset": "synthetic", "scene": "mixed", "method": method, "variant": variant, "seed": seed,
             "metric": m, "value": v, "run_dir": run_dir} for m, v in values.items()]


def test_winners_pick_the_best_expert_per_region():
    # catches: the lowest instead of the highest PSNR, seeds not averaged, mixtures counted
    df = pd.DataFrame(
        _rows("stg", "default", 0, {"psnr": 30.0, "psnr_fast": 25.0, "psnr_static": 40.0})
        + _rows("stg", "default", 1, {"psnr": 28.0, "psnr_fast": 23.0, "psnr_static": 40.0})
        + _rows("ex4dgs", "default", 0, {"psnr": 28.5, "psnr_fast": 26.0, "psnr_static": 39.0})
        + _rows("moe-vapr", "ex4dgs+stg", 0, {"psnr": 35.0, "psnr_fast": 30.0}))
    table = build_table("winners", df, dataset="synthetic")
    assert table.loc["mixed", "all"] == "stg 29.00"  # mean over seeds 29.0 beats 28.5
    assert table.loc["mixed", "fast"] == "ex4dgs 26.00" and table.loc["mixed", "static"] == "stg 40.00"
    with pytest.raises(ConfigError, match="no expert runs"):
        build_table("winners", pd.DataFrame(_rows("moe-vapr", "x", 0, {"psnr": 1.0})), dataset="synthetic")


def test_per_frame_reads_each_runs_per_image_rows(tmp_path):
    # catches: a mean over all frames, cameras not averaged within a frame, the wrong run's file
    for name, rows in (("a", [(0, 0, 20.0), (1, 0, 22.0), (0, 1, 30.0)]), ("b", [(0, 0, 25.0), (0, 1, 26.0)])):
        (tmp_path / name).mkdir()
        pd.DataFrame([{"camera": f"cam{c:02d}", "frame": f, "psnr": p} for c, f, p in rows]).to_csv(
            tmp_path / name / "per_image.csv", index=False)
    df = pd.DataFrame(_rows("stg", "default", 0, {"psnr": 0.0}, str(tmp_path / "a"))
                      + _rows("moe-vapr", "x", 0, {"psnr": 0.0}, str(tmp_path / "b")))
    table = build_table("per-frame", df, dataset="synthetic")
    assert table.loc[0, "stg"] == pytest.approx(21.0) and table.loc[1, "stg"] == pytest.approx(30.0)
    assert table.loc[0, "moe-vapr (x)"] == pytest.approx(25.0) and table.loc[1, "moe-vapr (x)"] == pytest.approx(26.0)
