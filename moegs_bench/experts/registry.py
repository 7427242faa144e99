"""Expert registry (name -> class) and the paper's expert sets."""

from __future__ import annotations

import importlib
import pkgutil

from ..config import merge
from ..errors import ConfigError

EXPERTS: dict[str, type] = {}

# every module of this package that is not infrastructure defines (and registers) experts,
# so a new expert is one new file
_NOT_EXPERTS = {"base", "common", "registry"}

# MoE-GS §4.1: N=2 {Ex4DGS, STG}; N=3 + E-D3DGS; N=4 + 4DGaussians
EXPERT_SETS: dict[int, tuple[str, ...]] = {
    2: ("ex4dgs", "stg"),
    3: ("ex4dgs", "stg", "ed3dgs"),
    4: ("ex4dgs", "stg", "ed3dgs", "4dgs"),
}


def register_expert(cls):
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


def resolve_expert_list(spec: str) -> list[str]:
    """'static', 'stg,ex4dgs' or a set size '2'/'3'/'4' -> expert names (all must exist)."""
    spec = spec.strip()
    if spec.isdigit():
        n = int(spec)
        if n not in EXPERT_SETS:
            raise ConfigError(f"--experts {n}: the paper's expert sets have N in {sorted(EXPERT_SETS)}")
        names = list(EXPERT_SETS[n])
    else:
        names = [s.strip() for s in spec.split(",") if s.strip()]
    if not names:
        raise ConfigError("--experts: no expert named")
    planned = {n for names_ in EXPERT_SETS.values() for n in names_}
    for n in names:
        if n not in available_experts():
            what = "is not implemented yet" if n in planned else "is not a known expert"
            raise ConfigError(f"--experts: {n!r} {what} (available: {', '.join(available_experts())})")
    return names


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
        cfg = merge(cfg, overrides)
    return cfg
