"""Dataset descriptions from `moegs_bench/datasets/*.toml`: scenes, frame ranges, test cameras, resolution,
the expert sets of the paper and per-expert preset names (docs/datasets.md).

Top-level keys of a file: name, title, label (short name in tables; default the title), layout
(reader), description, resolution, test_cameras, segment, experts, [expert_sets] (N -> expert
names), default_experts (the N that `run` trains without --experts), [presets] (expert ->
preset name), router_preset (the routers' preset),
[segment_frames] (expert -> frames per model, for experts trained per temporal segment) and
[scenes.<name>] tables with optional frames
("START:END", END exclusive), test_cameras, drop_cameras, repairs, aliases (other folder names of
the scene) and description.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..config import load_toml
from ..errors import ConfigError
from .formats import format_names, parse_frame_range

GENERATED = ("synthetic",)  # layouts made here rather than read from raw files


def datasets_dir() -> Path:
    """The `moegs_bench/datasets/` folder of the imported package (no input).

    Out: its path; the TOML files ship as package data, so editable and wheel installs both
    have them next to the code (pyproject.toml `[tool.setuptools.package-data]`).
    """
    return Path(__file__).resolve().parents[1] / "datasets"


@dataclass(frozen=True)
class SceneSpec:
    """Settings of one published scene; None/empty fields fall back to the dataset's."""

    name: str
    frames: tuple[int, int] | None = None
    test_cameras: tuple[str, ...] | None = None
    drop_cameras: tuple[str, ...] = ()
    repairs: tuple[dict, ...] = ()
    aliases: tuple[str, ...] = ()
    description: str = ""


@dataclass(frozen=True)
class DatasetSpec:
    """One moegs_bench/datasets/<name>.toml."""

    name: str
    title: str
    layout: str
    path: Path
    label: str = ""  # short display name ("N3V"); the loader defaults it to the title
    description: str = ""
    resolution: str = "full"
    test_cameras: tuple[str, ...] = ()
    segment: int = 0
    experts: tuple[str, ...] = ()
    expert_sets: dict[int, tuple[str, ...]] = field(default_factory=dict)
    default_experts: int | None = None  # the [expert_sets] size `run` trains without --experts
    presets: dict[str, str] = field(default_factory=dict)
    router_preset: str | None = None
    segment_frames: dict[str, int] = field(default_factory=dict)
    scenes: dict[str, SceneSpec] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)

    def find_scene(self, folder_name: str) -> SceneSpec | None:
        """The published scene a folder name stands for (its name or an alias), else None."""
        for spec in self.scenes.values():
            if folder_name == spec.name or folder_name in spec.aliases:
                return spec
        return None

    def scene_settings(self, folder_name: str) -> SceneSpec:
        """Settings for a scene folder: the published scene's, or the dataset defaults (all
        frames, the dataset's test cameras) for a folder that is not a published scene."""
        spec = self.find_scene(folder_name) or SceneSpec(folder_name)
        tests = spec.test_cameras if spec.test_cameras is not None else self.test_cameras
        return SceneSpec(spec.name, spec.frames, tuple(tests), spec.drop_cameras, spec.repairs,
                         spec.aliases, spec.description)


def _strs(value: Any, where: str) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ConfigError(f"{where}: expected a list of strings")
    return tuple(value)


def _scene(name: str, obj: Any, path: Path) -> SceneSpec:
    where = f"{path}: scenes.{name}"
    if not isinstance(obj, dict):
        raise ConfigError(f"{where}: expected a table")
    known = {"frames", "test_cameras", "drop_cameras", "repairs", "aliases", "description"}
    unknown = sorted(set(obj) - known)
    if unknown:
        raise ConfigError(f"{where}: unknown key {unknown[0]!r} (known: {', '.join(sorted(known))})")
    repairs = obj.get("repairs", [])
    if not isinstance(repairs, list) or not all(isinstance(r, dict) for r in repairs):
        raise ConfigError(f"{where}.repairs: expected a list of tables")
    return SceneSpec(
        name=name,
        frames=parse_frame_range(obj.get("frames"), f"{where}.frames"),
        test_cameras=_strs(obj["test_cameras"], f"{where}.test_cameras") if "test_cameras" in obj else None,
        drop_cameras=_strs(obj.get("drop_cameras", []), f"{where}.drop_cameras"),
        repairs=tuple(repairs),
        aliases=_strs(obj.get("aliases", []), f"{where}.aliases"),
        description=str(obj.get("description", "")),
    )


def load_dataset_file(path: str | Path) -> DatasetSpec:
    """Parse and check one dataset TOML file; ConfigError naming the file and key."""
    path = Path(path)
    obj = load_toml(path, "dataset file")
    for key in ("name", "layout"):
        if not isinstance(obj.get(key), str):
            raise ConfigError(f"{path}: {key}: expected a string")
    layouts = [*format_names(), *GENERATED]
    if obj["layout"] not in layouts:
        raise ConfigError(f"{path}: layout {obj['layout']!r} is not one of {', '.join(layouts)}")
    segment = obj.get("segment", 0)
    if not isinstance(segment, int) or segment < 0:
        raise ConfigError(f"{path}: segment: expected an integer >= 0")
    sets = obj.get("expert_sets", {})
    try:
        expert_sets = {int(k): _strs(v, f"{path}: expert_sets.{k}") for k, v in sets.items()}
    except ValueError:
        raise ConfigError(f"{path}: expert_sets: keys must be expert counts (integers)") from None
    default_experts = obj.get("default_experts")
    if default_experts is not None and (isinstance(default_experts, bool) or default_experts not in expert_sets):
        raise ConfigError(f"{path}: default_experts: expected a size of [expert_sets] "
                          f"({', '.join(map(str, sorted(expert_sets))) or 'none'}), got {default_experts!r}")
    presets = obj.get("presets", {})
    if not isinstance(presets, dict) or not all(isinstance(v, str) for v in presets.values()):
        raise ConfigError(f"{path}: presets: expected expert = \"preset name\" pairs")
    router_preset = obj.get("router_preset")
    if router_preset is not None and not isinstance(router_preset, str):
        raise ConfigError(f"{path}: router_preset: expected a preset name")
    segment_frames = obj.get("segment_frames", {})
    if not isinstance(segment_frames, dict) or not all(
            isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in segment_frames.values()):
        raise ConfigError(f"{path}: segment_frames: expected expert = frames per model (an integer >= 0)")
    scenes = {name: _scene(name, s, path) for name, s in obj.get("scenes", {}).items()}
    known = {"name", "title", "label", "layout", "description", "resolution", "test_cameras",
             "segment", "experts", "expert_sets", "default_experts", "presets", "router_preset",
             "segment_frames", "scenes"}
    return DatasetSpec(
        name=obj["name"], title=str(obj.get("title", obj["name"])), layout=obj["layout"], path=path,
        label=str(obj.get("label", obj.get("title", obj["name"]))),
        description=str(obj.get("description", "")), resolution=str(obj.get("resolution", "full")),
        test_cameras=_strs(obj.get("test_cameras", []), f"{path}: test_cameras"), segment=segment,
        experts=_strs(obj.get("experts", []), f"{path}: experts"), expert_sets=expert_sets,
        default_experts=default_experts,
        presets=dict(presets), router_preset=router_preset, segment_frames=dict(segment_frames), scenes=scenes,
        extra={k: v for k, v in obj.items() if k not in known},
    )


def list_datasets(root: str | Path | None = None) -> list[DatasetSpec]:
    """Every moegs_bench/datasets/*.toml, sorted by name."""
    root = Path(root) if root is not None else datasets_dir()
    if not root.is_dir():
        raise ConfigError(f"{root}: datasets folder is missing")
    return sorted((load_dataset_file(p) for p in root.glob("*.toml")), key=lambda d: d.name)


def load_dataset(name: str, root: str | Path | None = None) -> DatasetSpec:
    """moegs_bench/datasets/<name>.toml; ConfigError listing the known datasets for an unknown name."""
    root = Path(root) if root is not None else datasets_dir()
    path = root / f"{name}.toml"
    if not path.is_file():
        known = sorted(p.stem for p in root.glob("*.toml"))
        raise ConfigError(f"unknown dataset {name!r}; known: {', '.join(known) or '(none)'}")
    return load_dataset_file(path)


def _dataset_or_none(name: str) -> DatasetSpec | None:
    """moegs_bench/datasets/<name>.toml, or None when the dataset has no file (a scene of one's own)."""
    return load_dataset(name) if (datasets_dir() / f"{name}.toml").is_file() else None


def dataset_presets(name: str) -> dict[str, str]:
    """Expert -> preset name that dataset `name`'s file chooses ({} without a file)."""
    spec = _dataset_or_none(name)
    return dict(spec.presets) if spec is not None else {}


def dataset_router_preset(name: str) -> str | None:
    """The router preset dataset `name`'s file chooses (None: none, or no file)."""
    spec = _dataset_or_none(name)
    return spec.router_preset if spec is not None else None


def dataset_segment_frames(name: str) -> dict[str, int]:
    """Expert -> frames per model on dataset `name` (one model per temporal segment; {} without
    a file)."""
    spec = _dataset_or_none(name)
    return dict(spec.segment_frames) if spec is not None else {}


def dataset_default_experts(name: str) -> int | None:
    """The expert-set size `run` trains on dataset `name` without --experts (None: the file
    names none, or there is no file)."""
    spec = _dataset_or_none(name)
    return spec.default_experts if spec is not None else None


def dataset_expert_sets(name: str) -> dict[int, tuple[str, ...]]:
    """The paper's expert sets (N -> experts) on dataset `name` ({} without a file)."""
    spec = _dataset_or_none(name)
    return dict(spec.expert_sets) if spec is not None else {}
