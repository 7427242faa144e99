from __future__ import annotations

import pytest

from moegs_bench.config import (
    SIZE_PRESETS,
    choose_preset,
    from_dict,
    has_setting,
    merge,
    overrides_to_dict,
    scoped_overrides,
    to_dict,
)
from moegs_bench.errors import ConfigError
from moegs_bench.experts.registry import expert_config
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
    from moegs_bench.bench.experiment import resolve_experts

    assert expert_config("static", "tiny").train.iterations < expert_config("static", "paper").train.iterations
    with pytest.raises(ConfigError, match="no preset 'huge'"):
        expert_config("static", "huge")
    assert resolve_experts("static", "synthetic") == ["static"]
    assert resolve_experts("static@tiny, static@small", "synthetic") == ["static@tiny", "static@small"]
    with pytest.raises(ConfigError, match="unknown expert 'nope'"):
        resolve_experts("static,nope", "synthetic")
    with pytest.raises(ConfigError, match="'huge'"):
        resolve_experts("static@huge", "synthetic")
    with pytest.raises(ConfigError, match="named twice"):
        resolve_experts("static@tiny,static@tiny", "synthetic")
    with pytest.raises(ConfigError, match="--experts 7"):
        resolve_experts("7", "synthetic")


def test_paper_expert_sets_come_from_the_dataset_file(tmp_path, monkeypatch):
    """`--experts N` reads [expert_sets] of the scene's dataset file: a set the file does not
    name is an error naming the file, and editing the file changes the set."""
    import shutil

    from moegs_bench.bench.experiment import resolve_experts
    from moegs_bench.data import datasets

    assert resolve_experts("3", "synthetic") == ["ex4dgs", "stg", "ed3dgs"]
    assert resolve_experts("3", "technicolor") == ["ex4dgs", "ed3dgs", "stg"]
    with pytest.raises(ConfigError, match=r"technicolor.toml \[expert_sets\]: 3"):
        resolve_experts("2", "technicolor")
    with pytest.raises(ConfigError, match="names no expert set"):
        resolve_experts("2", "a-dataset-without-a-file")
    copy = tmp_path / "datasets"
    shutil.copytree(datasets.datasets_dir(), copy)
    text = (copy / "synthetic.toml").read_text().replace('2 = ["ex4dgs", "stg"]', '2 = ["static", "stg"]')
    (copy / "synthetic.toml").write_text(text)
    monkeypatch.setattr(datasets, "datasets_dir", lambda: copy)
    assert resolve_experts("2", "synthetic") == ["static", "stg"]


def test_scoped_overrides_reach_only_their_label_and_the_configs_that_have_the_key():
    from moegs_bench.experts.ed3dgs import ED3DGSConfig
    from moegs_bench.experts.hexplane import FourDGSConfig

    configs = {"static@tiny": StaticConfig, "static@small": StaticConfig, "4dgs": FourDGSConfig,
               "ed3dgs": ED3DGSConfig}
    labels = list(configs)
    out = scoped_overrides(["train.iterations=5", "static@small:sh_degree=0", "coarse_iterations=7"], labels,
                           configs)
    assert out["static@tiny"] == {"train": {"iterations": 5}}
    assert out["static@small"] == {"train": {"iterations": 5}, "sh_degree": 0}
    assert out["4dgs"] == {"train": {"iterations": 5}, "coarse_iterations": 7}  # only 4dgs has it
    assert out["ed3dgs"] == {"train": {"iterations": 5}}
    with pytest.raises(ConfigError, match="'stg' is not one of"):
        scoped_overrides(["stg:sh_degree=0"], labels, configs)
    with pytest.raises(ConfigError, match="has a setting 'train.iteratons'"):
        scoped_overrides(["train.iteratons=5"], labels, configs)
    assert has_setting(StaticConfig, "train.densify.every") and not has_setting(StaticConfig, "train.nope")
    assert not has_setting(StaticConfig, "sh_degree.x")


def test_merge_known_only_skips_what_the_config_lacks():
    cfg = merge(StaticConfig(), {"coarse_iterations": 3, "sh_degree": 2}, known_only=True)
    assert cfg.sh_degree == 2
    with pytest.raises(ConfigError, match="coarse_iterations"):
        merge(StaticConfig(), {"coarse_iterations": 3})


def test_preset_choice_by_size_then_dataset_then_paper():
    have = {"paper", "fast", "tiny", "technicolor"}
    assert choose_preset(have, "tiny", "technicolor") == "tiny"
    assert choose_preset(have, "full") == SIZE_PRESETS["full"] == "fast"
    assert choose_preset(have, "small", "technicolor") == "technicolor"  # no `small` preset here
    assert choose_preset(have, None, "technicolor") == "technicolor"
    assert choose_preset(have, None, "nope") == "paper"
    assert choose_preset({"fast"}, None, None) is None
