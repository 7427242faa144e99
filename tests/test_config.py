from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import pytest

from moegs_bench.config import (
    SIZE_PRESETS,
    Pattern,
    PositiveInt,
    Range,
    UnitFloat,
    choose_preset,
    from_dict,
    has_setting,
    merge,
    overrides_to_dict,
    scoped_overrides,
    to_dict,
    unbounded_fields,
    validate,
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


# -- allowed values ----------------------------------------------------------------------------
def _registered_configs() -> dict[str, type]:
    """Every config dataclass the command line builds: each expert's, each router's, and the
    options of `prepare` (with COLMAP's)."""
    from moegs_bench.data.prepare import PrepareOptions
    from moegs_bench.experts.registry import EXPERTS, available_experts
    from moegs_bench.moe.routers import ROUTERS, router_names

    available_experts(), router_names()  # import every module, so that all are registered
    return {**{f"expert {n}": c.Config for n, c in EXPERTS.items()},
            **{f"router {n}": c.Config for n, c in ROUTERS.items()}, "prepare": PrepareOptions}


def test_every_setting_of_every_registered_config_declares_its_range():
    configs = _registered_configs()
    assert {"expert static", "expert stg", "router vapr", "prepare"} <= configs.keys()
    missing = {name: unbounded_fields(cls) for name, cls in configs.items() if unbounded_fields(cls)}
    assert missing == {}, f"settings without a declared range (config.py: Range, Pattern, Literal): {missing}"


@dataclass
class _Inner:
    ok: PositiveInt = 1
    plain: float = 0.5


@dataclass
class _Outer:
    flag: bool = True
    mode: Literal["a", "b"] = "a"
    size: tuple[PositiveInt, ...] = (1,)
    sizes: tuple[int, int] = (1, 2)
    maybe: UnitFloat | None = None
    name: str = "x"
    inner: _Inner = field(default_factory=_Inner)


def test_unbounded_fields_finds_a_plain_field_at_any_depth():
    assert unbounded_fields(_Outer) == ["sizes", "name", "inner.plain"]


def test_every_default_and_preset_is_within_range():
    from moegs_bench.experts.registry import EXPERTS, expert_config
    from moegs_bench.moe.routers import ROUTERS, router_config

    validate(_registered_configs()["prepare"]())
    for name, cls in EXPERTS.items():
        validate(cls.Config(), name)
        for preset in getattr(cls, "presets", {}):
            validate(expert_config(name, preset), f"{name}@{preset}")
    for name, cls in ROUTERS.items():
        for preset in cls.presets:
            validate(router_config(name, preset), f"{name}:{preset}")


@pytest.mark.parametrize("changes, match", [
    ({"train": {"iterations": -5}}, r"train.iterations: -5 is out of range \(allowed: >= 1\)"),
    ({"train": {"iterations": 0}}, r"train.iterations: 0 is out of range"),
    ({"train": {"iterations": True}}, r"train.iterations: expected int, got True"),
    ({"train": {"ssim_lambda": -0.1}}, r"train.ssim_lambda: -0.1 is out of range \(allowed: in \[0, 1\]\)"),
    ({"train": {"ssim_lambda": float("inf")}}, r"train.ssim_lambda: inf is not a finite number"),
    ({"init_opacity": 1.0}, r"init_opacity: 1.0 is out of range \(allowed: in \(0, 1\)\)"),
    ({"sh_degree": -1}, r"sh_degree: -1 is out of range \(allowed: in \[0, 3\]\)"),
    ({"train": {"background": [0, 0]}}, r"train.background: expected 3 values"),
    ({"train": {"background": [0, 0, -1]}}, r"train.background\[2\]: -1 is out of range"),
    ({"init_points": "frame:"}, r"init_points: 'frame:' is not allowed \(allowed: 'merged'"),
    ({"train": {"matmul_precision": "low"}}, r"train.matmul_precision: 'low' is not one of"),
])
def test_out_of_range_values_are_named_with_what_is_allowed(changes, match):
    with pytest.raises(ConfigError, match=match):
        merge(StaticConfig(), changes)
    with pytest.raises(ConfigError, match=match):  # a stored config read back is checked too
        from_dict(StaticConfig, _deep_merge(to_dict(StaticConfig()), changes))


def _deep_merge(base: dict, changes: dict) -> dict:
    out = dict(base)
    for k, v in changes.items():
        out[k] = _deep_merge(base[k], v) if isinstance(v, dict) else v
    return out


def test_optional_settings_keep_their_range_and_none():
    from moegs_bench.moe.routers.volume import VolumeConfig

    assert merge(VolumeConfig(), {"init_gate": 0.25}).init_gate == 0.25
    assert merge(VolumeConfig(init_gate=0.25), {"init_gate": None}).init_gate is None
    with pytest.raises(ConfigError, match=r"init_gate: 0 is out of range \(allowed: in \(0, 1\)\)"):
        merge(VolumeConfig(), {"init_gate": 0})


def test_validate_names_the_first_bad_nested_value():
    cfg = StaticConfig()
    assert validate(cfg) is cfg
    cfg.train.densify.every = 0  # set behind merge's back
    with pytest.raises(ConfigError, match=r"static.train.densify.every: 0 is out of range"):
        validate(cfg, "static")


def test_range_and_pattern_descriptions():
    assert Range(1).describe() == ">= 1" and Range(0, low_open=True).describe() == "> 0"
    assert Range(0, 1, high_open=True).describe() == "in [0, 1)" and Range().describe() == "a finite number"
    assert Range(0, 3).allows(3) and not Range(0, 3, high_open=True).allows(3)
    assert not Range().allows(float("nan")) and not Range(0).allows(float("inf"))
    with pytest.raises(ConfigError, match=r"k: 'ab' is not allowed \(allowed: one letter\)"):
        Pattern("[a-z]", "one letter").check("ab", "k")


def test_scoped_overrides_check_every_value_before_anything_runs():
    from moegs_bench.moe.routers.vapr import VAPRConfig

    configs = {"static": StaticConfig, "vapr": VAPRConfig}
    with pytest.raises(ConfigError, match=r"--set static: train.iterations: -5 is out of range"):
        scoped_overrides(["train.iterations=-5"], ["static"], configs)
    with pytest.raises(ConfigError, match=r"--router-set vapr: lr_w_final_ratio: 0 is out of range"):
        scoped_overrides(["vapr:lr_w_final_ratio=0"], ["vapr"], configs, "--router-set")
    assert scoped_overrides(["train.iterations=5"], ["static"], configs) == {"static": {"train": {"iterations": 5}}}
