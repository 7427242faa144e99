"""kill -9 at a chosen point of a real `moegs-bench` process.

`cli_process_killed(args, at="module:function", calls=N)` starts `python -c DRIVER`, which wraps
`module.function` so that its N-th call sends SIGKILL to the process itself (before the call
runs, or after it returned with `after=True`), then runs the console entry point with ARGS.
The point is reached deterministically, however fast the machine; the process dies exactly as
under `kill -9` (no exception handler, no atexit, no flush).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

from .conftest import Outcome

DRIVER = """
import importlib, os, signal, sys
module, name = sys.argv[1].split(":")
calls, after = int(sys.argv[2]), sys.argv[3] == "after"
mod = importlib.import_module(module)
original, seen = getattr(mod, name), [0]
def wrapped(*args, **kwargs):
    seen[0] += 1
    if seen[0] == calls and not after:
        os.kill(os.getpid(), signal.SIGKILL)
    out = original(*args, **kwargs)
    if seen[0] == calls and after:
        os.kill(os.getpid(), signal.SIGKILL)
    return out
setattr(mod, name, wrapped)
sys.argv = ["moegs-bench", *sys.argv[4:]]
from moegs_bench.cli import main
main()
"""


def cli_process_killed(*args, at: str, calls: int = 1, after: bool = False, cwd: Path | None = None,
                       timeout: float = 300, env: dict | None = None) -> Outcome:
    """Run `moegs-bench ARGS` in a child process that is SIGKILLed at the `calls`-th call of
    `at` ("package.module:function", the name as the caller looks it up)."""
    full_env = {**os.environ, "OMP_NUM_THREADS": "1", **(env or {})}
    cmd = [sys.executable, "-c", DRIVER, at, str(calls), "after" if after else "before", *map(str, args)]
    res = subprocess.run(cmd, capture_output=True, text=True, cwd=cwd, timeout=timeout, env=full_env)
    return Outcome(res.returncode, res.stdout, res.stderr)


def assert_killed(outcome: Outcome) -> None:
    """The child died of SIGKILL (not an exit of its own)."""
    assert outcome.code == -signal.SIGKILL, f"expected SIGKILL, got {outcome.code}:\n{outcome.err}"
