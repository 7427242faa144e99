from __future__ import annotations

import pytest

from moegs_bench.config import from_dict, merge, overrides_to_dict, to_dict
from moegs_bench.errors import ConfigError
from moegs_bench.experts.registry import expert_config, resolve_expert_list
from moegs_bench.experts.static import StaticConfig


def test_overrides_parse_types_and_nesting():
    d = overrides_to_dict(["train.iterations=100", "sh_degree=1", "train.background=[1, 1, 1]",
                           "init_points=frame:0", "train.random_background=true"])
    assert d == {"train": {"iterations": 100, "background": [1, 1, 1], "random_background": True},
                 "sh_degree": 1, "init_points": "frame:0"}


def test_merge_applies_nested_values_and_keeps_defaults():
    cfg = merge(StaticConfig(), {"train": {"iterations": 10, "densify": {"every": 7}}, "sh_degree": 2})
    assert cfg.train.iterations == 10 and cfg.train.densify.every == 7 and cfg.sh_degree == 2
    assert cfg.train.densify.grad_threshold == StaticConfig().train.densify.grad_threshold


def test_round_trip_through_dict():
    cfg = merge(StaticConfig(), {"train": {"iterations": 3}})
    assert from_dict(StaticConfig, to_dict(cfg)) == cfg


def test_unknown_and_badly_typed_settings_are_named():
    with pytest.raises(ConfigError, match="train.iteratons"):
        merge(StaticConfig(), {"train": {"iteratons": 3}})
    with pytest.raises(ConfigError, match="train.iterations"):
        merge(StaticConfig(), {"train": {"iterations": "many"}})
    with pytest.raises(ConfigError, match="KEY=VALUE"):
        overrides_to_dict(["iterations"])


def test_presets_and_expert_lists():
    assert expert_config("static", "tiny").train.iterations < expert_config("static", "paper").train.iterations
    with pytest.raises(ConfigError, match="no preset 'huge'"):
        expert_config("static", "huge")
    assert resolve_expert_list("static") == ["static"]
    with pytest.raises(ConfigError, match="'nope' is not a known expert"):
        resolve_expert_list("static,nope")
    with pytest.raises(ConfigError, match="--experts 7"):
        resolve_expert_list("7")
