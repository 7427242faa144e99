"""Numbers that trace to commits: a run records whether its code had uncommitted changes,
tables mark such rows, and no committed report holds one."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pandas as pd

from moegs_bench.bench.store import code_version, is_dirty
from moegs_bench.report.tables import build_table

REPO = Path(__file__).resolve().parents[1]


def _git(cwd: Path, *args: str) -> None:
    subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True)


def test_code_version_says_whether_the_code_was_committed(tmp_path):
    pkg = tmp_path / "moegs_bench"
    pkg.mkdir()
    (pkg / "a.py").write_text("x = 1\n")
    (tmp_path / "reports").mkdir()
    _git(tmp_path, "init", "-q")
    _git(tmp_path, "add", "-A")
    _git(tmp_path, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "c")
    clean = code_version(pkg)
    assert ".git." in clean and not is_dirty(clean)
    (tmp_path / "reports" / "table.md").write_text("written by a run\n")  # outputs do not count
    assert not is_dirty(code_version(pkg))
    (pkg / "a.py").write_text("x = 2\n")
    assert is_dirty(code_version(pkg))
    (pkg / "a.py").write_text("x = 1\n")
    (pkg / "new.py").write_text("y = 1\n")  # an untracked module changes the code too
    assert is_dirty(code_version(pkg))


def _rows(version: str, method: str) -> list[dict]:
    return [{"dataset": "synthetic", "scene": "mixed", "method": method, "variant": "default", "seed": 0,
             "metric": m, "value": v, "run_dir": f"r/{method}", "code_version": version}
            for m, v in (("psnr", 30.0), ("ssim", 0.9))]


def test_tables_mark_rows_of_uncommitted_code():
    df = pd.DataFrame(_rows("0.1.0+src.a.git.b", "stg") + _rows("0.1.0+src.a.git.b.dirty", "ex4dgs"))
    table = build_table("overview", df, dataset="synthetic")
    assert list(table.index) == ["stg", "ex4dgs [uncommitted]"]
    assert any("uncommitted" in f and "ex4dgs" in f for f in table.attrs["footnotes"])
    clean = build_table("overview", df[df.method == "stg"], dataset="synthetic")
    assert list(clean.index) == ["stg"] and not any("uncommitted" in f for f in clean.attrs["footnotes"])


# what a run from uncommitted code leaves in a report: its code version, a marked table row,
# the tables' footnote
DIRTY_TRACES = re.compile(r"\.git\.[0-9a-f]+\.dirty|\[uncommitted\] *\||runs recorded from code with uncommitted")


def test_no_committed_report_comes_from_uncommitted_code():
    files = subprocess.run(["git", "ls-files", "reports"], cwd=REPO, capture_output=True, text=True).stdout.split()
    assert files, "reports/ has no committed files"
    bad = [f for f in files if DIRTY_TRACES.search((REPO / f).read_text(errors="replace"))]
    assert not bad, f"reports from uncommitted code: {bad}"


def test_the_report_check_sees_each_trace():
    table = build_table("overview", pd.DataFrame(_rows("0.1.0+src.a.git.b.dirty", "stg")), dataset="synthetic")
    from moegs_bench.report.tables import format_table

    text = format_table(table, "markdown")
    assert DIRTY_TRACES.search(text) and DIRTY_TRACES.search("0.1.0+src.ab12.git.45d901d0301b.dirty,")
    assert not DIRTY_TRACES.search(format_table(build_table("overview", pd.DataFrame(_rows("v.git.b", "stg")),
                                                            dataset="synthetic"), "markdown"))
