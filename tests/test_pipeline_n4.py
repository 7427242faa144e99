"""benchmarks/pipeline_n4.py as a CPU smoke test: the N=4 pipeline at the tiny size, every step timed."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "pipeline_n4.py"


def test_pipeline_n4_smoke(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    out = subprocess.run([sys.executable, str(SCRIPT), "--out", str(tmp_path), "--size", "tiny", "--preset", "tiny",
                          "--set", "train.iterations=3", "--set", "max_init_points=200", "--routers", "vapr",
                          "--router-set", "iterations=2", "--device", "cpu"], capture_output=True, text=True, env=env)
    assert out.returncode == 0, out.stderr[-2000:]
    record = json.loads((tmp_path / "pipeline_n4.json").read_text())
    experts = ["ex4dgs", "stg", "ed3dgs", "4dgs"]
    assert list(record["steps_s"]) == ["scene_generate", "scene_load", *[f"expert:{e}" for e in experts],
                                       "baselines", "router:vapr"]
    assert all(s >= 0 for s in record["steps_s"].values())
    assert record["total_s"] >= sum(record["steps_s"].values()) * 0.99
    runs = record["runs"]
    assert all(not runs[e]["reused"] and runs[e]["train_s"] > 0 for e in experts)
    assert "moe-vapr" in runs and runs["moe-vapr"]["psnr"] > 0
    assert (tmp_path / "store" / "results.csv").is_file()
