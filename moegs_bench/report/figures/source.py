"""What a figure reads from the run store: the tidy rows of one dataset, the runs they come from,
the images a run saved (renders, gate maps, label maps), its analyses, and the prepared scene the
runs were made from (for ground truth), found only when its fingerprint matches the runs' keys.

Nothing here trains or renders a model: figures show what the store holds.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import numpy as np
import pandas as pd

from ...bench.store import (
    ANALYSIS_DIR,
    CONFIG_FILE,
    PER_IMAGE_FILE,
    content_key,
    key_code,
    notes,
    results,
    scene_fingerprint,
)
from ...data.images import read_image
from ...data.scene import SCENE_FILE, read_scene
from ...errors import ConfigError, MoegsError
from ...eval.evaluate import RENDERS
from ...experts.registry import available_experts, split_label
from ..tables.common import labelled

SCENES_DIR = "scenes"  # where `moegs-bench run` generates synthetic scenes inside the store


class FigureDataMissing(ConfigError):
    """The run store lacks what a figure shows; the message names the run that makes it."""


def view_stem(camera: str, frame: int) -> str:
    """File name of a saved image of a test view (eval.evaluate: <camera>_<frame:05d>.png)."""
    return f"{camera}_{int(frame):05d}.png"


def read_png(path: Path) -> np.ndarray:
    """A saved image as uint8 [H,W,3], or a label map as [H,W] (values kept)."""
    return read_image(path, mode=None)


@dataclass
class StoreView:
    """The run store `runs_dir` seen through one dataset: `rows` its tidy rows with `label` (an
    expert run's expert label, e.g. `stg@tiny`; else the tables' `method (variant)`), `notes`
    why metrics are missing. Runs are addressed by (scene, method, variant, seed)."""

    runs_dir: Path
    dataset: str
    rows: pd.DataFrame
    notes: pd.DataFrame
    _scenes: dict[str, Path | None] = field(default_factory=dict, repr=False)

    # -- runs -------------------------------------------------------------------------------
    @cached_property
    def runs(self) -> pd.DataFrame:
        """One row per run: scene, method, variant, seed, label, run_dir (path order)."""
        cols = ["scene", "method", "variant", "seed", "label", "run_dir"]
        return self.rows.drop_duplicates("run_dir")[cols].reset_index(drop=True)

    @cached_property
    def experts(self) -> set[str]:
        return set(available_experts())

    def is_expert(self, method: str) -> bool:
        return method in self.experts

    def scenes(self) -> list[str]:
        return list(dict.fromkeys(self.runs["scene"]))

    def run_dir(self, scene: str, method: str, variant: str, seed: int) -> Path | None:
        r = self.runs
        hit = r[(r.scene == scene) & (r.method == method) & (r.variant == variant) & (r.seed == seed)]
        return Path(hit["run_dir"].iloc[0]) if len(hit) else None

    def expert_run_dir(self, scene: str, label: str, seed: int) -> Path | None:
        """The stage-1 run of an expert label (`stg`: variant default; `stg@tiny`: variant tiny)."""
        name, preset = split_label(label)
        return self.run_dir(scene, name, preset or "default", seed)

    def per_image(self, run_dir: Path) -> pd.DataFrame:
        """The run's per-image rows (camera, frame, psnr, ...); empty when absent."""
        path = Path(run_dir) / PER_IMAGE_FILE
        return pd.read_csv(path) if path.is_file() else pd.DataFrame(columns=["camera", "frame", "psnr"])

    def metric(self, name: str) -> pd.DataFrame:
        """Rows of one metric (scene, method, variant, seed, label, value, ...)."""
        return self.rows[self.rows["metric"] == name]

    def analysis_file(self, run_dir: Path, name: str) -> Path:
        return Path(run_dir) / ANALYSIS_DIR / name

    # -- messages ---------------------------------------------------------------------------
    def missing(self, what: str, command: str, where: str = "") -> FigureDataMissing:
        """FigureDataMissing: "<what> in <runs>/ (dataset D): run `moegs-bench run <command>
        [--runs DIR]`<where>" (where: e.g. " on a CUDA machine")."""
        runs = "" if self.runs_dir == Path("runs") else f" --runs {self.runs_dir}"
        # synthetic scenes are made by `run` itself; another dataset's scene is prepared first
        scene = "" if self.dataset == "synthetic" else f"--scene <prepared {self.dataset} scene> "
        return FigureDataMissing(f"{what} in {self.runs_dir}/ (dataset {self.dataset}): "
                                 f"run `moegs-bench run {scene}{command}{runs}`{where}")

    def note(self, metric: str) -> str | None:
        """A stored note on `metric` (why it is missing), if any run has one."""
        hit = self.notes[self.notes["metric"] == metric] if len(self.notes) else self.notes
        return str(hit["note"].iloc[0]) if len(hit) else None

    # -- the prepared scene, for ground truth --------------------------------------------------
    def scene_root(self, scene: str) -> Path | None:
        """The prepared scene the runs of `scene` were made from, if it is kept in the store
        (<runs>/scenes/, where `moegs-bench run` generates synthetic scenes) and unchanged:
        its fingerprint reproduces a run's content key. None otherwise."""
        if scene not in self._scenes:
            self._scenes[scene] = self._find_scene(scene)
        return self._scenes[scene]

    def _find_scene(self, scene: str) -> Path | None:
        folder = self.runs_dir / SCENES_DIR
        if not folder.is_dir():
            return None
        records = []
        for run_dir in self.runs[self.runs["scene"] == scene]["run_dir"]:
            try:
                records.append(json.loads((Path(run_dir) / CONFIG_FILE).read_text()))
            except (OSError, ValueError):
                continue
        for path in sorted(folder.rglob(SCENE_FILE)):
            try:
                meta = json.loads(path.read_text())
                if meta.get("dataset") != self.dataset or meta.get("name") != scene:
                    continue
                fp = scene_fingerprint(path.parent)
            except (OSError, ValueError, MoegsError):
                continue  # an unreadable or incomplete scene is not the one the runs used
            if any(_key_matches(rec, fp) for rec in records):
                return path.parent
        return None

    def ground_truth(self, scene: str, camera: str, frame: int, size: tuple[int, int]) -> np.ndarray | None:
        """The ground-truth image of a view as uint8 [H,W,3] at `size` (W, H) of the renders,
        or None when the prepared scene is not in the store."""
        root = self.scene_root(scene)
        if root is None:
            return None
        try:
            image = read_image(read_scene(root, check_files=False).image_path(camera, int(frame)))
        except (KeyError, MoegsError, OSError):
            return None
        if (image.shape[1], image.shape[0]) != tuple(size):
            from PIL import Image

            image = np.asarray(Image.fromarray(image).resize(tuple(size), Image.BILINEAR))
        return image


def _key_matches(record: dict, scene_fp: str) -> bool:
    """Whether a run's stored key is its config's key on this scene (with the code fingerprint
    the record says its key covers: `key_code`)."""
    try:
        code = key_code(record)
        return content_key(record["config"], scene_fp, code) == record.get("key")
    except (KeyError, TypeError, MoegsError):
        return False


def open_store(runs_dir: str | Path, dataset: str | None = None) -> StoreView:
    """The rows of one dataset of the store. ConfigError for a missing or empty store, a
    dataset without runs, or several datasets and none named."""
    runs_dir = Path(runs_dir)
    if not runs_dir.is_dir():
        raise ConfigError(f"--runs {runs_dir}: no such run store (run `moegs-bench run` first)")
    df = results(runs_dir)
    if df.empty:
        raise ConfigError(f"--runs {runs_dir}: no completed runs")
    present = sorted(df["dataset"].astype(str).unique())
    if dataset is None:
        if len(present) > 1:
            raise ConfigError(f"--dataset: the store holds several datasets ({', '.join(present)}); name one")
        dataset = present[0]
    if dataset not in present:
        raise ConfigError(f"--dataset {dataset}: no runs of that dataset in {runs_dir} "
                          f"(present: {', '.join(present)})")
    nt = notes(runs_dir)
    rows = labelled(df[df["dataset"] == dataset])
    experts = set(available_experts())
    # an expert run is named by its expert label (`stg`, `stg@tiny`), as in a mixture's variant
    rows["label"] = [expert_label(m, v) if m in experts else lab
                     for m, v, lab in zip(rows["method"], rows["variant"], rows["label"], strict=True)]
    return StoreView(runs_dir, dataset, rows, nt[nt["dataset"] == dataset] if len(nt) else nt)


def expert_label(method: str, variant: str) -> str:
    """The expert label of a stage-1 run: `stg` (variant default) or `stg@tiny` (variant tiny)."""
    return method if variant == "default" else f"{method}@{variant}"


def renders_of(run_dir: Path, stem: str, folder: str = RENDERS) -> Path | None:
    """<run>/<folder>/<stem> if saved."""
    path = Path(run_dir) / folder / stem
    return path if path.is_file() else None


__all__ = ["FigureDataMissing", "StoreView", "expert_label", "open_store", "view_stem", "read_png", "renders_of", "SCENES_DIR"]
