"""The table registry: `register_table(name, description)` adds a builder
`(df, **opts) -> DataFrame`; `build_table(name, df, **opts)` runs one with the options it
declares."""

from __future__ import annotations

import inspect
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import pandas as pd

from ...bench.store import is_dirty
from ...errors import ConfigError
from .common import run_label

TIDY_COLUMNS = ["dataset", "scene", "method", "variant", "seed", "metric", "value"]

Builder = Callable[..., pd.DataFrame]


@dataclass(frozen=True)
class TableSpec:
    """A registered table: its name, a one-line description (the default title), its builder."""

    name: str
    description: str
    builder: Builder


TABLES: dict[str, TableSpec] = {}


def register_table(name: str, description: str) -> Callable[[Builder], Builder]:
    """Decorator: register `builder(df, **opts) -> DataFrame` as table `name`."""

    def decorate(builder: Builder) -> Builder:
        if name in TABLES:
            raise ValueError(f"table {name!r} is already registered")
        TABLES[name] = TableSpec(name, description, builder)
        return builder

    return decorate


def _spec(name: str) -> TableSpec:
    spec = TABLES.get(name)
    if spec is None:
        raise ConfigError(f"unknown table {name!r}; valid tables: {', '.join(sorted(TABLES))}")
    return spec


def _takes_any_option(builder: Builder) -> bool:
    params = inspect.signature(builder).parameters.values()
    return any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params)


def table_options(name: str) -> set[str]:
    """Names of the options table `name` takes (the keyword parameters of its builder after the
    results frame); ConfigError for an unknown table."""
    params = list(inspect.signature(_spec(name).builder).parameters.values())[1:]
    kinds = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    return {p.name for p in params if p.kind in kinds}


CLI_FIXED = {"notes", "dataset", "paper_table"}  # options the report command sets itself


def parse_table_options(name: str, items: Sequence[str], option: str = "--option") -> dict[str, Any]:
    """`KEY=VALUE` items -> options of table `name`: integers, decimals, true/false and none
    become numbers, booleans and None; a value with commas becomes a list of strings; anything
    else stays text (the builder checks it). ConfigError naming `option` and the item for a
    malformed item or a key the table does not take (with the keys it does)."""
    known = table_options(name) - CLI_FIXED
    params = inspect.signature(_spec(name).builder).parameters
    out: dict[str, Any] = {}
    for item in items:
        key, sep, text = item.partition("=")
        key = key.strip().replace("-", "_")
        if not sep or not key:
            raise ConfigError(f"{option} {item!r}: expected KEY=VALUE")
        if key not in known:
            takes = ", ".join(sorted(known)) or "none"
            raise ConfigError(f"{option} {item!r}: table {name} has no option {key!r} (its options: {takes})")
        value = _option_value(text.strip())
        if isinstance(value, str) and re.search(r"\b(Sequence|list|tuple)\b", str(params[key].annotation)):
            value = [value]  # one name of a list option (methods=stg), not its letters
        out[key] = value
    return out


def _option_value(text: str) -> Any:
    lowered = text.lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    if lowered == "none":
        return None
    if "," in text:
        return [part.strip() for part in text.split(",") if part.strip()]
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def build_table(name: str, df: pd.DataFrame, **opts: Any) -> pd.DataFrame:
    """Build registered table `name` from tidy rows. Options the builder does not declare are
    dropped (callers such as the CLI pass the same options, e.g. `notes`, to every table); the
    builder checks the values of the others. ConfigError for an unknown name, missing result
    columns or a missing required option."""
    spec = _spec(name)
    missing = [c for c in TIDY_COLUMNS if c not in df.columns]
    if missing:
        raise ConfigError(f"table {name}: results lack columns {missing}")
    if not _takes_any_option(spec.builder):
        known = table_options(name)
        opts = {k: v for k, v in opts.items() if k in known}
    try:
        inspect.signature(spec.builder).bind(df, **opts)
    except TypeError as exc:
        raise ConfigError(f"table {name}: {exc}") from None
    table = spec.builder(df, **opts)
    table.attrs.setdefault("title", spec.description)
    table.attrs.setdefault("footnotes", [])
    return mark_uncommitted(table, df)


UNCOMMITTED = "[uncommitted]"


def mark_uncommitted(table: pd.DataFrame, df: pd.DataFrame) -> pd.DataFrame:
    """Rows of runs recorded from uncommitted code (code version `.dirty`) get UNCOMMITTED after
    their label, and a footnote names them: such numbers do not trace to a commit."""
    if "code_version" not in df.columns or len(df) == 0:
        return table
    dirty = df[df["code_version"].map(is_dirty)]
    if len(dirty) == 0:
        return table
    labels = list(dict.fromkeys(run_label(str(m), str(v)) for m, v in zip(dirty["method"], dirty["variant"],
                                                                          strict=True)))
    if not isinstance(table.index, pd.MultiIndex):
        attrs = dict(table.attrs)
        table = table.rename(index={lab: f"{lab} {UNCOMMITTED}" for lab in labels})
        table.attrs = attrs
    table.attrs["footnotes"] = [*table.attrs.get("footnotes", []),
                                f"{UNCOMMITTED}: runs recorded from code with uncommitted changes, not "
                                f"reproducible from a commit ({', '.join(labels)})."]
    return table
