"""The MoE-GS paper's published tables as tidy data (`moegs_bench/leaderboards/paper/*.csv`).

Each file `table<NN>_<short-name>.csv` holds one of the paper's Tables 1–13, one row per printed
number, with columns `table, dataset, scene, method, variant, metric, value` and an optional
`note` (the paper's marks, e.g. †, and how a dataset was identified). Values are copied as
printed; `load_paper` checks every file and returns them as one DataFrame. The report tables
(`report/tables/`) show these values beside our measured results.
"""

from __future__ import annotations

import csv
import math
import re
from pathlib import Path

import pandas as pd

from ..data.datasets import load_dataset
from ..errors import ConfigError

PAPER_COLUMNS = ("table", "dataset", "scene", "method", "variant", "metric", "value")
OPTIONAL_COLUMNS = ("note",)
PAPER_DATASETS = ("n3v", "technicolor", "hypernerf")
PAPER_METRICS = (
    "psnr",
    "ssim",
    "lpips",
    "fps",
    "memory_mb",
    "train_hours",
    "psnr_min",
    "psnr_max",
    "psnr_mean",
)
AVERAGE_SCENE = "average"
# published metric -> the metric of ours it is compared with: the paper's LPIPS comes from the
# 3DGS-family evaluation code, which feeds [0,1] images unmapped (REFERENCE.md §4), i.e. our
# "lpips_3dgs"; our "lpips" (official [-1,1] convention) has no published counterpart
COMPARED_WITH: dict[str, str] = {"lpips": "lpips_3dgs"}
PAPER_GPU = "NVIDIA A6000, each method's original code"  # REFERENCE.md section 7

# Short captions of the paper's tables (the paper's own captions, abridged).
PAPER_TABLES: dict[int, str] = {
    1: "PSNR per scene",
    2: "PSNR per scene",
    3: "Efficiency of MoE-GS (N=2) and its experts: PSNR, FPS, memory",
    4: "MoE router variants",
    5: "Ablation of the efficiency optimisations (single-pass rendering, pruning)",
    6: "Effect of the expert training budget on MoE-GS (N=3)",
    7: "Distillation: retrained vs distilled experts",
    8: "PSNR, SSIM, LPIPS per scene",
    9: "PSNR, SSIM, LPIPS per scene",
    10: "PSNR per scene",
    11: "Distillation strategies per scene",
    12: "Stability across five repeated trainings",
    13: "Routing-weighted distillation of E-D3DGS",
}

# Tables holding per-scene image metrics of a dataset, in priority order: the headline PSNR
# table first, so that its values win where the per-metric appendix table prints another.
MAIN_SOURCES: dict[str, tuple[int, ...]] = {
    "n3v": (1, 8),
    "technicolor": (2, 9),
    "hypernerf": (10,),
}

_FILE_NAME = re.compile(r"table(\d\d)_[a-z0-9][a-z0-9-]*\.csv")
_EXPERT_SET = re.compile(r"N=(\d+)")


def paper_dir() -> Path:
    """The `moegs_bench/leaderboards/paper/` folder of the imported package (no input).

    Out: its path; the CSV files ship as package data (pyproject.toml
    `[tool.setuptools.package-data]`), so editable and wheel installs both find them.
    """
    return Path(__file__).resolve().parents[1] / "leaderboards" / "paper"


def paper_files(root: str | Path | None = None) -> dict[int, Path]:
    """Table number -> CSV file in `root` (default `paper_dir()`); ConfigError on a bad name."""
    root = Path(root) if root is not None else paper_dir()
    if not root.is_dir():
        raise ConfigError(f"{root}: folder of published tables is missing")
    files: dict[int, Path] = {}
    for path in sorted(root.glob("table*.csv")):
        m = _FILE_NAME.fullmatch(path.name)
        if m is None:
            raise ConfigError(f"{path}: file name must be table<NN>_<short-name>.csv")
        number = int(m.group(1))
        if number in files:
            raise ConfigError(f"{path}: table {number} is already in {files[number].name}")
        files[number] = path
    return files


def printed_decimals(text: str) -> int:
    """Decimals of a number as printed ("34.7" -> 1, "120" -> 0)."""
    return len(text.split(".", 1)[1]) if "." in text else 0


def _check_row(row: dict[str, str], number: int, where: str, scenes: dict[str, set[str]]) -> float:
    """Check one row's fields; returns its value. ConfigError naming `where` (file:line)."""
    for col in PAPER_COLUMNS:
        if not (row.get(col) or "").strip():
            raise ConfigError(f"{where}: column {col!r} is empty")
    if row["table"] != str(number):
        raise ConfigError(f"{where}: table {row['table']!r} differs from the file name's {number}")
    dataset = row["dataset"]
    if dataset not in PAPER_DATASETS:
        raise ConfigError(f"{where}: dataset {dataset!r} is not one of {', '.join(PAPER_DATASETS)}")
    if dataset not in scenes:
        scenes[dataset] = set(load_dataset(dataset).scenes)
    if row["scene"] != AVERAGE_SCENE and row["scene"] not in scenes[dataset]:
        known = ", ".join(sorted(scenes[dataset]) + [AVERAGE_SCENE])
        raise ConfigError(f"{where}: scene {row['scene']!r} is not a {dataset} scene ({known})")
    if row["metric"] not in PAPER_METRICS:
        raise ConfigError(
            f"{where}: metric {row['metric']!r} is not one of {', '.join(PAPER_METRICS)}"
        )
    try:
        value = float(row["value"])
    except ValueError:
        raise ConfigError(f"{where}: value {row['value']!r} is not a number") from None
    if not math.isfinite(value):
        raise ConfigError(f"{where}: value {row['value']!r} is not finite")
    return value


def read_paper_csv(path: str | Path, number: int | None = None) -> pd.DataFrame:
    """Read and check one published table. In: a CSV with columns PAPER_COLUMNS (+ note); the
    table number is taken from the file name unless given. Out: DataFrame with those columns
    (table int, value float, note "" where absent) plus `printed` (the value as written).
    ConfigError naming the file and line for a bad header, field, value or a duplicate row."""
    path = Path(path)
    if number is None:
        m = _FILE_NAME.fullmatch(path.name)
        if m is None:
            raise ConfigError(f"{path}: file name must be table<NN>_<short-name>.csv")
        number = int(m.group(1))
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read ({exc})") from None
    reader = csv.DictReader(text.splitlines())
    header = tuple(reader.fieldnames or ())
    if header not in (PAPER_COLUMNS, PAPER_COLUMNS + OPTIONAL_COLUMNS):
        raise ConfigError(
            f"{path}: header must be {','.join(PAPER_COLUMNS)}[,note]; got {','.join(header)}"
        )
    records, seen, scenes = [], {}, {}
    for line, row in enumerate(reader, start=2):
        where = f"{path}:{line}"
        if None in row or any(v is None for v in row.values()):
            raise ConfigError(f"{where}: expected {len(header)} fields")
        value = _check_row(row, number, where, scenes)
        key = tuple(row[c] for c in PAPER_COLUMNS[:6])
        if key in seen:
            raise ConfigError(f"{where}: duplicate of line {seen[key]} ({', '.join(key[1:])})")
        seen[key] = line
        records.append(
            {
                **{c: row[c] for c in PAPER_COLUMNS[1:6]},
                "table": number,
                "value": value,
                "printed": row["value"],
                "note": row.get("note") or "",
            }
        )
    if not records:
        raise ConfigError(f"{path}: no rows")
    return pd.DataFrame(records, columns=[*PAPER_COLUMNS, "note", "printed"])


def load_paper(
    table: int | None = None, dataset: str | None = None, root: str | Path | None = None
) -> pd.DataFrame:
    """The published values, optionally of one table and/or one dataset. Out: DataFrame with
    columns table, dataset, scene, method, variant, metric, value, note, printed (see
    `read_paper_csv`), in file order. ConfigError for an unknown table or dataset, or a bad file
    (naming the file and row). `root` defaults to `paper_dir()` (moegs_bench/leaderboards/paper/)."""
    files = paper_files(root)
    if table is not None and table not in files:
        known = ", ".join(str(n) for n in sorted(files))
        raise ConfigError(f"unknown paper table {table!r}; published tables: {known}")
    if dataset is not None and dataset not in PAPER_DATASETS:
        raise ConfigError(
            f"no published values for dataset {dataset!r}; paper datasets: "
            f"{', '.join(PAPER_DATASETS)}"
        )
    numbers = [table] if table is not None else sorted(files)
    frames = [read_paper_csv(files[n], n) for n in numbers]
    out = pd.concat(frames, ignore_index=True)
    if dataset is not None:
        out = out[out["dataset"] == dataset].reset_index(drop=True)
    return out


def our_metric(paper_metric: str) -> str:
    """The metric of ours that a published metric is compared with ("lpips" -> "lpips_3dgs";
    any other name maps to itself)."""
    return COMPARED_WITH.get(paper_metric, paper_metric)


def as_our_metrics(paper: pd.DataFrame) -> pd.DataFrame:
    """Published rows (columns of `load_paper`) with `metric` renamed to the metric of ours each
    is compared with (`our_metric`), for tables that put them beside our results. A copy."""
    return paper.assign(metric=[our_metric(str(m)) for m in paper["metric"]])


def expert_set(dataset: str, variant: str) -> tuple[str, ...] | None:
    """The experts a paper variant "N=k" stands for on `dataset` (moegs_bench/datasets/<dataset>.toml
    expert_sets), else None (other variants, or k without an expert set)."""
    m = _EXPERT_SET.fullmatch(variant)
    if m is None:
        return None
    return load_dataset(dataset).expert_sets.get(int(m.group(1)))


def variant_matches(dataset: str, paper_variant: str, our_variant: str) -> bool:
    """Whether our variant is the paper's: equal names, or our "a+b+c" expert set is the set
    the paper's "N=k" stands for (order does not matter)."""
    if paper_variant == our_variant:
        return True
    experts = expert_set(dataset, paper_variant)
    return experts is not None and set(our_variant.split("+")) == set(experts)


def main_reference(dataset: str, root: str | Path | None = None) -> pd.DataFrame:
    """Per-scene (and average) image metrics the paper publishes for `dataset`: the tables of
    MAIN_SOURCES merged, an earlier table winning where two print a value for the same
    (method, variant, scene, metric). Same columns as `load_paper`."""
    if dataset not in MAIN_SOURCES:
        raise ConfigError(
            f"no published values for dataset {dataset!r}; paper datasets: "
            f"{', '.join(MAIN_SOURCES)}"
        )
    frames = [load_paper(table=n, dataset=dataset, root=root) for n in MAIN_SOURCES[dataset]]
    out = pd.concat(frames, ignore_index=True)
    key = ["method", "variant", "scene", "metric"]
    return out.drop_duplicates(subset=key, keep="first").reset_index(drop=True)


def paper_mark(note: str) -> str:
    """The paper's mark carried by a note ("†" for "†: ..."), else ""."""
    return "†" if note.startswith("†") else ""
