"""What every router shares: the `Router` protocol, the stage-2 settings every router has
(`RouterConfig`; each router extends it with its own fields), presets, and the registry.

A router is one module in this package: a `Router` subclass decorated with
`@register_router`, with `name` (method `moe-<name>`), `title` (table label), `rank` (order),
`Config` and `presets`.
"""

from __future__ import annotations

import importlib
import pkgutil
from abc import abstractmethod
from dataclasses import dataclass
from typing import ClassVar, Literal

import torch
from torch import Tensor, nn

from ...config import NonNegativeFloat, PositiveFloat, PositiveInt, UnitFloat, merge
from ...errors import ConfigError
from ...render.gaussians import Gaussians
from ..pool import ExpertPool


@dataclass
class RouterConfig:
    """Stage-2 settings of every router (REFERENCE.md §1, N3V values)."""

    iterations: PositiveInt = 5000  # one camera per step
    temperature: PositiveFloat = 1.0  # softmax(logits / T) in training
    eval_temperature: PositiveFloat | None = None  # None: same as `temperature` (authors: train 0.01, eval 1)
    ssim_lambda: UnitFloat = 0.2  # loss (1-λ)·L1 + λ·D-SSIM
    # the colour behind every expert in the mixture's renders: each expert's own (the one it
    # was trained and evaluated on), or one for all (the authors render every expert on white)
    expert_background: Literal["own", "white", "black"] = "own"
    seconds_limit: NonNegativeFloat = 0.0  # stop training after this many seconds (0: no limit)

    @property
    def eval_temp(self) -> float:
        return self.temperature if self.eval_temperature is None else self.eval_temperature


# presets every router knows; a router adds its own or refines these in `presets`
COMMON_PRESETS: dict[str, dict] = {
    # the authors' setting (REFERENCE.md §1): 5000 iterations, N3V learning rates, softmax of
    # logit/0.01 in training and plain softmax in evaluation, every expert rendered on white
    "paper": {"temperature": 0.01, "eval_temperature": 1.0, "expert_background": "white"},
    "fast": {"iterations": 1500},
    "tiny": {"iterations": 40},
}


@dataclass
class RouterOutput:
    """image [C,H,W,3] (the mixture's colour), gates [K,C,H,W] (sum 1 over K where defined),
    depth [C,H,W] (the mixture's depth: Σ_k G_k · D_k for a 2D blend)."""

    image: Tensor
    gates: Tensor
    depth: Tensor | None = None


ROUTERS: dict[str, type[Router]] = {}


def register_router(cls: type[Router]) -> type[Router]:
    """Class decorator: make router `cls.name` available to `run --router` and the tables."""
    ROUTERS[cls.name] = cls
    return cls


class Router(nn.Module):
    """A router over the experts of an ExpertPool; only its own parameters are trained."""

    name: ClassVar[str] = "router"
    title: ClassVar[str] = "Router"
    rank: ClassVar[int] = 100  # order in `--router all` and tables (the paper's Table 4 order first)
    Config: ClassVar[type[RouterConfig]] = RouterConfig
    presets: ClassVar[dict[str, dict]] = COMMON_PRESETS

    def __init__(self, sizes: list[int], cfg: RouterConfig):
        super().__init__()
        self.sizes = list(sizes)
        self.cfg = cfg

    @classmethod
    def method(cls) -> str:
        """The stored method name of this router's mixtures."""
        return f"moe-{cls.name}"

    @abstractmethod
    def forward(self, pool: ExpertPool, cam: int, frame: int, temperature: float) -> RouterOutput:
        """Render view (cam, frame) through the mixture."""

    @abstractmethod
    def param_groups(self) -> list[dict]:
        """Optimiser groups, each {"name", "params"}."""

    @abstractmethod
    def learning_rates(self, step: int) -> dict[str, float]:
        """Learning rate of every group at `step`."""

    @classmethod
    def check_pool(cls, pool: ExpertPool) -> None:
        """Raise ConfigError if this router cannot combine the pool's experts."""

    def expert_background(self, device) -> Tensor | None:
        """The colour behind every expert in this router's renders [3] (None: their own)."""
        colour = {"own": None, "white": 1.0, "black": 0.0}[self.cfg.expert_background]
        return None if colour is None else torch.full((3,), colour, device=device)

    def _check_sizes(self, gaussians: list[Gaussians]) -> None:
        got = [len(g) for g in gaussians]
        if got != self.sizes:
            raise ConfigError(f"router {self.name}: experts have {got} Gaussians, router was built for {self.sizes}")


def per_gaussian(sizes: list[int], value: float, device) -> nn.ParameterList:
    """One parameter [N_k] per expert, every entry `value`."""
    return nn.ParameterList([nn.Parameter(torch.full((n,), float(value), device=device)) for n in sizes])


def _load_all() -> None:
    """Import every module of this package, so that each router registers itself."""
    package = importlib.import_module(__package__)
    for info in pkgutil.iter_modules(package.__path__):
        if info.name != "base" and not info.name.startswith("_"):
            importlib.import_module(f"{__package__}.{info.name}")


def router_names() -> list[str]:
    """Registered routers, by rank then name."""
    _load_all()
    return sorted(ROUTERS, key=lambda n: (ROUTERS[n].rank, n))


def get_router(name: str) -> type[Router]:
    _load_all()
    if name not in ROUTERS:
        raise ConfigError(f"--router: unknown router {name!r} (available: {', '.join(ROUTERS)})")
    return ROUTERS[name]


def router_config(name: str, preset: str | None = None, overrides: dict | None = None,
                  known_only: bool = False) -> RouterConfig:
    """Router `name`'s settings: its Config defaults, then a preset, then overrides (nested
    dict; with `known_only`, keys the router does not have are skipped)."""
    cls = get_router(name)
    cfg = cls.Config()
    if preset:
        if preset not in cls.presets:
            raise ConfigError(f"--router-preset: router {name!r} has no preset {preset!r} "
                              f"(available: {', '.join(cls.presets)})")
        cfg = merge(cfg, cls.presets[preset])
    if overrides:
        cfg = merge(cfg, overrides, "router", known_only=known_only)
    if cfg.temperature <= 0 or cfg.eval_temp <= 0:
        raise ConfigError("router.temperature and router.eval_temperature must be > 0")
    return cfg


def build_router(name: str, pool: ExpertPool, cfg: RouterConfig) -> Router:
    """A fresh router `name` sized for the pool's experts, on the pool's device."""
    cls = get_router(name)
    cls.check_pool(pool)
    return cls(pool.sizes, cfg, device=pool.data.device)


__all__ = ["RouterConfig", "COMMON_PRESETS", "RouterOutput", "Router", "ROUTERS", "register_router",
           "per_gaussian", "router_names", "get_router", "router_config", "build_router"]
