"""Settings in one place: nested dataclasses <-> dicts, TOML files, preset choice, and the
dotted command-line overrides (`--set a.b=c`, scoped to one expert or router with
`LABEL:a.b=c`)."""

from __future__ import annotations

import dataclasses
import json
import tomllib
import types
import typing
from collections.abc import Collection, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

from .errors import ConfigError

T = TypeVar("T")


def to_dict(cfg: Any) -> dict:
    """A dataclass (nested) as a plain JSON-able dict."""
    return json.loads(json.dumps(dataclasses.asdict(cfg), default=str))


def _field_types(cls) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _is_dataclass_type(tp) -> bool:
    return isinstance(tp, type) and dataclasses.is_dataclass(tp)


def _coerce(value: Any, tp: Any, where: str) -> Any:
    """Check/convert a parsed value to the annotated type (ints accepted for floats)."""
    origin = typing.get_origin(tp)
    if tp is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, where)
            except ConfigError:
                continue
        raise ConfigError(f"{where}: {value!r} does not fit {tp}")
    if _is_dataclass_type(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a table of settings, got {value!r}")
        return from_dict(tp, value, where)
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        args = typing.get_args(tp)
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
        return float(value)
    if tp is bool and not isinstance(value, bool):
        raise ConfigError(f"{where}: expected true/false, got {value!r}")
    if isinstance(tp, type) and not isinstance(value, tp):
        raise ConfigError(f"{where}: expected {tp.__name__}, got {value!r}")
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
    return {label: overrides_to_dict(own, option) for label, own in out.items()}


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
