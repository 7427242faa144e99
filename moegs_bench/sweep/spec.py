"""A sweep spec (`experiments/*.toml`, docs/sweeps.md): scenes x expert sets x routers x seeds
x budgets x presets, the stage-2 steps after the routers, and the tables printed at the end.

    spec = load_spec(Path("experiments/smoke.toml"))   # ConfigError naming the file and field

Every value is checked here, before anything is planned or trained.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..bench.analysis import ANALYSES
from ..bench.distill import WEIGHTING_CHOICES
from ..bench.experiment import Experiment
from ..config import load_toml
from ..data.synthetic import RIGS, SCENES, SIZES
from ..errors import ConfigError
from ..moe.routers import router_names
from ..report.tables import TABLES

STEPS = (*ANALYSES, "distill")  # stage-2 steps a spec may name (`steps`)


@dataclass(frozen=True)
class DistillSpec:
    """`[sweep.distill]`: Experiment's distillation options (bench/distill.py)."""

    router: str = "vapr"  # whose mixture is distilled (as `run --distill-router`)
    weighting: str = "routing"  # routing, none, both; LABEL:KIND for one expert
    seeds: int = 1  # retrained / distilled seeds seed+1 .. seed+seeds
    lam: float | None = None  # Eq. 11's lambda (None: moe.distill.DistillConfig's)


@dataclass(frozen=True)
class SweepSpec:
    """One sweep. scenes: synthetic scene names (rig and size name the variant) or prepared
    scene folders; expert_sets: each a `--experts` value (labels comma-separated, a paper set
    size such as "3", or "all"); routers: router names ([] : experts only); seeds, budgets,
    presets (None: each scene's default preset): the other axes; steps: stage-2 steps after the
    routers (fusion, mdc, trajectories, distill); tables: registered tables printed at the end;
    gpus_per_task: GPUs each training asks for (a fraction packs small scenes on one GPU)."""

    name: str
    path: Path
    runs_dir: Path
    scenes: tuple[str, ...]
    expert_sets: tuple[str, ...]
    rig: str = "n3v"
    size: str | None = None
    routers: tuple[str, ...] = ("vapr",)
    seeds: tuple[int, ...] = (0,)
    scene_seed: int | None = None  # one synthetic scene for every seed (None: each seed its own)
    budgets: tuple[float, ...] = (1.0,)
    presets: tuple[str | None, ...] = (None,)
    overrides: tuple[str, ...] = ()
    router_preset: str | None = None
    router_overrides: tuple[str, ...] = ()
    steps: tuple[str, ...] = ()
    fuse_router: str = "vapr"
    distill: DistillSpec = field(default_factory=DistillSpec)
    tables: tuple[str, ...] = ()
    data_dir: Path | None = None
    device: str = "auto"
    gpus_per_task: float = 1.0


_KEYS = {"name", "runs_dir", "scenes", "rig", "size", "experts", "routers", "seeds", "scene_seed", "budgets", "presets",
         "overrides", "router_preset", "router_overrides", "steps", "fuse_router", "distill", "tables",
         "data_dir", "device", "gpus_per_task"}


class _Fields:
    """Reads fields of one TOML table, every error naming the file and the field."""

    def __init__(self, path: Path, table: dict, prefix: str):
        self.path, self.table, self.prefix = path, table, prefix

    def fail(self, key: str, problem: str) -> ConfigError:
        return ConfigError(f"{self.path}: {self.prefix}{key}: {problem}")

    def get(self, key: str, kind: type | tuple, default: Any = None, required: bool = False) -> Any:
        if key not in self.table:
            if required:
                raise self.fail(key, "missing")
            return default
        value = self.table[key]
        ok = isinstance(value, kind) and not (isinstance(value, bool) and bool not in _tuple(kind))
        if not ok:
            names = " or ".join(k.__name__ for k in _tuple(kind))
            raise self.fail(key, f"expected {names}, got {value!r}")
        return value

    def strings(self, key: str, default: tuple = ()) -> tuple[str, ...]:
        """A string or a list of strings."""
        value = self.get(key, (str, list), None)
        if value is None:
            return default
        items = [value] if isinstance(value, str) else value
        if not all(isinstance(v, str) and v.strip() for v in items):
            raise self.fail(key, f"expected non-empty strings, got {value!r}")
        return tuple(v.strip() for v in items)


def _tuple(kind) -> tuple:
    return kind if isinstance(kind, tuple) else (kind,)


def load_spec(path: str | Path) -> SweepSpec:
    """The `[sweep]` table of TOML file `path` as a SweepSpec; ConfigError naming the file and
    the field for an unknown key, a wrong type or a value outside its choices. Relative
    runs_dir, data_dir and scene folders are taken from the current folder (as `run`'s)."""
    path = Path(path)
    raw = load_toml(path, "sweep spec")
    extra = sorted(set(raw) - {"sweep"})
    if "sweep" not in raw or not isinstance(raw["sweep"], dict):
        raise ConfigError(f"{path}: sweep: missing (the spec is a [sweep] table)")
    if extra:
        raise ConfigError(f"{path}: {extra[0]}: unknown table (a spec holds [sweep] only)")
    table = raw["sweep"]
    f = _Fields(path, table, "sweep.")
    unknown = sorted(set(table) - _KEYS)
    if unknown:
        raise f.fail(unknown[0], f"unknown field (expected one of {', '.join(sorted(_KEYS))})")
    name = f.get("name", str, path.stem)
    scenes = f.strings("scenes")
    if not scenes:
        raise f.fail("scenes", "missing (synthetic scene names or prepared scene folders)")
    rig = f.get("rig", str, "n3v")
    if rig not in RIGS:
        raise f.fail("rig", f"{rig!r} is not one of {', '.join(RIGS)}")
    size = f.get("size", str)
    if size is not None and size not in SIZES:
        raise f.fail("size", f"{size!r} is not one of {', '.join(SIZES)}")
    for scene in scenes:
        if not Path(scene).exists() and scene not in SCENES:
            raise f.fail("scenes", f"{scene!r} is neither a folder nor a synthetic scene ({', '.join(SCENES)})")
    if size is None and any(s in SCENES and not Path(s).exists() for s in scenes):
        raise f.fail("size", "missing: synthetic scenes need a size (tiny, small, full), the same on every worker")
    spec = SweepSpec(
        name=name, path=path, runs_dir=Path(f.get("runs_dir", str, f"runs/{name}")), scenes=scenes,
        expert_sets=_expert_sets(f), rig=rig, size=size, routers=_routers(f), seeds=_seeds(f),
        scene_seed=_scene_seed(f),
        budgets=_budgets(f), presets=f.strings("presets", (None,)), overrides=f.strings("overrides"),
        router_preset=f.get("router_preset", str), router_overrides=f.strings("router_overrides"),
        steps=_choices(f, "steps", STEPS), fuse_router=f.get("fuse_router", str, "vapr"),
        distill=_distill(path, f.get("distill", dict, {})), tables=_choices(f, "tables", tuple(TABLES)),
        data_dir=Path(d) if (d := f.get("data_dir", str)) else None, device=f.get("device", str, "auto"),
        gpus_per_task=_gpus(f))
    _check_steps(f, spec)
    return spec


def _expert_sets(f: _Fields) -> tuple[str, ...]:
    """`experts`: a list whose items are sets: a string (`--experts` syntax) or a list of labels."""
    value = f.get("experts", (str, list), required=True)
    items = [value] if isinstance(value, str) else value
    out = []
    for i, item in enumerate(items):
        if isinstance(item, list) and item and all(isinstance(x, str) and x.strip() for x in item):
            out.append(",".join(x.strip() for x in item))
        elif isinstance(item, str) and item.strip():
            out.append(item.strip())
        else:
            raise f.fail(f"experts[{i}]", f"expected a set (\"a,b\", \"3\", \"all\" or a list of labels), got {item!r}")
    if not out:
        raise f.fail("experts", "no expert set named")
    return tuple(dict.fromkeys(out))


def _routers(f: _Fields) -> tuple[str, ...]:
    items = f.strings("routers", ("vapr",))
    known = router_names()
    if items in (("none",), ()):
        return ()
    if items == ("all",):
        return tuple(known)
    bad = [r for r in items if r not in known]
    if bad:
        raise f.fail("routers", f"{bad[0]!r} is not a router ({', '.join(known)}, all or none)")
    return tuple(dict.fromkeys(items))


def _seeds(f: _Fields) -> tuple[int, ...]:
    """`seeds`: a count N (seeds 0..N-1) or a list of non-negative integers."""
    value = f.get("seeds", (int, list), 1)
    if isinstance(value, int):
        if value < 1:
            raise f.fail("seeds", f"a count must be at least 1, got {value}")
        return tuple(range(value))
    if not value or not all(isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in value):
        raise f.fail("seeds", f"expected non-negative integers, got {value!r}")
    return tuple(dict.fromkeys(value))


def _scene_seed(f: _Fields) -> int | None:
    value = f.get("scene_seed", int)
    if value is not None and value < 0:
        raise f.fail("scene_seed", f"expected a non-negative integer, got {value}")
    if value is not None and "scene_seed" not in {x.name for x in dataclasses.fields(Experiment)}:
        raise f.fail("scene_seed", "this version of the harness ties a synthetic scene's seed to the run's")
    return value


def _budgets(f: _Fields) -> tuple[float, ...]:
    """`budgets`: fractions in (0, 1] of every expert's preset iterations and schedules."""
    value = f.get("budgets", (int, float, list), [1.0])
    items = value if isinstance(value, list) else [value]
    ok = items and all(isinstance(b, (int, float)) and not isinstance(b, bool) and math.isfinite(b)
                       and 0 < b <= 1 for b in items)
    if not ok:
        raise f.fail("budgets", f"expected fractions in (0, 1], got {value!r}")
    budgets = tuple(dict.fromkeys(float(b) for b in items))
    if any(b != 1.0 for b in budgets) and "budget" not in {x.name for x in dataclasses.fields(Experiment)}:
        raise f.fail("budgets", "this version of the harness trains full budgets only (1.0)")
    return budgets


def _choices(f: _Fields, key: str, allowed: tuple[str, ...]) -> tuple[str, ...]:
    items = f.strings(key)
    bad = [s for s in items if s not in allowed]
    if bad:
        raise f.fail(key, f"{bad[0]!r} is not one of {', '.join(allowed)}")
    return tuple(dict.fromkeys(items))


def _gpus(f: _Fields) -> float:
    value = f.get("gpus_per_task", (int, float), 1.0)
    if not (math.isfinite(value) and (0 < value <= 1 or float(value).is_integer() and value >= 1)):
        raise f.fail("gpus_per_task", f"expected a fraction in (0, 1] or a whole number, got {value!r}")
    return float(value)


def _distill(path: Path, table: dict) -> DistillSpec:
    f = _Fields(path, table, "sweep.distill.")
    unknown = sorted(set(table) - {"router", "weighting", "seeds", "lambda"})
    if unknown:
        raise f.fail(unknown[0], "unknown field (expected router, weighting, seeds, lambda)")
    seeds = f.get("seeds", int, 1)
    if seeds < 1:
        raise f.fail("seeds", f"needs at least one seed, got {seeds}")
    weighting = f.get("weighting", str, "routing")
    for item in (x.strip() for x in weighting.split(",") if x.strip()):
        if item.rpartition(":")[2] not in WEIGHTING_CHOICES:
            raise f.fail("weighting", f"{item!r}: expected routing, none or both (LABEL:KIND for one expert)")
    lam = f.get("lambda", (int, float))
    if lam is not None and not 0 <= lam <= 1:
        raise f.fail("lambda", f"expected a value in [0, 1], got {lam}")
    return DistillSpec(router=f.get("router", str, "vapr"), weighting=weighting, seeds=seeds,
                       lam=None if lam is None else float(lam))


def _check_steps(f: _Fields, spec: SweepSpec) -> None:
    """Stage-2 steps need the routers they read."""
    if spec.steps and not spec.routers and set(spec.steps) & {"fusion", "distill"}:
        raise f.fail("steps", "fusion and distill follow a router; name one in routers")
    if "fusion" in spec.steps and spec.fuse_router not in spec.routers:
        raise f.fail("fuse_router", f"{spec.fuse_router!r} is not among routers ({', '.join(spec.routers)})")
    if "distill" in spec.steps and spec.distill.router not in spec.routers:
        raise f.fail("distill.router", f"{spec.distill.router!r} is not among routers ({', '.join(spec.routers)})")


__all__ = ["STEPS", "DistillSpec", "SweepSpec", "load_spec"]
