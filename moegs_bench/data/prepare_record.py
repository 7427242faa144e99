"""prepare.json: what each step of one prepared scene was made from (docs/datasets.md).

    {"version": 2, "scene": {name, dataset, source, frame_range},
     "steps": {step: {"state": "started" | "done", "inputs": {name: fingerprint} | null,
                      "settings": {...}, "outputs": {...}}}}

Steps: "cameras" (camera/pose conversion), "frames/<camera>" (one camera's images), "points"
(COLMAP clouds). A step's record is "started" (with its inputs and settings) before it writes
anything and "done" only after all its outputs are written, so after a kill the record never
claims more than is on disk, and every output present was made from the recorded inputs.
A re-run compares each step's current inputs and settings with its record (`decide`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..io import atomic_write_json
from .fingerprints import changed_inputs

PREPARE_FILE = "prepare.json"
PREPARE_VERSION = 2


def _plain(value: Any) -> Any:
    """The value as it reads back from JSON (tuples -> lists), so records compare equal."""
    return json.loads(json.dumps(value))


@dataclass(frozen=True)
class StepKey:
    """What one step depends on. inputs: name -> fingerprint (None: unknown, always redone);
    settings: the step's options (output size, frames, COLMAP settings)."""

    inputs: dict[str, dict] | None
    settings: dict

    @staticmethod
    def of(inputs: dict[str, dict] | None, settings: dict) -> StepKey:
        return StepKey(None if inputs is None else _plain(inputs), _plain(settings))


@dataclass(frozen=True)
class Decision:
    """reuse: done with these inputs; resume: started with these inputs (keep what exists,
    make the rest); redo: remove the step's outputs and make them again. reason: why."""

    action: str
    reason: str = ""


def _summary(items: list[str], limit: int = 3) -> str:
    more = f" and {len(items) - limit} more" if len(items) > limit else ""
    return ", ".join(items[:limit]) + more


def _setting_changes(old: dict, new: dict) -> list[str]:
    out = []
    for key in sorted(set(old) | set(new)):
        if old.get(key) != new.get(key):
            a, b = json.dumps(old.get(key)), json.dumps(new.get(key))
            out.append(f"{key} {a} -> {b}" if len(a) + len(b) <= 60 else key)
    return out


class StepRecords:
    """The step records of the prepared scene at `root` (prepare.json), read once."""

    def __init__(self, root: str | Path):
        self.root = Path(root)
        self.path = self.root / PREPARE_FILE
        self.steps: dict[str, dict] = {}
        self.note = "not made yet"  # why a step has no record
        self._written: Any = None  # what the file holds, so that an unchanged record is not rewritten
        if not self.path.is_file():
            return
        try:
            obj = json.loads(self.path.read_text())
            self._written = obj
        except (OSError, UnicodeDecodeError, json.JSONDecodeError):
            self.note = f"{PREPARE_FILE} is unreadable"
            return
        if not isinstance(obj, dict) or obj.get("version") != PREPARE_VERSION or not isinstance(obj.get("steps"), dict):
            self.note = f"{PREPARE_FILE} has no step fingerprints (an older prepare)"
            return
        self.steps = {k: v for k, v in obj["steps"].items() if isinstance(v, dict)}

    def decide(self, name: str, key: StepKey) -> Decision:
        """What to do with step `name` given what it now depends on."""
        if key.inputs is None:
            return Decision("redo", "the reader names no input files")
        old = self.steps.get(name)
        if old is None:
            return Decision("redo", self.note)
        if old.get("settings") != key.settings:
            return Decision("redo", "settings changed: " + _summary(_setting_changes(old.get("settings") or {},
                                                                                    key.settings)))
        changes = changed_inputs(old.get("inputs"), key.inputs)
        if changes:
            return Decision("redo", _summary(changes))
        if old.get("state") == "done":
            return Decision("reuse")
        return Decision("resume", "interrupted earlier; keeping what it wrote")

    def outputs(self, name: str) -> dict:
        """The recorded outputs of a done step ({} if none)."""
        return dict(self.steps.get(name, {}).get("outputs") or {})

    def forget(self, names) -> None:
        for name in names:
            self.steps.pop(name, None)

    def start(self, name: str, key: StepKey) -> None:
        self.steps[name] = {"state": "started", "inputs": key.inputs, "settings": key.settings, "outputs": {}}

    def finish(self, name: str, key: StepKey, outputs: dict) -> None:
        self.steps[name] = {"state": "done", "inputs": key.inputs, "settings": key.settings,
                            "outputs": _plain(outputs)}

    def save(self, scene: dict) -> None:
        """Write prepare.json atomically; `scene` names what was prepared (for people)."""
        obj = _plain({"version": PREPARE_VERSION, "scene": scene, "steps": dict(sorted(self.steps.items()))})
        if obj != self._written:
            atomic_write_json(self.path, obj)
            self._written = obj


__all__ = ["PREPARE_FILE", "PREPARE_VERSION", "StepKey", "Decision", "StepRecords"]
