"""Helpers for the reliability suite: run the command line the way a user does and check
that a failure is one line naming what is wrong, with a non-zero exit status.

`cli()` runs `moegs_bench.cli.main` in this process (fast: no interpreter start, torch already
imported); `cli_process()` starts `python -m moegs_bench` (for kill -9 and real OS-level faults).
"""

from __future__ import annotations

import contextlib
import io
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest


@dataclass
class Outcome:
    """Exit status and captured streams of one command."""

    code: int
    out: str
    err: str

    @property
    def error_lines(self) -> list[str]:
        return [line for line in self.err.splitlines() if line.strip()]


def cli(*args, cwd: Path | None = None) -> Outcome:
    """Run `moegs-bench ARGS` in-process through the console entry point (`cli.main`), so
    error handling, exit codes and stderr are exactly what a user sees."""
    from moegs_bench.cli import main

    out, err = io.StringIO(), io.StringIO()
    argv, old_cwd = sys.argv, os.getcwd()
    code = 0
    try:
        sys.argv = ["moegs-bench", *map(str, args)]
        if cwd is not None:
            os.chdir(cwd)
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                main()
            except SystemExit as exc:
                code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    finally:
        sys.argv = argv
        os.chdir(old_cwd)
    return Outcome(code, out.getvalue(), err.getvalue())


def cli_process(*args, cwd: Path | None = None, timeout: float = 300, env: dict | None = None
                ) -> Outcome:
    """Run `python -m moegs_bench ARGS` in a child process."""
    full_env = {**os.environ, "OMP_NUM_THREADS": "1", **(env or {})}
    res = subprocess.run([sys.executable, "-m", "moegs_bench", *map(str, args)], capture_output=True,
                         text=True, cwd=cwd, timeout=timeout, env=full_env)
    return Outcome(res.returncode, res.stdout, res.stderr)


def assert_one_line_error(outcome: Outcome, *must_contain: str) -> str:
    """The command failed (exit != 0) with exactly one non-empty stderr line, no traceback,
    containing every string in `must_contain`; returns that line."""
    assert outcome.code != 0, f"expected a failure, got exit 0; stdout:\n{outcome.out}"
    lines = outcome.error_lines
    assert "Traceback" not in outcome.err, outcome.err
    assert len(lines) == 1, f"expected one error line, got {len(lines)}:\n{outcome.err}"
    for text in must_contain:
        assert text in lines[0], f"{text!r} not in error line: {lines[0]!r}"
    return lines[0]


@pytest.fixture
def run_cli():
    return cli


def run_status(outcome: Outcome, method: str) -> str:
    """'trained' or 'reused': the `run` column of `method`'s row in the tables `run` prints
    (the experts table: the one whose rows end with that column)."""
    rows = [line for line in outcome.out.splitlines() if line.startswith(f"| {method} ")
            and line.rstrip(" |").rsplit("|", 1)[1].strip() in ("trained", "reused")]
    assert len(rows) == 1, f"expected one row of {method}:\n{outcome.out}"
    return rows[0].rstrip(" |").rsplit("|", 1)[1].strip()
