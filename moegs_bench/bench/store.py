"""The run store (docs/results.md): every run is a directory, every result a tidy row.

    <root>/<dataset>/<scene>/<method>/<variant>/seed<k>/
        config.json      config, content key, seed, code version, created time, host, command
        timings.json     phase -> seconds
        per_image.csv    one row per test image: camera, frame, metric columns
        summary.json     {"metrics": {name: value}, "notes": {name: text}}
        checkpoints/     model files (`Run.checkpoint_path`)
        DONE             written last: the run is complete
        CLAIM            while a worker runs it (`RunStore.claim`; claims.py)
        analysis/<name>.json  analyses of the completed run (MDC, trajectories, ...): their
                         settings and metrics, reported as metrics of the run

A run is reused only when it is complete, readable and its stored content key equals the key
of the requested run (`content_key` over config + data fingerprint + the fingerprint of the code
that can change its numbers: `code_keys`). Workers sharing a store take a run's claim
(`RunStore.claim`: a CLAIM file in its folder) around running it, so none runs it twice.
`results(root)` scans completed runs into one tidy table: one row per (run, metric); a run
whose files cannot be read back is left out with a `StateWarning` naming it.
"""

from __future__ import annotations

import csv
import dataclasses
import datetime as _dt
import hashlib
import io
import json
import math
import os
import platform
import shlex
import shutil
import subprocess
import sys
import warnings
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from .. import __version__
from ..data.scene import SCENE_FILE, read_scene
from ..errors import ConfigError, MoegsError, SceneFormatError, StateWarning
from ..io import atomic_write_bytes, atomic_write_json, atomic_write_text, torch_file_problem

# Claim, RunClaimed and the code fingerprints are the store's names for its callers too
from .claims import DEFAULT_TTL_S, Claim, RunClaimed, hold, read_holder, stale_reason  # noqa: F401
from .code_keys import code_fingerprint, distill_code, expert_code, router_code, run_code  # noqa: F401

CONFIG_FILE = "config.json"
TIMINGS_FILE = "timings.json"
PER_IMAGE_FILE = "per_image.csv"
SUMMARY_FILE = "summary.json"
DONE_FILE = "DONE"
CHECKPOINT_DIR = "checkpoints"
ANALYSIS_DIR = "analysis"
RESULTS_FILE = "results.csv"
NOTES_FILE = "notes.csv"
CLAIM_FILE = "CLAIM"  # in a run's folder while a worker runs it (claims.py)
TABLE_CLAIM = ".results.claim"  # in the store's root while results.csv is rebuilt

ID_COLUMNS = ["dataset", "scene", "method", "variant", "seed"]
RESULT_COLUMNS = ID_COLUMNS + ["metric", "value", "run_dir", "key", "code_version", "device", "completed_at"]
NOTE_COLUMNS = ID_COLUMNS + ["metric", "note", "run_dir"]

_PACKAGE_ROOT = Path(__file__).resolve().parents[1]
_KEY_CHARS = 16


class RunStoreError(MoegsError):
    """A file in the run store is unreadable or malformed."""


# -- code version and content keys ------------------------------------------------------------
def source_hash(package_root: Path | None = None) -> str:
    """Short sha256 (12 hex chars) over the relative paths and bytes of every package .py file."""
    root = Path(package_root) if package_root is not None else _PACKAGE_ROOT
    h = hashlib.sha256()
    for path in sorted(root.rglob("*.py")):
        rel = path.relative_to(root).as_posix()
        if "__pycache__" in rel:
            continue
        h.update(rel.encode() + b"\0")
        h.update(path.read_bytes() + b"\0")
    return h.hexdigest()[:12]


def git_commit(path: Path | None = None) -> str | None:
    """Commit of the git checkout holding `path` (default: the package), or None outside git."""
    cwd = Path(path) if path is not None else _PACKAGE_ROOT
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short=12", "HEAD"],
            cwd=cwd,
            capture_output=True,
            text=True,
            timeout=5,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    commit = out.stdout.strip()
    return commit if out.returncode == 0 and commit else None


# what can change a run's numbers, relative to the checkout: uncommitted changes here make
# the run's code version `.dirty` (reports/ and docs/ are written by runs and do not count)
CODE_PATHS = ("moegs_bench", "benchmarks", "pyproject.toml")
DIRTY = ".dirty"


def git_dirty(path: Path | None = None) -> bool | None:
    """Whether the git checkout holding `path` (default: the package) has uncommitted changes
    (tracked or untracked, not ignored) in CODE_PATHS; None outside git."""
    cwd = Path(path) if path is not None else _PACKAGE_ROOT
    try:
        top = subprocess.run(["git", "rev-parse", "--show-toplevel"], cwd=cwd, capture_output=True, text=True,
                             timeout=5, check=False)
        if top.returncode != 0:
            return None
        out = subprocess.run(["git", "status", "--porcelain", "--", *CODE_PATHS], cwd=top.stdout.strip(),
                             capture_output=True, text=True, timeout=10, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    return bool(out.stdout.strip()) if out.returncode == 0 else None


def code_version(package_root: Path | None = None) -> str:
    """Package version + source hash, plus `.git.<commit>` when the package is in a git checkout
    and `.dirty` when that checkout has uncommitted changes to the code (CODE_PATHS).

    Recorded in every run for provenance; keys use the fingerprint of the code a run goes
    through (`code_keys`), so that a commit touching only docs, tests, tables or other experts
    does not invalidate trained runs.
    """
    version = f"{__version__}+src.{source_hash(package_root)}"
    commit = git_commit(package_root)
    if not commit:
        return version
    return f"{version}.git.{commit}" + (DIRTY if git_dirty(package_root) else "")


def is_dirty(version: str | None) -> bool:
    """Whether a stored code version was recorded from uncommitted code."""
    return isinstance(version, str) and version.endswith(DIRTY)


def _jsonable(obj: Any) -> Any:
    """json.dumps fallback for the values configs hold: dataclasses, paths, numpy, sets."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return dataclasses.asdict(obj)
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, (set, frozenset)):
        return sorted(obj, key=repr)
    raise TypeError(f"value of type {type(obj).__name__} is not JSON-serialisable: {obj!r}")


def canonical_json(obj: Any, sort_keys: bool = True) -> str:
    """Deterministic JSON: sorted keys, no whitespace, the `_jsonable` conversions."""
    try:
        return json.dumps(obj, sort_keys=sort_keys, separators=(",", ":"), default=_jsonable)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"config cannot be stored as JSON: {exc}") from None


def content_key(config: Mapping[str, Any], data_fingerprint: str, code: str) -> str:
    """16 hex chars of sha256 over canonical JSON of {config, data, code}."""
    payload = canonical_json({"config": config, "data": data_fingerprint, "code": code})
    return hashlib.sha256(payload.encode()).hexdigest()[:_KEY_CHARS]


def _listed_files(scene_json: dict) -> list[str]:
    """Relative paths of every file scene.json lists: images, point clouds, ground truth."""
    rels: list[str] = []
    for paths in scene_json.get("images", {}).values():
        rels += [p for p in paths if p is not None]
    points = scene_json.get("points") or {}
    if points.get("merged"):
        rels.append(points["merged"])
    rels += [p for p in (points.get("frames") or {}).values() if p]
    gt = scene_json.get("gt") or {}
    for kind in ("depth", "labels"):
        for paths in (gt.get(kind) or {}).values():
            rels += [p for p in paths if p is not None]
    if gt.get("trajectories"):
        rels.append(gt["trajectories"])
    return sorted(set(rels))


def scene_fingerprint(scene_root: str | Path) -> str:
    """16 hex chars of sha256 over scene.json bytes and (relative path, size) of each listed file.

    Files are not decoded (fast); a re-prepared scene with other images almost always differs in
    size. Raises SceneFormatError for a missing or malformed scene or a missing listed file.
    """
    root = Path(scene_root)
    read_scene(root, check_files=False)  # one clear error for a malformed scene.json
    raw = (root / SCENE_FILE).read_bytes()
    h = hashlib.sha256(raw + b"\0")
    for rel in _listed_files(json.loads(raw)):
        try:
            size = (root / rel).stat().st_size
        except FileNotFoundError:
            raise SceneFormatError(
                root / rel, None, f"file is missing (listed in {SCENE_FILE})"
            ) from None
        h.update(f"{rel}\0{size}\0".encode())
    return h.hexdigest()[:_KEY_CHARS]


def host_info() -> dict[str, str]:
    """Python, platform, torch version and device name (best effort; never raises)."""
    info = {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "hostname": platform.node(),
    }
    try:
        import torch

        info["torch"] = torch.__version__
        if torch.cuda.is_available():
            info["device"] = torch.cuda.get_device_name(0)
        else:
            info["device"] = f"cpu ({platform.processor() or platform.machine()})"
    except Exception as exc:  # a broken torch install must not stop a run from being recorded
        info["torch"] = f"unavailable: {type(exc).__name__}"
        info["device"] = f"cpu ({platform.processor() or platform.machine()})"
    return info


def command_line(argv: Sequence[str] | None = None) -> str:
    """The command that started this process (default `sys.argv`) as one shell-quoted line, the
    program by its name (`moegs-bench run ...`; `python -m moegs_bench ...` for the module)."""
    args = [str(a) for a in (sys.argv if argv is None else argv)] or [""]
    prog = Path(args[0])
    head = ["python", "-m", prog.parent.name] if prog.name == "__main__.py" else [prog.name]
    return shlex.join(head + args[1:])


def _now() -> str:
    return _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds")


# -- run identity ------------------------------------------------------------------------------
def _check_component(field: str, value: str) -> None:
    bad = (
        not value
        or value in (".", "..")
        or value.startswith(".")
        or any(c in value for c in "/\\\0")
    )
    if bad:
        raise ConfigError(
            f"run {field} {value!r} cannot name a directory (empty, hidden or has '/')"
        )


@dataclass(frozen=True, order=True)
class RunId:
    """Identity of one run; its directory is `<dataset>/<scene>/<method>/<variant>/seed<k>`."""

    dataset: str
    scene: str
    method: str
    variant: str = "default"
    seed: int = 0

    def __post_init__(self) -> None:
        for field in ("dataset", "scene", "method", "variant"):
            _check_component(field, str(getattr(self, field)))
        if (
            not isinstance(self.seed, (int, np.integer))
            or isinstance(self.seed, bool)
            or self.seed < 0
        ):
            raise ConfigError(f"run seed must be a non-negative integer, got {self.seed!r}")

    @property
    def relpath(self) -> Path:
        return Path(self.dataset, self.scene, self.method, self.variant, f"seed{int(self.seed)}")

    def as_dict(self) -> dict[str, Any]:
        return {
            "dataset": self.dataset,
            "scene": self.scene,
            "method": self.method,
            "variant": self.variant,
            "seed": int(self.seed),
        }

    @classmethod
    def from_relpath(cls, rel: Path) -> RunId:
        parts = Path(rel).parts
        if len(parts) != 5 or not parts[4].startswith("seed") or not parts[4][4:].isdigit():
            raise RunStoreError(
                f"{rel}: not a run directory (<dataset>/<scene>/<method>/<variant>/seed<k>)"
            )
        return cls(parts[0], parts[1], parts[2], parts[3], int(parts[4][4:]))


# -- one run -----------------------------------------------------------------------------------
def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise RunStoreError(f"{path}: file is missing") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise RunStoreError(f"{path}: unreadable JSON ({exc})") from None


def _finite(name: str, value: Any, path_hint: str) -> float:
    try:
        out = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{path_hint}: {name} must be a number, got {value!r}") from None
    if not math.isfinite(out):
        raise ValueError(f"{path_hint}: {name} is {out}; leave it out and explain why in notes")
    return out


@dataclass(frozen=True)
class Run:
    """One run directory. Every write is atomic; `complete()` writes the DONE marker last."""

    dir: Path
    run_id: RunId

    @property
    def is_complete(self) -> bool:
        return (self.dir / DONE_FILE).is_file()

    def checkpoint_path(self, name: str) -> Path:
        """Path for a model file `checkpoints/<name>` (parent folders created)."""
        rel = Path(name)
        if not name or rel.is_absolute() or ".." in rel.parts:
            raise ValueError(f"checkpoint name {name!r} must be a relative path inside the run")
        path = self.dir / CHECKPOINT_DIR / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        return path

    def save_timings(self, timings: Mapping[str, float]) -> Path:
        """timings.json: phase -> seconds (finite, non-negative)."""
        out = {}
        for phase, sec in timings.items():
            out[str(phase)] = _finite(f"phase {phase!r}", sec, TIMINGS_FILE)
            if out[str(phase)] < 0:
                raise ValueError(f"{TIMINGS_FILE}: phase {phase!r} has negative time {sec}")
        return atomic_write_json(self.dir / TIMINGS_FILE, out)

    def save_per_image(self, rows: Sequence[Mapping[str, Any]]) -> Path:
        """per_image.csv: one row per test image; `camera` and `frame` first, then metric columns
        in order of first appearance (a value missing from a row is left empty)."""
        columns = ["camera", "frame"]
        for i, row in enumerate(rows):
            if "camera" not in row or "frame" not in row:
                raise ValueError(f"{PER_IMAGE_FILE}: row {i} lacks 'camera' or 'frame'")
            columns += [k for k in row if k not in columns]
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=columns, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
        return atomic_write_text(self.dir / PER_IMAGE_FILE, buf.getvalue())

    def save_summary(
        self, metrics: Mapping[str, float], notes: Mapping[str, str] | None = None
    ) -> Path:
        """summary.json: metrics (finite numbers, e.g. psnr, ssim, num_gaussians) and notes
        (metric -> text, e.g. "lpips": "unavailable: <reason>")."""
        clean = {str(k): _finite(f"metric {k!r}", v, SUMMARY_FILE) for k, v in metrics.items()}
        text = {str(k): str(v) for k, v in (notes or {}).items()}
        return atomic_write_json(self.dir / SUMMARY_FILE, {"metrics": clean, "notes": text})

    def complete(self) -> Path:
        """Mark the run complete (DONE holds the completion time). Needs summary.json."""
        if not (self.dir / SUMMARY_FILE).is_file():
            raise ValueError(f"{self.dir}: cannot complete a run without {SUMMARY_FILE}")
        return atomic_write_text(self.dir / DONE_FILE, _now() + "\n")

    def completed_at(self) -> str | None:
        try:
            return (self.dir / DONE_FILE).read_text().strip()
        except FileNotFoundError:  # not complete, or begun again since it was listed
            return None

    def load_config(self) -> dict[str, Any]:
        return _read_json(self.dir / CONFIG_FILE)

    def load_timings(self) -> dict[str, float]:
        """phase -> seconds ({} when the run saved no timings); RunStoreError if malformed."""
        path = self.dir / TIMINGS_FILE
        if not path.is_file():
            return {}
        obj = _read_json(path)
        try:
            return {str(k): float(v) for k, v in obj.items()}
        except (AttributeError, TypeError, ValueError):
            raise RunStoreError(f"{path}: expected an object of phase -> seconds") from None

    def load_summary(self) -> dict[str, dict]:
        """{"metrics": {name: float}, "notes": {name: str}}; RunStoreError if malformed."""
        path = self.dir / SUMMARY_FILE
        obj = _read_json(path)
        if not isinstance(obj, dict) or not isinstance(obj.get("metrics"), dict):
            raise RunStoreError(f"{path}: metrics: expected an object")
        try:
            metrics = {str(k): float(v) for k, v in obj["metrics"].items()}
        except (TypeError, ValueError):
            raise RunStoreError(f"{path}: metrics: values must be numbers") from None
        return {
            "metrics": metrics,
            "notes": {str(k): str(v) for k, v in (obj.get("notes") or {}).items()},
        }

    def load_per_image(self) -> pd.DataFrame:
        return pd.read_csv(self.dir / PER_IMAGE_FILE)

    def problem(self) -> str | None:
        """Why this run's record cannot be read back (config.json, summary.json or
        timings.json missing or malformed), or None when it can."""
        try:
            config = self.load_config()
            if not isinstance(config, dict) or not isinstance(config.get("key"), str):
                raise RunStoreError(f"{self.dir / CONFIG_FILE}: no content key")
            self.load_summary()
            self.load_timings()
        except RunStoreError as exc:
            return str(exc)
        return None

    def save_analysis(self, name: str, metrics: Mapping[str, float], settings: Mapping[str, Any],
                      notes: Mapping[str, str] | None = None) -> Path:
        """analysis/<name>.json: what an analysis of this completed run measured (finite
        metrics, reported with the run's own), the settings it used, notes on what is missing."""
        _check_component("analysis", name)
        where = f"{ANALYSIS_DIR}/{name}.json"
        clean = {str(k): _finite(f"metric {k!r}", v, where) for k, v in metrics.items()}
        record = {"settings": json.loads(canonical_json(settings)), "metrics": clean,
                  "notes": {str(k): str(v) for k, v in (notes or {}).items()}}
        return atomic_write_json(self.dir / ANALYSIS_DIR / f"{name}.json", record)

    def load_analysis(self, name: str, settings: Mapping[str, Any] | None = None) -> dict | None:
        """The stored analysis `name` ({"settings", "metrics", "notes"}), or None when absent or
        (with `settings`) made with other settings."""
        path = self.dir / ANALYSIS_DIR / f"{name}.json"
        if not path.is_file():
            return None
        record = _read_analysis(path)
        if record is None:
            return None  # unreadable: measured again, and rewritten
        if settings is not None and record.get("settings") != json.loads(canonical_json(settings)):
            return None
        return record

    def analyses(self) -> dict[str, dict]:
        """Every readable stored analysis of this run: name -> record (an unreadable one is
        left out with a StateWarning)."""
        records = {p.stem: _read_analysis(p) for p in sorted((self.dir / ANALYSIS_DIR).glob("*.json"))}
        return {name: record for name, record in records.items() if record is not None}


def _read_analysis(path: Path) -> dict | None:
    """An analysis record with finite numeric metrics, or None (and a StateWarning) if not."""
    try:
        record = _read_json(path)
        if not isinstance(record, dict) or not all(isinstance(record.get(k, {}), dict) for k in ("metrics", "notes")):
            raise RunStoreError(f"{path}: expected an object with metrics and notes")
        for name, value in record.get("metrics", {}).items():
            _finite(f"metric {name!r}", value, str(path))
    except (RunStoreError, ValueError) as exc:
        warnings.warn(StateWarning(f"analysis left out, measured again when asked for: {exc}"), stacklevel=3)
        return None
    return record


# -- the store ---------------------------------------------------------------------------------
class RunStore:
    """Run directories under `root`; `find` reuses a completed run with the same content key.
    claim_ttl_s, claim_wait_s: defaults of `claim` (how long a silent holder keeps a run; how
    long to wait for one, None: until it finishes)."""

    def __init__(self, root: str | Path, *, claim_ttl_s: float = DEFAULT_TTL_S,
                 claim_wait_s: float | None = None):
        self.root = Path(root)
        self.claim_ttl_s, self.claim_wait_s = claim_ttl_s, claim_wait_s
        for folder in (self.root, *self.root.parents):  # the nearest existing one must be a folder
            if folder.exists():
                if not folder.is_dir():
                    raise RunStoreError(f"{self.root}: cannot hold runs, {folder} is not a folder")
                break

    def run_dir(self, run_id: RunId) -> Path:
        return self.root / run_id.relpath

    def stored_key(self, run_id: RunId) -> str | None:
        """The content key in the run's config.json, or None if absent or unreadable."""
        try:
            key = _read_json(self.run_dir(run_id) / CONFIG_FILE).get("key")
        except (RunStoreError, AttributeError):
            return None
        return key if isinstance(key, str) else None

    def state(self, run_id: RunId, key: str) -> str:
        """ "missing", "incomplete" (started, no DONE), "unreadable" (done, but its config,
        summary or timings cannot be read: `Run.problem`), "stale" (done, other key) or "done"."""
        run_dir = self.run_dir(run_id)
        if not run_dir.exists():
            return "missing"
        if not (run_dir / DONE_FILE).is_file():
            return "incomplete"
        if Run(run_dir, run_id).problem() is not None:
            return "unreadable"
        return "done" if self.stored_key(run_id) == key else "stale"

    def find(self, run_id: RunId, key: str) -> Run | None:
        """The completed run with this content key, or None (absent, unfinished, unreadable
        or stale)."""
        if self.state(run_id, key) != "done":
            return None
        return Run(self.run_dir(run_id), run_id)

    def reuse(self, run_id: RunId, key: str, checkpoints: Sequence[str] = ()) -> Run | None:
        """`find` for a caller that trains otherwise: the completed run with this key whose
        record and checkpoints (`checkpoints/<name>` for each name given) can be read back
        (`io.torch_file_problem`: checksums, unpickling). A completed run that cannot is
        announced with a StateWarning naming it and the file at fault, and None is returned:
        it is trained again (`begin` clears it)."""
        state = self.state(run_id, key)
        run = Run(self.run_dir(run_id), run_id)
        if state == "unreadable":
            problem = run.problem()
        elif state == "done":
            paths = [run.dir / CHECKPOINT_DIR / name for name in checkpoints]
            problem = next((f"{p}: {why}" for p in paths if (why := torch_file_problem(p)) is not None), None)
            if problem is None:
                return run
        else:
            return None
        warnings.warn(StateWarning(f"stored run {run.dir} cannot be read back ({problem}); running it again"),
                      stacklevel=2)
        return None

    def resume(self, run_id: RunId, key: str) -> Run | None:
        """An unfinished run with this content key (its checkpoints let training continue)."""
        if self.state(run_id, key) != "incomplete" or self.stored_key(run_id) != key:
            return None
        return Run(self.run_dir(run_id), run_id)

    def begin(
        self,
        run_id: RunId,
        key: str,
        config: Mapping[str, Any],
        host: Mapping[str, str] | None = None,
        *,
        code: str | None = None,
    ) -> Run:
        """Start a fresh run: clear its directory (but its claim) and write config.json.
        code: the code fingerprint the key covers, recorded so that the key can be checked
        again from the record (`key_code`)."""
        run_dir = self.run_dir(run_id)
        # drop DONE first: an interrupted clear must never leave a "complete" partial run
        (run_dir / DONE_FILE).unlink(missing_ok=True)
        if run_dir.exists():
            for child in run_dir.iterdir():
                if child.name.startswith((CLAIM_FILE, f".{CLAIM_FILE}.")):
                    continue  # the claim of the worker beginning it (and its heartbeat's temp file)
                shutil.rmtree(child) if child.is_dir() and not child.is_symlink() else child.unlink()
        run_dir.mkdir(parents=True, exist_ok=True)
        record = {
            "run": run_id.as_dict(),
            "key": key,
            **({"code": code} if code is not None else {}),
            "seed": int(run_id.seed),
            "code_version": code_version(),
            "created_at": _now(),
            "host": dict(host) if host is not None else host_info(),
            "command": command_line(),
            "config": json.loads(canonical_json(config, sort_keys=False)),
        }
        atomic_write_json(run_dir / CONFIG_FILE, record)
        return Run(run_dir, run_id)

    def claim(self, run_id: RunId, key: str, *, ttl_s: float | None = None,
              wait_s: float | None | str = "store", poll_s: float | None = None):
        """Context manager: hold the run's claim (`<run>/CLAIM`) while running it, so that no
        other worker sharing the store runs it meanwhile; yields a `claims.Claim`. A claim
        held by a live worker is waited for (wait_s seconds; default the store's
        `claim_wait_s`, None: until released), then `RunClaimed` names the run and its holder
        (host, pid, since). A stale one (dead pid on this host, heartbeat older than its ttl)
        is taken over. After entering, check `reuse` again: the holder may have finished it."""
        ttl = self.claim_ttl_s if ttl_s is None else ttl_s
        return hold(self.run_dir(run_id) / CLAIM_FILE, f"run {run_id.relpath.as_posix()}", key=key, ttl_s=ttl,
                    wait_s=self.claim_wait_s if wait_s == "store" else wait_s,
                    poll_s=min(1.0, ttl / 10) if poll_s is None else poll_s, remove_empty_folder=True)

    def holder(self, run_id: RunId) -> dict[str, Any] | None:
        """The live claim's holder (host, pid, since, key, heartbeat) of a run being run by a
        worker now; None when unclaimed or the claim is stale."""
        current = read_holder(self.run_dir(run_id) / CLAIM_FILE)
        if current is None or stale_reason(current, self.claim_ttl_s) is not None:
            return None
        return current

    def completed_runs(self) -> Iterator[Run]:
        """Every complete run under root, in path order (a folder that cannot name a run is
        left out with a StateWarning)."""
        for done in sorted(self.root.glob(f"*/*/*/*/seed*/{DONE_FILE}")):
            run_dir = done.parent
            try:
                run_id = RunId.from_relpath(run_dir.relative_to(self.root))
            except MoegsError as exc:
                warnings.warn(StateWarning(f"skipped {run_dir}: {exc}"), stacklevel=2)
                continue
            yield Run(run_dir, run_id)


def key_code(record: Mapping[str, Any]) -> str:
    """The code fingerprint a stored run's key covers (config.json `code`); for a run stored
    before it was recorded, its code version without the git suffix (whole-package keys)."""
    code = record.get("code")
    return code if isinstance(code, str) else str(record.get("code_version", "")).partition(".git.")[0]


# -- tidy results ------------------------------------------------------------------------------
def _timing_metric(phase: str) -> str:
    return phase if phase.endswith("_seconds") else f"{phase}_seconds"


def _run_rows(run: Run) -> tuple[list[dict], list[dict]]:
    config = run.load_config()
    if not isinstance(config, dict):
        raise RunStoreError(f"{run.dir / CONFIG_FILE}: expected an object")
    summary = run.load_summary()
    base = {**run.run_id.as_dict(), "run_dir": str(run.dir)}
    host = config.get("host") if isinstance(config.get("host"), dict) else {}
    extra = {
        "key": config.get("key"),
        "code_version": config.get("code_version"),
        "device": host.get("device"),
        "completed_at": run.completed_at(),
    }
    values = dict(summary["metrics"])
    notes_of = dict(summary["notes"])
    for phase, sec in run.load_timings().items():
        values.setdefault(_timing_metric(phase), sec)
    for record in run.analyses().values():  # an analysis' metrics are the run's too
        for m, v in (record.get("metrics") or {}).items():
            values.setdefault(m, float(v))
        for m, n in (record.get("notes") or {}).items():
            notes_of.setdefault(m, str(n))
    rows = [{**base, "metric": m, "value": v, **extra} for m, v in values.items()]
    notes = [{**base, "metric": m, "note": n} for m, n in notes_of.items()]
    return rows, notes


def _frame(rows: list[dict], columns: list[str]) -> pd.DataFrame:
    df = pd.DataFrame(rows, columns=columns)
    df["seed"] = df["seed"].astype("int64")
    if "value" in df:
        df["value"] = df["value"].astype("float64")
    return df.sort_values(ID_COLUMNS + ["metric"], kind="stable").reset_index(drop=True)


def _readable_rows(root: str | Path) -> Iterator[tuple[list[dict], list[dict]]]:
    """(result rows, note rows) of every completed run that can be read back; each other one
    is skipped with a StateWarning naming it and the file at fault."""
    for run in RunStore(root).completed_runs():
        try:
            yield _run_rows(run)
        except RunStoreError as exc:
            warnings.warn(StateWarning(f"skipped run {run.dir}: {exc}"), stacklevel=3)


def results(root: str | Path) -> pd.DataFrame:
    """The tidy table of every readable completed run: columns `RESULT_COLUMNS`, one row per
    (run, metric); timings appear as `<phase>_seconds` metrics."""
    rows: list[dict] = []
    for run_rows, _ in _readable_rows(root):
        rows += run_rows
    return _frame(rows, RESULT_COLUMNS)


def notes(root: str | Path) -> pd.DataFrame:
    """Notes of every readable completed run (why a metric is missing): columns `NOTE_COLUMNS`."""
    rows: list[dict] = []
    for _, note_rows in _readable_rows(root):
        rows += note_rows
    return _frame(rows, NOTE_COLUMNS)


def write_results_table(root: str | Path, *, wait_s: float | None = 600.0) -> Path:
    """Write `root/results.csv` (and `notes.csv`; `results.parquet` if pyarrow is installed)
    from the completed runs. Each file is replaced whole (temporary file, then rename), and
    rebuilds take turns (`.results.claim`, waited for up to wait_s seconds), so the last
    rebuild to finish scanned the store last: a run completed before it began is in it."""
    root = Path(root)
    with hold(root / TABLE_CLAIM, f"results table {root / RESULTS_FILE}", ttl_s=DEFAULT_TTL_S, wait_s=wait_s,
              poll_s=0.05):
        rows: list[dict] = []
        note_rows: list[dict] = []
        for run_rows, run_notes in _readable_rows(root):  # one scan for both tables
            rows += run_rows
            note_rows += run_notes
        df = _frame(rows, RESULT_COLUMNS)
        path = atomic_write_text(root / RESULTS_FILE, df.to_csv(index=False))
        atomic_write_text(root / NOTES_FILE, _frame(note_rows, NOTE_COLUMNS).to_csv(index=False))
        try:
            import pyarrow  # noqa: F401
        except ImportError:
            return path
        buf = io.BytesIO()
        df.to_parquet(buf, index=False)
        atomic_write_bytes(root / "results.parquet", buf.getvalue())
        return path


def read_results_table(root: str | Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(results, notes) from `root/results.csv` and `root/notes.csv` (empty notes if absent)."""
    root = Path(root)
    path = root / RESULTS_FILE
    if not path.is_file():
        raise RunStoreError(f"{path}: no results table (run a benchmark or write it first)")
    damaged = "the table is truncated or damaged; `moegs-bench run` rewrites it from the runs"
    text = path.read_text()
    if text and not text.endswith("\n"):  # written whole, it ends with a line break
        raise RunStoreError(f"{path}: last line is cut off ({damaged})")
    try:
        df = pd.read_csv(io.StringIO(text), keep_default_na=False, na_values=[""])
    except (pd.errors.ParserError, pd.errors.EmptyDataError) as exc:
        raise RunStoreError(f"{path}: unreadable CSV ({' '.join(str(exc).split())})") from None
    missing = [c for c in RESULT_COLUMNS if c not in df.columns]
    if missing:
        raise RunStoreError(f"{path}: missing columns {missing}")
    needed = df[ID_COLUMNS + ["metric", "value", "run_dir"]]
    values = pd.to_numeric(df["value"], errors="coerce")
    bad = needed.isna().any(axis=1) | values.isna()
    if bad.any():
        raise RunStoreError(f"{path}:{int(bad.to_numpy().argmax()) + 2}: incomplete row ({damaged})")
    note_path = root / NOTES_FILE
    nt = (
        pd.read_csv(note_path, keep_default_na=False)
        if note_path.is_file()
        else pd.DataFrame(columns=NOTE_COLUMNS)
    )
    return df, nt
