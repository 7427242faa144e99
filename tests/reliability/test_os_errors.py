"""Operating-system errors: a file where a folder is expected, a folder nobody may write, a full
disk. Each is one line naming the path (or the option) and the cause, exit status 2, and
leaves nothing that a later run or report takes as valid."""

from __future__ import annotations

import errno
import os
import tempfile
from pathlib import Path

import pytest

from moegs_bench.bench.store import DONE_FILE, read_results_table, results

from .conftest import assert_one_line_error, cli

pytestmark = pytest.mark.usefixtures("one_thread")

RUN = ["--experts", "static", "--set", "train.iterations=2"]


def no_run_is_complete(runs: Path) -> None:
    assert not list(runs.rglob(DONE_FILE)) if runs.is_dir() else True


def no_temporary_files(runs: Path) -> None:
    assert [p for p in runs.rglob("*.tmp")] == [] if runs.is_dir() else True


# -- a file where a folder is expected ---------------------------------------------------------
@pytest.mark.parametrize("command, option", [
    (["run", *RUN, "--runs"], "--runs"),
    (["run", *RUN, "--data-dir"], "--data-dir"),
    (["report", "--runs"], "--runs"),
])
def test_an_option_naming_a_file_where_a_folder_is_expected(tiny_scene_dir, tmp_path, command, option):
    afile = tmp_path / "afile"
    afile.write_text("not a folder\n")
    args = command[:1] + (["--scene", tiny_scene_dir] if command[0] == "run" else []) + command[1:]
    assert_one_line_error(cli(*args, afile), option, str(afile), "is a file")
    assert afile.read_text() == "not a folder\n"


def test_prepare_out_naming_a_file(tmp_path):
    afile = tmp_path / "afile"
    afile.write_text("x")
    assert_one_line_error(cli("prepare", "synthetic", "--scene", "mixed", "--out", afile), "--out", str(afile))


def test_a_run_store_inside_a_file(tiny_scene_dir, tmp_path):
    afile = tmp_path / "afile"
    afile.write_text("x")
    line = assert_one_line_error(cli("run", "--scene", tiny_scene_dir, *RUN, "--runs", afile / "runs"),
                                 str(afile / "runs"))
    assert "is not a folder" in line or "Not a directory" in line


def test_a_synthetic_scene_folder_inside_a_file(tmp_path):
    afile = tmp_path / "afile"
    afile.write_text("x")
    line = assert_one_line_error(cli("run", "--scene", "mixed", "--size", "tiny", *RUN, "--runs", tmp_path / "runs",
                                     "--data-dir", afile / "scenes"), str(afile))
    assert "Not a directory" in line


# -- a folder nobody may write -----------------------------------------------------------------
def unwritable_store(tmp_path: Path) -> Path:
    """A run store folder this process cannot create anything in: a read-only folder, or (as
    root, whom permissions do not stop) a folder under /sys, which refuses new entries."""
    if os.geteuid() != 0:
        runs = tmp_path / "runs"
        runs.mkdir()
        runs.chmod(0o555)
        return runs
    runs = Path("/sys/moegs-bench-runs")
    try:
        runs.mkdir()
    except OSError:
        return runs
    runs.rmdir()
    pytest.skip("no folder refuses writes here")


def test_a_run_store_that_cannot_be_written(tiny_scene_dir, tmp_path):
    runs = unwritable_store(tmp_path)
    try:
        line = assert_one_line_error(cli("run", "--scene", tiny_scene_dir, *RUN, "--runs", runs), str(runs))
    finally:
        if runs.is_relative_to(tmp_path):
            runs.chmod(0o755)
    assert any(cause in line for cause in ("Permission denied", "Operation not permitted", "Read-only file system"))
    no_run_is_complete(runs) if runs.is_dir() else None


# -- a full disk -------------------------------------------------------------------------------
@pytest.fixture
def disk_full_for(monkeypatch):
    """`disk_full_for(name)`: from now on, every atomic write of a file called `name` hits a
    full disk (its temporary file is /dev/full underneath: the kernel answers ENOSPC)."""
    real = tempfile.mkstemp

    def arm(name: str) -> None:
        def mkstemp(suffix=None, prefix=None, dir=None, text=False):
            fd, tmp = real(suffix=suffix, prefix=prefix, dir=dir, text=text)
            if prefix == f".{name}.":
                os.close(fd)
                fd = os.open("/dev/full", os.O_WRONLY)
            return fd, tmp

        monkeypatch.setattr(tempfile, "mkstemp", mkstemp)

    if not os.path.exists("/dev/full"):
        pytest.skip("no /dev/full")
    yield arm
    monkeypatch.undo()


@pytest.mark.parametrize("name", ["model.pt", "summary.json", DONE_FILE, "config.json"])
def test_a_full_disk_while_storing_a_run_leaves_no_valid_looking_run(tiny_scene_dir, tmp_path, disk_full_for, name):
    runs = tmp_path / "runs"
    disk_full_for(name)
    out = cli("run", "--scene", tiny_scene_dir, *RUN, "--runs", runs)
    assert_one_line_error(out, name, os.strerror(errno.ENOSPC))
    no_run_is_complete(runs)
    no_temporary_files(runs)
    assert results(runs).empty
    assert_one_line_error(cli("report", "--runs", runs), "no completed runs")


def test_after_a_full_disk_the_next_run_completes(tiny_scene_dir, tmp_path, disk_full_for):
    runs = tmp_path / "runs"
    disk_full_for("summary.json")
    assert cli("run", "--scene", tiny_scene_dir, *RUN, "--runs", runs).code == 2
    disk_full_for("nothing-is-called-this")  # space again
    out = cli("run", "--scene", tiny_scene_dir, *RUN, "--runs", runs)
    assert out.code == 0 and out.err == "", out.err
    assert len(list(runs.rglob(DONE_FILE))) == 1 and not results(runs).empty


def test_a_full_disk_while_writing_the_results_table(tiny_scene_dir, tmp_path, disk_full_for):
    runs = tmp_path / "runs"
    disk_full_for("results.csv")
    out = cli("run", "--scene", tiny_scene_dir, *RUN, "--runs", runs)
    assert_one_line_error(out, str(runs / "results.csv"), os.strerror(errno.ENOSPC))
    assert not (runs / "results.csv").exists()  # no half table
    no_temporary_files(runs)
    assert len(results(runs)) > 0  # the run itself was stored whole: the table is rebuilt from it
    disk_full_for("nothing-is-called-this")
    assert cli("run", "--scene", tiny_scene_dir, *RUN, "--runs", runs).code == 0
    assert len(read_results_table(runs)[0]) == len(results(runs))
