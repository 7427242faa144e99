"""A wheel of the project, installed into a fresh virtual environment, finds its package data:
the dataset files (moegs_bench/datasets) and the paper's tables (moegs_bench/leaderboards)."""

from __future__ import annotations

import importlib.metadata
import importlib.util
import itertools
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BUILD_INPUTS = ("pyproject.toml", "README.md", "moegs_bench")  # all that the wheel is built from


def _version(text: str) -> tuple[int, ...]:
    """Leading numeric parts of a version string ("70.1.0rc1" -> (70, 1, 0))."""
    parts = []
    for piece in text.split("."):
        digits = "".join(itertools.takewhile(str.isdigit, piece))
        if not digits:
            break
        parts.append(int(digits))
    return tuple(parts)


def _missing_build_tool() -> str | None:
    """Why this environment cannot build and install a wheel offline (None when it can): the
    build backend (setuptools, which needs `wheel` before 70.1) or a pip with --python (22.3+)."""
    try:
        setuptools = _version(importlib.metadata.version("setuptools"))
        pip = _version(importlib.metadata.version("pip"))
    except importlib.metadata.PackageNotFoundError as exc:
        return f"{exc.name} is not installed (pip install -e '.[dev]')"
    if setuptools < (70, 1) and importlib.util.find_spec("wheel") is None:
        return "setuptools < 70.1 without the `wheel` package cannot build wheels (pip install -e '.[dev]')"
    if pip < (22, 3):
        return "pip < 22.3 has no --python option to install into another venv"
    return None


def _run(args: list[str | Path], cwd: Path) -> subprocess.CompletedProcess:
    """Run a command in `cwd` without PYTHONPATH (which could point at the checkout) or network.

    Out: the finished process (text stdout/stderr); the caller checks its return code.
    """
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(PYTHONNOUSERSITE="1", PIP_NO_INDEX="1", PIP_DISABLE_PIP_VERSION_CHECK="1")
    return subprocess.run(
        [str(a) for a in args], cwd=cwd, env=env, capture_output=True, text=True, timeout=300
    )


def _check(proc: subprocess.CompletedProcess, what: str) -> str:
    """The stdout of a process that must have succeeded; fails the test with its stderr."""
    assert proc.returncode == 0, f"{what} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout


def _source_copy(dst: Path) -> Path:
    """Copy the build inputs of the checkout to `dst` and return it.

    Building from a copy leaves no build/ or egg-info in the checkout (others use it meanwhile).
    """
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    dst.mkdir(parents=True)
    for name in BUILD_INPUTS:
        src = ROOT / name
        if src.is_dir():
            shutil.copytree(src, dst / name, ignore=ignore)
        else:
            shutil.copy2(src, dst / name)
    return dst


def _build_wheel(src: Path, out: Path) -> Path:
    """Build the wheel of the project at `src` into `out`, offline; returns the wheel's path."""
    out.mkdir(parents=True)
    _check(
        _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
              "--no-index", "-q", "-w", out, src], cwd=out),
        "pip wheel",
    )  # fmt: skip
    wheels = sorted(out.glob("moegs_bench-*.whl"))
    assert len(wheels) == 1, f"expected one wheel in {out}, found {wheels}"
    return wheels[0]


def _package_dirs() -> list[str]:
    """The current interpreter's folders of installed packages (site-packages on sys.path), not
    the checkout: the dependencies the installed wheel needs."""
    names = ("site-packages", "dist-packages")
    return list(dict.fromkeys(p for p in sys.path if p and Path(p).name in names))


def _venv_with_wheel(path: Path, wheel: Path) -> Path:
    """A fresh venv at `path` with `wheel` installed; the current environment's packages (torch,
    ...) visible behind it. Returns the venv's bin/ folder."""
    _check(_run([sys.executable, "-m", "venv", "--system-site-packages", "--without-pip", path],
                cwd=path.parent), "venv")  # fmt: skip
    bin_dir = path / "bin"  # POSIX layout (the project's CI and GPU machines are Linux)
    python = bin_dir / "python"
    # the current interpreter's pip installs into the new venv (which has no pip of its own)
    _check(
        _run([sys.executable, "-m", "pip", "--python", python, "install", "--no-deps",
              "--no-index", "--ignore-installed", "-q", wheel], cwd=path.parent),
        "pip install",
    )  # fmt: skip
    purelib = _check(
        _run([python, "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"], path.parent),
        "sysconfig",
    ).strip()
    # --system-site-packages reaches the base interpreter only; .pth lines append the current
    # environment's package folders (dependencies) after the new venv's own (the wheel first)
    (Path(purelib) / "_outer_site.pth").write_text("\n".join(_package_dirs()) + "\n")
    return bin_dir


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> tuple[Path, Path]:
    """(bin folder of a venv holding the installed wheel, a working folder outside the checkout)."""
    problem = _missing_build_tool()
    if problem is not None:
        pytest.skip(f"cannot build and install a wheel offline here: {problem}")
    base = tmp_path_factory.mktemp("install")
    wheel = _build_wheel(_source_copy(base / "src"), base / "dist")
    bin_dir = _venv_with_wheel(base / "venv", wheel)
    work = base / "work"
    work.mkdir()
    return bin_dir, work


def test_installed_wheel_is_what_gets_imported(installed):
    bin_dir, work = installed
    out = _check(_run([bin_dir / "python", "-c", "import moegs_bench; print(moegs_bench.__file__)"],
                      work), "import moegs_bench")  # fmt: skip
    imported = Path(out.strip()).resolve()
    assert imported.is_relative_to(bin_dir.parent.resolve()), imported
    assert not imported.is_relative_to(ROOT), imported


def test_installed_cli_lists_the_datasets(installed):
    bin_dir, work = installed
    out = _check(_run([bin_dir / "moegs-bench", "datasets"], work), "moegs-bench datasets")
    for name in ("hypernerf", "n3v", "synthetic", "technicolor"):
        assert name in out, out


def test_installed_cli_prints_a_paper_table(installed):
    bin_dir, work = installed
    cmd = [bin_dir / "moegs-bench", "report", "--table", "paper", "--paper-table", "1"]
    out = _check(_run(cmd, work), "moegs-bench report --table paper")
    # Table 1 (N3V PSNR): MoE-GS (N=4) averages 33.27, STG on sear_steak 33.77
    assert "moe-vapr (N=4)" in out and "33.27" in out and "33.77" in out, out
    assert "sear_steak" in out and "PSNR" in out, out
