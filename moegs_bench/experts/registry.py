"""Expert registry: name -> class, filled by `@register_expert` in each expert's module, and
an expert's config from its defaults, a preset and overrides. (Which experts form the paper's
sets is a property of a dataset: `[expert_sets]` in moegs_bench/datasets/*.toml.)"""

from __future__ import annotations

import importlib
import pkgutil

from ..config import merge
from ..errors import ConfigError

EXPERTS: dict[str, type] = {}

# the modules of this package that hold shared pieces, not experts; every other module
# defines (and registers) experts, so a new expert is one new file
_NOT_EXPERTS = {"base", "budget", "common", "heads", "registry", "segments", "views"}


def register_expert(cls):
    """Class decorator: make expert `cls.name` available by name."""
    EXPERTS[cls.name] = cls
    return cls


def _load_all() -> None:
    package = importlib.import_module(__package__)
    for info in pkgutil.iter_modules(package.__path__):
        if info.name not in _NOT_EXPERTS and not info.name.startswith("_"):
            importlib.import_module(f"{__package__}.{info.name}")


def get_expert(name: str) -> type:
    _load_all()
    if name not in EXPERTS:
        raise ConfigError(f"--experts: unknown expert {name!r} (available: {', '.join(sorted(EXPERTS))})")
    return EXPERTS[name]


def available_experts() -> list[str]:
    _load_all()
    return sorted(EXPERTS)


def split_label(label: str) -> tuple[str, str | None]:
    """An expert label -> (expert name, preset): 'static@tiny' -> ('static', 'tiny'),
    'stg' -> ('stg', None). A label names one expert in one configuration, so one expert can
    appear twice in a mixture."""
    name, _, preset = label.partition("@")
    return name, (preset or None)


def check_labels(labels: list[str], what: str = "--experts") -> list[str]:
    """Expert labels that all exist (experts and presets), each named once; ConfigError
    otherwise."""
    if not labels:
        raise ConfigError(f"{what}: no expert named")
    for label in labels:
        name, preset = split_label(label)
        get_expert(name)
        if preset is not None:
            expert_config(name, preset)  # one clear error for an unknown preset
    if len(set(labels)) != len(labels):
        raise ConfigError(f"{what}: an expert is named twice ({', '.join(labels)})")
    return labels


def expert_config(name: str, preset: str | None = None, overrides: dict | None = None):
    """The config of expert `name`: defaults, then a named preset, then overrides."""
    cls = get_expert(name)
    cfg = cls.Config()
    presets = getattr(cls, "presets", {})
    if preset:
        if preset not in presets:
            raise ConfigError(f"--preset: expert {name!r} has no preset {preset!r} (available: {', '.join(sorted(presets))})")
        cfg = merge(cfg, presets[preset])
    if overrides:
        cfg = merge(cfg, overrides, name)  # errors name the expert: "stg.sh_degree: ..."
    return cfg
