"""Settings in one place: nested dataclasses <-> dicts, TOML files, preset choice, the
dotted command-line overrides (`--set a.b=c`, scoped to one expert or router with
`LABEL:a.b=c`), and the allowed values of every setting.

Every field of a config dataclass declares what it allows through its annotation: `bool`, a
`Literal[...]`, a nested config dataclass, or `Annotated[<type>, Range(...) | Pattern(...) | Parsed(...)]`
(aliases below: `PositiveInt`, `NonNegativeFloat`, `UnitFloat`, ...), possibly inside
`X | None`, `tuple[...]` or `list[...]`. `merge` and `from_dict` check each value they set
against it (ConfigError naming the key, the value and what is allowed); `validate` checks a
whole config; `unbounded_fields` lists the fields that declare nothing (tests/test_config.py
requires none).
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
import tomllib
import types
import typing
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, TypeVar

from .errors import ConfigError

T = TypeVar("T")


# -- allowed values ------------------------------------------------------------------------------
@dataclass(frozen=True)
class Range:
    """Numbers from `low` to `high` (None: unbounded; `low_open`/`high_open`: the bound itself
    excluded). Every value must also be finite (no nan or inf)."""

    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False

    def allows(self, value: float) -> bool:
        if not math.isfinite(value):
            return False
        if self.low is not None and (value < self.low or (self.low_open and value == self.low)):
            return False
        return self.high is None or not (value > self.high or (self.high_open and value == self.high))

    def describe(self) -> str:
        lo = None if self.low is None else f"{'>' if self.low_open else '>='} {self.low:g}"
        hi = None if self.high is None else f"{'<' if self.high_open else '<='} {self.high:g}"
        if lo and hi:
            return (f"in {'(' if self.low_open else '['}{self.low:g}, {self.high:g}"
                    f"{')' if self.high_open else ']'}")
        return lo or hi or "a finite number"

    def check(self, value: Any, where: str, shown: Any = None) -> None:
        """ConfigError naming `where` and `shown` (default: `value`, as the user wrote it)."""
        if not self.allows(float(value)):
            shown = value if shown is None else shown
            raise ConfigError(f"{where}: {shown!r} is out of range (allowed: {self.describe()})")


@dataclass(frozen=True)
class Pattern:
    """Strings that fully match the regular expression `regex`; `describe` says which in words."""

    regex: str
    describe_text: str

    def describe(self) -> str:
        return self.describe_text

    def check(self, value: Any, where: str, shown: Any = None) -> None:
        if re.fullmatch(self.regex, value) is None:
            raise ConfigError(f"{where}: {value!r} is not allowed (allowed: {self.describe_text})")


@dataclass(frozen=True)
class Parsed:
    """Strings that `parse` accepts (it raises ConfigError for any other), for settings with a
    grammar of their own (`--resolution`, `--colmap-frames`); `describe` says which in words."""

    parse: Callable[[str], Any]
    describe_text: str

    def describe(self) -> str:
        return self.describe_text

    def check(self, value: Any, where: str, shown: Any = None) -> None:
        try:
            self.parse(value)
        except ConfigError as exc:
            raise ConfigError(f"{where}: {value!r} is not allowed ({exc})") from None


Check = Range | Pattern | Parsed

PositiveInt = Annotated[int, Range(1)]
NonNegativeInt = Annotated[int, Range(0)]
PositiveFloat = Annotated[float, Range(0, low_open=True)]
NonNegativeFloat = Annotated[float, Range(0)]
UnitFloat = Annotated[float, Range(0, 1)]  # a probability, share or weight in [0, 1]
OpenUnitFloat = Annotated[float, Range(0, 1, low_open=True, high_open=True)]  # has a finite logit
FiniteFloat = Annotated[float, Range()]  # any finite number (logits, log-scales, offsets)
SHDegree = Annotated[int, Range(0, 3)]  # spherical-harmonic bands the renderer evaluates


def _checks(tp: Any) -> tuple[Any, list[Check]]:
    """(base type, its Range/Pattern checks) of an `Annotated[...]` type; (tp, []) otherwise."""
    if typing.get_origin(tp) is Annotated:
        base, *meta = typing.get_args(tp)
        return base, [m for m in meta if isinstance(m, Range | Pattern | Parsed)]
    return tp, []


def _type_text(tp: Any) -> str:
    base, checks = _checks(tp)
    name = getattr(base, "__name__", str(base))
    return f"{name} {checks[0].describe()}" if checks else name


def unbounded_fields(cls: type, where: str = "") -> list[str]:
    """Dotted names of the fields of config dataclass `cls` (nested ones included) whose
    annotation does not bound their values (a plain `int`, `float`, `str`, ...)."""
    out: list[str] = []
    for f in dataclasses.fields(cls):
        path = f"{where}.{f.name}" if where else f.name
        out += _unbounded(_field_types(cls)[f.name], path)
    return out


def _unbounded(tp: Any, path: str) -> list[str]:
    base, checks = _checks(tp)
    origin = typing.get_origin(base)
    if checks or base is bool or origin is typing.Literal:
        return []
    if _is_dataclass_type(base):
        return unbounded_fields(base, path)
    if origin in (typing.Union, types.UnionType):
        return [p for a in typing.get_args(base) if a is not type(None) for p in _unbounded(a, path)]
    if origin in (list, tuple) and typing.get_args(base):
        return sorted({p for a in typing.get_args(base) if a is not Ellipsis for p in _unbounded(a, path)})
    return [path]


def validate(cfg: Any, where: str = "") -> Any:
    """Check every value of config dataclass instance `cfg` (nested ones included) against its
    field's annotation; returns `cfg`. ConfigError names the first bad key."""
    types_ = _field_types(type(cfg))
    for f in dataclasses.fields(cfg):
        path = f"{where}.{f.name}" if where else f.name
        value = getattr(cfg, f.name)
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            validate(value, path)
        else:
            _coerce(value, types_[f.name], path)
    return cfg


# -- dataclasses <-> dicts -------------------------------------------------------------------------
def to_dict(cfg: Any) -> dict:
    """A dataclass (nested) as a plain JSON-able dict."""
    return json.loads(json.dumps(dataclasses.asdict(cfg), default=str))


def _field_types(cls) -> dict[str, Any]:
    return typing.get_type_hints(cls, include_extras=True)


def _is_dataclass_type(tp) -> bool:
    return isinstance(tp, type) and dataclasses.is_dataclass(tp)


def _coerce(value: Any, tp: Any, where: str) -> Any:
    """Check/convert a parsed value to the annotated type (ints accepted for floats) and its
    declared range or pattern; ConfigError naming `where`, the value and what is allowed."""
    tp, checks = _checks(tp)
    coerced = _coerce_base(value, tp, where)
    for check in checks:
        check.check(coerced, where, value)
    return coerced


def _coerce_base(value: Any, tp: Any, where: str) -> Any:
    origin = typing.get_origin(tp)
    if tp is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if value is None and len(args) < len(typing.get_args(tp)):
            return None
        if len(args) == 1:  # X | None: X's own message (with its range) says what is wrong
            return _coerce(value, args[0], where)
        for arg in args:
            try:
                return _coerce(value, arg, where)
            except ConfigError:
                continue
        raise ConfigError(f"{where}: {value!r} does not fit {' | '.join(map(_type_text, args))}")
    if _is_dataclass_type(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a table of settings, got {value!r}")
        return from_dict(tp, value, where)
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        args = typing.get_args(tp)
        if origin is tuple and args and args[-1] is not Ellipsis:  # fixed length: one type each
            if len(value) != len(args):
                raise ConfigError(f"{where}: expected {len(args)} values, got {len(value)} ({value!r})")
            return tuple(_coerce(v, a, f"{where}[{i}]") for i, (v, a) in enumerate(zip(value, args, strict=True)))
        inner = args[0] if args else Any
        items = [_coerce(v, inner, f"{where}[{i}]") for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if origin is dict or tp is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a table, got {value!r}")
        return dict(value)
    if origin is typing.Literal:
        if value not in typing.get_args(tp):
            raise ConfigError(f"{where}: {value!r} is not one of {list(typing.get_args(tp))}")
        return value
    if tp is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if tp is bool and not isinstance(value, bool):
        raise ConfigError(f"{where}: expected true/false, got {value!r}")
    if tp in (int, float) and isinstance(value, bool):  # bool is an int subclass
        raise ConfigError(f"{where}: expected {tp.__name__}, got {value!r}")
    if isinstance(tp, type) and not isinstance(value, tp):
        raise ConfigError(f"{where}: expected {tp.__name__}, got {value!r}")
    if tp is float and not math.isfinite(value):
        raise ConfigError(f"{where}: {value!r} is not a finite number")
    return value


def from_dict(cls: type[T], data: dict, where: str = "") -> T:
    """Build dataclass `cls` from a (partial) dict; missing keys keep their defaults.

    An unknown key raises ConfigError naming it and listing the valid ones.
    """
    types_ = _field_types(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    kwargs = {}
    for key, value in data.items():
        path = f"{where}.{key}" if where else key
        if key not in names:
            raise ConfigError(f"unknown setting {path!r} (valid: {', '.join(sorted(names))})")
        kwargs[key] = _coerce(value, types_[key], path)
    return cls(**kwargs)


def merge(cfg: T, data: dict, where: str = "", known_only: bool = False) -> T:
    """A copy of dataclass `cfg` with the (nested, partial) values of `data` applied.

    An unknown key raises ConfigError naming it; with `known_only`, top-level keys `cfg` does
    not have are skipped instead (settings meant for several configs of different kinds).
    """
    types_ = _field_types(type(cfg))
    names = {f.name for f in dataclasses.fields(cfg)}
    changes = {}
    for key, value in data.items():
        path = f"{where}.{key}" if where else key
        if key not in names:
            if known_only:
                continue
            raise ConfigError(f"unknown setting {path!r} (valid: {', '.join(sorted(names))})")
        current = getattr(cfg, key)
        if dataclasses.is_dataclass(current) and isinstance(value, dict):
            changes[key] = merge(current, value, path)
        else:
            changes[key] = _coerce(value, types_[key], path)
    return dataclasses.replace(cfg, **changes)


def parse_value(text: str) -> Any:
    """An override's value: TOML literal (1, 0.5, true, "x", [1, 2]) or a bare string."""
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


def overrides_to_dict(overrides: Sequence[str], option: str = "--set") -> dict:
    """["train.iterations=100", "sh_degree=1"] -> {"train": {"iterations": 100}, "sh_degree": 1}."""
    out: dict = {}
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"{option} {item!r}: expected KEY=VALUE, e.g. train.iterations=500")
        key, text = item.split("=", 1)
        parts = key.strip().split(".")
        node = out
        for p in parts[:-1]:
            node = node.setdefault(p, {})
        node[parts[-1]] = parse_value(text.strip())
    return out


def has_setting(cfg_type: type, dotted: str) -> bool:
    """Whether dataclass type `cfg_type` has the (dotted, nested) setting `dotted`."""
    tp: Any = cfg_type
    for part in dotted.split("."):
        if not _is_dataclass_type(tp) or part not in {f.name for f in dataclasses.fields(tp)}:
            return False
        tp = _field_types(tp)[part]
    return True


def scoped_overrides(items: Sequence[str], labels: Sequence[str], configs: Mapping[str, type],
                     option: str = "--set") -> dict[str, dict]:
    """Command-line overrides for several labelled configs (experts, routers).

    items: `KEY=VALUE` (every label whose config has KEY) or `LABEL:KEY=VALUE` (that label
    only); labels: the labels in use; configs: label -> its config dataclass type.
    Returns label -> nested overrides dict. ConfigError names an item whose scope is not a
    label, or an unscoped key that no label's config has.
    """
    out: dict[str, list[str]] = {label: [] for label in labels}
    for item in items:
        key = item.split("=", 1)[0]
        if ":" in key:
            scope, rest = item.split(":", 1)
            if scope not in out:
                raise ConfigError(f"{option} {item}: {scope!r} is not one of {', '.join(labels)}")
            out[scope].append(rest)
            continue
        fits = [label for label in labels if has_setting(configs[label], key.strip())]
        if not fits and "=" in item:
            raise ConfigError(f"{option} {item}: no {', '.join(labels)} has a setting {key.strip()!r}")
        for label in fits or labels:
            out[label].append(item)
    scoped = {label: overrides_to_dict(own, option) for label, own in out.items()}
    for label, data in scoped.items():  # every value checked now, before anything is trained
        try:
            merge(configs[label](), data)
        except ConfigError as exc:
            raise ConfigError(f"{option} {label}: {exc}") from None
    return scoped


# synthetic scene size -> the preset that fits it (experts; routers)
SIZE_PRESETS = {"tiny": "tiny", "small": "small", "full": "fast"}
ROUTER_SIZE_PRESETS = {"tiny": "tiny", "small": "fast", "full": "fast"}


def choose_preset(available: Collection[str], size: str | None = None, named: str | None = None,
                  size_presets: Mapping[str, str] = SIZE_PRESETS, fallback: str = "paper") -> str | None:
    """The preset a run uses when none is asked for: the one that fits a synthetic scene's
    `size`, else the one a dataset file `named`, else `fallback` — each only if `available`."""
    if size in size_presets and size_presets[size] in available:
        return size_presets[size]
    if named in available:
        return named
    return fallback if fallback in available else None


def load_toml(path: str | Path, what: str = "file") -> dict:
    """A TOML file as a dict; ConfigError naming the file when it is missing or invalid."""
    path = Path(path)
    try:
        return tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"{path}: {what} is missing") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: invalid TOML ({exc})") from None
