"""Training budgets (MoE-GS Table 6): an expert trained for a fraction f of its iterations, with
every step-valued setting of its config scaled by the same f, so the whole schedule
(densification, opacity reset, SH-degree growth, learning-rate decay, each expert's own stages)
is compressed in time rather than cut off.

    apply_budget(cfg, 0.5) -> a copy of an expert config with every step setting scaled
    budget_tag(0.5) -> "b50";  with_budget(variant, f) / split_budget(variant): the stored variant

Rounding rule: a step setting s becomes floor(f·s + 0.5) (half up), at least 1 where s > 0; a
setting of 0 stays 0 (it means "off" or "from the start" wherever it appears).
A budget run is stored under its own variant (`b50`, or `<preset>.b50`; a mixture of budget
experts: `<labels>.b50`), so it never replaces the full run and tables can group by budget.
"""

from __future__ import annotations

import dataclasses
import math
import re
import typing
from typing import Any

from ..errors import ConfigError

# Step-valued settings (dotted paths within an expert config): scaled by the budget.
STEP_SETTINGS: frozenset[str] = frozenset({
    "train.iterations",
    "train.densify.start", "train.densify.stop", "train.densify.every", "train.densify.reset_every",
    "sh_degree_interval",
    # 4dgs (experts/hexplane.py): coarse stage length, the learning-rate decay horizon
    "coarse_iterations", "lr_max_steps",
    # ed3dgs: coarse-to-fine embedding rows, annealing, when deformation and error sampling start
    "c2f_steps", "anneal_steps", "deform_from", "sampling.start",
    # ex4dgs: progressive window, static->dynamic conversion, temporal readjustment, position decay
    "window_every", "convert_start", "convert_delay", "convert_every", "temporal_readjust_every",
    "readjust_stop_margin", "lr.position_steps",
    # stg: error-guided point addition
    "error_sampling.start", "error_sampling.stop", "error_sampling.every",
})

# Integer settings that are not step counts, and why they stay as they are under a budget.
NOT_STEPS: dict[str, str] = {
    "train.batch_size": "views per step",
    "train.checkpoint_every": "how often resumable state is saved; it does not change the numbers",
    "sh_degree": "SH bands",
    "max_init_points": "a point count",
    "max_gaussians": "a Gaussian count", "prune_min_gaussians": "a Gaussian count",
    "grid_resolution": "grid cells (the last one over time)", "grid_multires": "grid scales",
    "grid_features": "channels", "net_width": "channels", "width": "channels", "trunk_layers": "layers",
    "gaussian_embedding_dim": "channels", "temporal_embedding_dim": "channels",
    "temporal_rows": "embedding rows over time", "coarse_rows": "embedding rows over time",
    "knn": "neighbours",
    "window_initial": "frames", "window_add": "frames",
    "error_sampling.max_rays": "rays per addition", "error_sampling.per_ray": "points per ray",
    # E-D3DGS's multi-view SSIM: the pattern of a step's views (5 of every 50 steps keep their
    # frames), like the batch size; and how often the errors are read back from the device
    "sampling.multiview_steps": "a view pattern within a step's batch",
    "sampling.multiview_every": "a view pattern within a step's batch",
    "sampling.refresh": "how often errors are read back from the device",
}

# leaf names that look like step counts: an unclassified one is refused rather than left unscaled
STEP_NAME = re.compile(r"iterations?|.*_?steps?|.*_?iters?|.*_?every|.*_interval|.*_?start|.*_?stop"
                       r"|.*_from|.*_until|.*_delay|.*_margin")


def check_budget(budget: Any, option: str = "--budget") -> float:
    """`budget` as a float in (0, 1]; ConfigError naming `option` otherwise."""
    try:
        value = float(budget)
    except (TypeError, ValueError):
        raise ConfigError(f"{option} {budget!r}: expected a fraction in (0, 1], e.g. 0.5") from None
    if isinstance(budget, bool) or not math.isfinite(value) or not 0 < value <= 1:
        raise ConfigError(f"{option} {budget!r}: a training budget is a fraction in (0, 1] of the "
                          "expert's iterations, e.g. 0.5")
    return value


def scale_steps(value: int, budget: float) -> int:
    """One step setting at `budget`: floor(f·s + 0.5), at least 1 where s > 0, 0 stays 0."""
    if value <= 0:
        return value
    return max(1, math.floor(budget * value + 0.5))


def int_settings(cls: type, where: str = "") -> list[str]:
    """Dotted paths of the integer-valued settings (int, tuples of int, optional int) of config
    dataclass `cls`, nested configs included."""
    hints = typing.get_type_hints(cls, include_extras=True)
    out: list[str] = []
    for f in dataclasses.fields(cls):
        path = f"{where}.{f.name}" if where else f.name
        base = _unannotated(hints[f.name])
        if isinstance(base, type) and dataclasses.is_dataclass(base):
            out += int_settings(base, path)
        elif _holds_int(base):
            out.append(path)
    return out


def _unannotated(tp: Any) -> Any:
    """`X` of `Annotated[X, ...]`; any other type as it is."""
    return typing.get_args(tp)[0] if typing.get_origin(tp) is typing.Annotated else tp


def _holds_int(tp: Any) -> bool:
    base = _unannotated(tp)
    if base is int:
        return True
    args = [a for a in typing.get_args(base) if a is not type(None) and a is not Ellipsis]
    return bool(args) and typing.get_origin(base) is not typing.Literal and all(_holds_int(a) for a in args)


def apply_budget(cfg: Any, budget: float) -> Any:
    """A copy of expert config `cfg` with every STEP_SETTINGS value scaled (`scale_steps`).
    budget 1 returns `cfg` itself. ConfigError for a budget outside (0, 1] and for an integer
    setting named like a step count that is in neither STEP_SETTINGS nor NOT_STEPS."""
    budget = check_budget(budget)
    unknown = [p for p in int_settings(type(cfg))
               if p not in STEP_SETTINGS and p not in NOT_STEPS and STEP_NAME.fullmatch(p.rsplit(".", 1)[-1])]
    if unknown:
        raise ConfigError(f"--budget: {type(cfg).__name__} has step-like settings {', '.join(unknown)} that "
                          "experts/budget.py does not classify (STEP_SETTINGS or NOT_STEPS)")
    if budget == 1.0:
        return cfg
    return _scaled(cfg, budget, "")


def _scaled(cfg: Any, budget: float, where: str) -> Any:
    changes = {}
    for f in dataclasses.fields(cfg):
        path = f"{where}.{f.name}" if where else f.name
        value = getattr(cfg, f.name)
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            changes[f.name] = _scaled(value, budget, path)
        elif path in STEP_SETTINGS and isinstance(value, int) and not isinstance(value, bool):
            changes[f.name] = scale_steps(value, budget)
    return dataclasses.replace(cfg, **changes)


# -- how a budget is stored ------------------------------------------------------------------------
_TAGGED = re.compile(r"(?:(.+)\.)?b(\d+(?:\.\d+)?)")  # [<variant>.]b<percent>


def budget_tag(budget: float) -> str:
    """"b50" for 0.5, "b12.5" for 0.125 (percent, at most 4 decimals)."""
    return "b" + f"{round(check_budget(budget) * 100, 4):.4f}".rstrip("0").rstrip(".")


def with_budget(variant: str, budget: float) -> str:
    """The stored variant of a run at `budget`: unchanged at 1; else `b50` for "default",
    `<variant>.b50` otherwise."""
    if check_budget(budget) == 1.0:
        return variant
    return budget_tag(budget) if variant == "default" else f"{variant}.{budget_tag(budget)}"


def split_budget(variant: str) -> tuple[str, float]:
    """(variant without the budget, budget) of a stored variant: "b50" -> ("default", 0.5),
    "fast.b20" -> ("fast", 0.2), "a+b.b10" -> ("a+b", 0.1), "fast" -> ("fast", 1.0)."""
    m = _TAGGED.fullmatch(variant)
    if m is None or not 0 < float(m.group(2)) < 100:
        return variant, 1.0
    return (m.group(1) or "default"), float(m.group(2)) / 100


__all__ = ["STEP_SETTINGS", "NOT_STEPS", "apply_budget", "budget_tag", "check_budget", "int_settings",
           "scale_steps", "split_budget", "with_budget"]
