"""Nonsense settings: every bad `--set` / `--router-set` value, unknown name or malformed item
fails before anything is trained, as one line naming the key and the value, and leaves no run
in the store."""

from __future__ import annotations

import pytest

from .conftest import assert_one_line_error, cli


def _nothing_stored(runs) -> None:
    """No run folder (so nothing a later `report` or `run` could take as a result)."""
    assert not runs.exists() or not any(p.name == "config.json" for p in runs.rglob("*")), \
        sorted(str(p) for p in runs.rglob("*"))


# (--set item, strings the error line must contain): each would have been stored as a
# "completed" run (or crashed mid-training) before the settings had ranges
EXPERT_SETTINGS = [
    ("train.iterations=-5", ["train.iterations", "-5", ">= 1"]),
    ("train.iterations=0", ["train.iterations", "0", ">= 1"]),
    ("train.iterations=true", ["train.iterations", "True"]),  # a bool is not an iteration count
    ("train.iterations=many", ["train.iterations", "'many'"]),
    ("train.ssim_lambda=1.5", ["train.ssim_lambda", "1.5", "[0, 1]"]),
    ("train.ssim_lambda=nan", ["train.ssim_lambda", "nan"]),
    ("sh_degree=4", ["sh_degree", "4", "[0, 3]"]),
    ("lr.means_init=-0.001", ["lr.means_init", "-0.001", "> 0"]),
    ("train.densify.every=0", ["train.densify.every", "0"]),
    ("train.background=[1, 1]", ["train.background", "3 values"]),
    ("train.background=[0, 0, 2]", ["train.background[2]", "2"]),
    ("train.matmul_precision=low", ["train.matmul_precision", "'low'"]),
    ("static:init_points=frame:x", ["init_points", "'frame:x'"]),
    ("train.iteratons=5", ["train.iteratons"]),  # unknown key
    ("train.iterations", ["train.iterations", "KEY=VALUE"]),  # no value
]


@pytest.mark.parametrize("item, expected", EXPERT_SETTINGS, ids=[i for i, _ in EXPERT_SETTINGS])
def test_bad_expert_setting_is_one_line_and_stores_nothing(tiny_scene_dir, tmp_path, item, expected):
    runs = tmp_path / "runs"
    out = cli("run", "--scene", tiny_scene_dir, "--experts", "static", "--set", item, "--runs", runs)
    line = assert_one_line_error(out, "--set", *expected)
    assert out.code == 2, line
    _nothing_stored(runs)


ROUTER_SETTINGS = [
    ("iterations=-1", ["iterations", "-1", ">= 1"]),
    ("temperature=0", ["temperature", "0", "> 0"]),
    ("eval_temperature=-1", ["eval_temperature", "-1"]),
    ("vapr:lr_w_final_ratio=0", ["vapr", "lr_w_final_ratio", "0"]),
    ("vapr:lr_phi=-0.1", ["vapr", "lr_phi", "-0.1"]),
    ("expert_background=grey", ["expert_background", "'grey'"]),
    ("ssim_lambda=2", ["ssim_lambda", "2"]),
]


@pytest.mark.parametrize("item, expected", ROUTER_SETTINGS, ids=[i for i, _ in ROUTER_SETTINGS])
def test_bad_router_setting_fails_before_the_experts_train(tiny_scene_dir, tmp_path, item, expected):
    runs = tmp_path / "runs"
    out = cli("run", "--scene", tiny_scene_dir, "--experts", "static,stg", "--set", "train.iterations=2",
              "--router", "vapr", "--router-set", item, "--runs", runs)
    assert_one_line_error(out, "--router-set", *expected)
    _nothing_stored(runs)  # the experts were not trained first


def test_a_bad_value_for_the_second_expert_stops_before_the_first_trains(tiny_scene_dir, tmp_path):
    runs = tmp_path / "runs"
    out = cli("run", "--scene", tiny_scene_dir, "--experts", "static,stg", "--set", "train.iterations=2",
              "--set", "stg:sh_degree=9", "--runs", runs)
    assert_one_line_error(out, "stg", "sh_degree", "9")
    _nothing_stored(runs)


NAMES = [
    (["--experts", "nope"], ["--experts", "'nope'"]),
    (["--experts", "static@huge"], ["'huge'"]),
    (["--experts", "static", "--preset", "huge"], ["--preset", "'huge'"]),
    (["--experts", "static,stg", "--router", "nope"], ["--router", "nope"]),
    (["--experts", "static,stg", "--router", "vapr", "--router-preset", "huge"], ["--router-preset", "'huge'"]),
    (["--experts", "static", "--analysis", "nope"], ["--analysis", "nope"]),
]


@pytest.mark.parametrize("args, expected", NAMES, ids=[" ".join(a) for a, _ in NAMES])
def test_unknown_name_is_one_line(tiny_scene_dir, tmp_path, args, expected):
    runs = tmp_path / "runs"
    out = cli("run", "--scene", tiny_scene_dir, *args, "--set", "train.iterations=2", "--runs", runs)
    assert_one_line_error(out, *expected)
    _nothing_stored(runs)


@pytest.mark.parametrize("option, value, key", [("--workers", "-2", "prepare.workers"),
                                                ("--colmap-workers", "-1", "prepare.colmap_config.workers"),
                                                ("--resolution", "2x", "prepare.resolution")])
def test_bad_prepare_option_is_one_line_and_writes_nothing(tmp_path, option, value, key):
    src = tmp_path / "raw"
    src.mkdir()
    out = tmp_path / "prepared"
    assert_one_line_error(cli("prepare", "n3v", "--src", src, "--out", out, option, value), key, value)
    assert not out.exists()
