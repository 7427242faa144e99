"""Training budgets (experts/budget.py, MoE-GS Table 6): every step setting scaled, budget 1 the
identity, budget runs stored under their own variant, bad budgets refused naming --budget."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from moegs_bench.bench.experiment import Experiment, run_experiment
from moegs_bench.errors import ConfigError
from moegs_bench.experts.budget import (
    NOT_STEPS,
    STEP_NAME,
    STEP_SETTINGS,
    apply_budget,
    budget_tag,
    int_settings,
    scale_steps,
    split_budget,
    with_budget,
)
from moegs_bench.experts.registry import available_experts, expert_config, get_expert

pytestmark = pytest.mark.usefixtures("one_thread")


def _get(cfg, path: str):
    for part in path.split("."):
        cfg = getattr(cfg, part)
    return cfg


def _configs():
    for name in available_experts():
        for preset in [None, *sorted(getattr(get_expert(name), "presets", {}))]:
            yield name, preset, expert_config(name, preset)


def test_every_integer_setting_is_classified():
    """A step setting added to an expert's config but to neither list fails here (it would not
    be scaled by a budget); so does a stale name in STEP_SETTINGS."""
    seen: set[str] = set()
    for name in available_experts():
        paths = int_settings(get_expert(name).Config)
        seen |= set(paths)
        unclassified = [p for p in paths if p not in STEP_SETTINGS and p not in NOT_STEPS]
        assert not unclassified, f"{name}: classify {unclassified} in experts/budget.py"
    assert STEP_SETTINGS <= seen, f"no expert has {sorted(STEP_SETTINGS - seen)}"
    assert not STEP_SETTINGS & set(NOT_STEPS)
    # the names that read as step counts are all scaled (catches one parked in NOT_STEPS)
    steplike = {p for p in seen if STEP_NAME.fullmatch(p.rsplit(".", 1)[-1])}
    kept = {p for p in steplike if p in NOT_STEPS}
    assert kept == {"train.checkpoint_every", "sampling.multiview_steps", "sampling.multiview_every"}


@pytest.mark.parametrize("budget", [0.5, 0.2, 0.1])
def test_every_step_setting_is_scaled_and_nothing_else(budget):
    for name, preset, cfg in _configs():
        scaled = apply_budget(cfg, budget)
        for path in int_settings(type(cfg)):
            before, after = _get(cfg, path), _get(scaled, path)
            want = scale_steps(before, budget) if path in STEP_SETTINGS else before
            assert after == want, f"{name}@{preset}: {path} {before} -> {after}, expected {want}"
        # floats and flags are untouched (learning rates, thresholds)
        assert scaled.train.densify.grad_threshold == cfg.train.densify.grad_threshold
    stg = apply_budget(expert_config("stg", "paper"), 0.5)
    assert (stg.train.iterations, stg.train.densify.stop, stg.error_sampling.start) == (15000, 4500, 800)


def test_rounding_rule():
    assert scale_steps(25, 0.5) == 13  # half up (Python's round would give 12)
    assert scale_steps(3, 0.1) == 1  # positive stays at least 1
    assert scale_steps(0, 0.1) == 0  # 0 ("off", "from the start") stays 0
    assert scale_steps(30000, 0.2) == 6000


def test_budget_one_is_the_identity():
    for _, _, cfg in _configs():
        assert apply_budget(cfg, 1.0) is cfg
    assert with_budget("default", 1.0) == "default" and with_budget("fast", 1) == "fast"


def test_budget_variants_round_trip():
    assert budget_tag(0.5) == "b50" and budget_tag(0.125) == "b12.5"
    assert with_budget("default", 0.5) == "b50" and with_budget("fast", 0.2) == "fast.b20"
    assert with_budget("ed3dgs+ex4dgs+stg", 0.1) == "ed3dgs+ex4dgs+stg.b10"
    for variant, want in [("b50", ("default", 0.5)), ("fast.b20", ("fast", 0.2)),
                          ("a+b.b12.5", ("a+b", 0.125)), ("fast", ("fast", 1.0)), ("a+b", ("a+b", 1.0))]:
        assert split_budget(variant) == want


@pytest.mark.parametrize("bad", [0, -0.5, 1.5, float("nan"), "half"])
def test_bad_budget_names_the_option(bad, tmp_path):
    with pytest.raises(ConfigError, match="--budget"):
        apply_budget(expert_config("static"), bad)
    with pytest.raises(ConfigError, match="--budget"):
        run_experiment(Experiment(budget=bad, runs_dir=tmp_path, device="cpu"))


def test_cli_bad_budget_is_one_line(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    out = subprocess.run([sys.executable, "-m", "moegs_bench", "train", "--expert", "static", "--budget", "0",
                          "--runs", str(tmp_path)], capture_output=True, text=True, env=env)
    assert out.returncode == 2 and "--budget" in out.stderr and "Traceback" not in out.stderr


def _exp(scene, runs, **kw) -> Experiment:
    return Experiment(scene=str(scene), experts="static@tiny,stg@tiny", runs_dir=runs, device="cpu",
                      overrides=("train.iterations=12", "max_init_points=150"),
                      router_overrides=("iterations=2",), **kw)


def test_budget_runs_are_stored_apart(tiny_scene_dir, tmp_path):
    """Budget 1 keeps the full runs' keys and folders; budget 0.5 trains half the iterations under
    variant `<preset>.b50` and mixes those experts under `<set>.b50`."""
    full = run_experiment(_exp(tiny_scene_dir, tmp_path, routers="none"))
    stored = [r.run.load_config()["config"] for r in full.experts]
    again = run_experiment(_exp(tiny_scene_dir, tmp_path, routers="vapr", budget=1.0))
    # what the key covers besides the code is unchanged: same config, same folder
    assert [r.run.load_config()["config"] for r in again.experts] == stored
    assert [r.run.dir for r in again.experts] == [r.run.dir for r in full.experts]
    assert all("budget" not in c and r.run.run_id.variant == "tiny" for c, r in zip(stored, full.experts, strict=True))

    half = run_experiment(_exp(tiny_scene_dir, tmp_path, routers="vapr", budget=0.5))
    assert not any(r.reused for r in half.experts + half.mixtures)
    for r, f in zip(half.experts, full.experts, strict=True):
        assert r.run.run_id.variant == "tiny.b50" and r.run.dir != f.run.dir
        assert r.metrics["iterations"] == 6 and f.metrics["iterations"] == 12
        config = json.loads((r.run.dir / "config.json").read_text())
        assert config["config"]["budget"] == 0.5 and config["config"]["config"] != f.run.load_config()["config"]["config"]
    moe = next(m for m in half.mixtures if m.label == "moe-vapr")
    assert moe.run.run_id.variant == "static@tiny+stg@tiny.b50"
    # the full mixture is still there, untouched
    assert next(m for m in again.mixtures if m.label == "moe-vapr").run.is_complete
