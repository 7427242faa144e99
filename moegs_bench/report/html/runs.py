"""The runs behind the report: one `RunRecord` per completed run (identity, content key, code
version, device, times, command), and `RunLinks`, which finds the runs a table cell comes from
and names their entry on the runs page."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from ...bench.store import RunId, RunStore
from ..tables import baseline_titles, router_titles, run_label
from ..tables.registry import UNCOMMITTED
from .markup import slug

RUNS_PAGE = "runs.html"
WHO_LEVELS = ("method", "router", "")  # header levels naming a method (row or column)
WHERE_LEVELS = ("scene",)  # header levels naming a scene ("Average" names none)
_RUN_SUFFIX = re.compile(r"^(?P<label>.*) \[(?P<scene>[^\]]+), seed (?P<seed>\d+)\]$")  # runs tables
_PAPER = re.compile(r"\(paper[,)]")  # "<label> (paper)", "<router> (paper, N3V)": published rows
_VALUE_AFTER = re.compile(r"^(?P<who>.+?) -?\d[\d.]*$")  # text cells "<method> 24.33" (winners)


@dataclass(frozen=True)
class RunRecord:
    """One completed run as the report shows it (fields None where config.json lacks them)."""

    run_id: RunId
    run_dir: Path
    key: str | None
    code_version: str | None
    device: str | None
    created_at: str | None
    completed_at: str | None
    command: str | None

    @property
    def name(self) -> str:
        """`dataset/scene/method/variant/seed<k>`: the run's id as its store path."""
        return self.run_id.relpath.as_posix()

    @property
    def label(self) -> str:
        return run_label(self.run_id.method, self.run_id.variant)

    @property
    def anchor(self) -> str:
        return "run-" + slug(self.name)

    def describe(self) -> str:
        """One line: id, code version, device (a link's tooltip)."""
        return f"{self.name} · code {self.code_version or '?'} · {self.device or '?'}"


def collect_runs(runs_dir: Path, dataset: str | None = None, among: Collection[str] | None = None
                 ) -> list[RunRecord]:
    """Every completed run under `runs_dir` (of `dataset` if given; with `among`, only runs
    whose folder, as `results` writes it, is in it), in store path order."""
    out = []
    for run in RunStore(runs_dir).completed_runs():
        if dataset is not None and run.run_id.dataset != dataset:
            continue
        if among is not None and str(run.dir) not in among:
            continue
        config = run.load_config()
        host = config.get("host") if isinstance(config.get("host"), dict) else {}
        out.append(RunRecord(run.run_id, run.dir, _text(config.get("key")), _text(config.get("code_version")),
                             _text(host.get("device")), _text(config.get("created_at")), run.completed_at(),
                             _text(config.get("command"))))
    return out


def _text(value: object) -> str | None:
    return None if value is None else str(value)


class RunLinks:
    """Which runs a table cell comes from: its row and column labels (method labels, methods,
    router and baseline titles, `[scene, seed k]` suffixes, scene columns) narrow the runs of
    the page. A cell of several runs links to a set listed on the runs page (`sets`)."""

    def __init__(self, runs: Sequence[RunRecord]):
        self.runs = list(runs)
        self.sets: dict[str, tuple[str, list[RunRecord]]] = {}  # anchor -> (what, runs)
        titles = {**router_titles(), **baseline_titles()}
        self._who: dict[str, set[tuple[str, str]]] = {}
        for r in self.runs:
            pair = (r.run_id.method, r.run_id.variant)
            names = {r.label, pair[0]}
            if pair[0] in titles:
                names |= {titles[pair[0]], f"{titles[pair[0]]} ({pair[1]})"}
            for n in names:
                self._who.setdefault(n, set()).add(pair)

    def resolve(self, labels: Iterable[tuple[str, str]], text: str, scope: Sequence[RunRecord]
                ) -> list[RunRecord] | None:
        """The runs of `scope` behind a cell: `labels` are (level name, value) of its row and
        column headers, `text` the cell itself. None for a published (paper) value."""
        picked = list(scope)
        for level, value in labels:
            value = value.replace(f" {UNCOMMITTED}", "").strip()
            if level in WHERE_LEVELS:
                picked = [r for r in picked if r.run_id.scene == value] if value in _scenes(scope) else picked
                continue
            if level not in WHO_LEVELS:
                continue
            if _PAPER.search(value):
                return None
            picked = self._narrow(picked, value)
        who = _VALUE_AFTER.match(text.strip())
        if who and who["who"] in self._who:
            picked = self._narrow(picked, who["who"])
        return picked

    def _narrow(self, picked: list[RunRecord], value: str) -> list[RunRecord]:
        suffix = _RUN_SUFFIX.match(value)
        if suffix:
            value = suffix["label"]
            picked = [r for r in picked
                      if r.run_id.scene == suffix["scene"] and r.run_id.seed == int(suffix["seed"])]
        if value in self._who:
            picked = [r for r in picked if (r.run_id.method, r.run_id.variant) in self._who[value]]
        return picked

    def target(self, runs: Sequence[RunRecord]) -> tuple[str, str]:
        """(href on the runs page, tooltip) for a cell of `runs`: the run's own entry, or a
        listed set of them."""
        if len(runs) == 1:
            return f"{RUNS_PAGE}#{runs[0].anchor}", runs[0].describe()
        names = sorted(r.name for r in runs)
        anchor = "set-" + hashlib.sha1("\n".join(names).encode()).hexdigest()[:12]
        labels = ", ".join(dict.fromkeys(r.label for r in runs))
        scenes = ", ".join(dict.fromkeys(r.run_id.scene for r in runs))
        what = f"{len(runs)} runs of {labels} ({scenes})"
        self.sets.setdefault(anchor, (what, sorted(runs, key=lambda r: r.name)))
        return f"{RUNS_PAGE}#{anchor}", what


def _scenes(scope: Sequence[RunRecord]) -> set[str]:
    return {r.run_id.scene for r in scope}
