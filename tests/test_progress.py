"""Progress lines for logs and pipes (`line_progress`, and `rich_progress` off a terminal)."""

from __future__ import annotations

import io
from contextlib import redirect_stdout

from moegs_bench.progress import line_progress, rich_progress


def test_line_progress_writes_start_every_interval_and_end():
    """Catches: a log that stays silent through a long training (no line until the end), one
    line per call (a flood), a missing final line, or a wrong percentage / elapsed time."""
    now = [100.0]
    lines: list[str] = []
    report = line_progress(lines.append, every_s=30.0, clock=lambda: now[0])("stg")
    report(0, 400)
    for step in range(1, 400):
        now[0] += 0.25  # 100 s of training in 400 calls
        report(step, 400, {"loss": 0.0123})
    now[0] += 0.25
    report(400, 400)
    assert lines[0] == "stg: 0/400 (0%), 0 s"
    assert lines[-1] == "stg: 400/400 (100%), 100 s"
    assert len(lines) == 2 + 3  # start, at 30, 60 and 90 s, end
    assert lines[1] == "stg: 120/400 (30%), 30 s, loss 0.0123"


def test_tasks_have_their_own_clock():
    """Catches: one shared 'last line' time that silences a second task started meanwhile."""
    now = [0.0]
    lines: list[str] = []
    factory = line_progress(lines.append, every_s=30.0, clock=lambda: now[0])
    a, b = factory("a"), factory("b")
    a(0, 10)
    now[0] = 5.0
    b(0, 10)
    now[0] = 31.0
    a(3, 10)
    b(4, 10)
    assert lines == ["a: 0/10 (0%), 0 s", "b: 0/10 (0%), 0 s", "a: 3/10 (30%), 31 s"]


def test_rich_progress_off_a_terminal_prints_plain_lines():
    """Catches: a progress bar drawn into a log file (or nothing at all until the end)."""
    out = io.StringIO()
    with redirect_stdout(out), rich_progress() as bar:
        report = bar("ex4dgs")
        report(0, 5)
        report(5, 5)
    assert out.getvalue().splitlines() == ["ex4dgs: 0/5 (0%), 0 s", "ex4dgs: 5/5 (100%), 0 s"]
