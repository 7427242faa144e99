"""Shared fixtures: one tiny synthetic scene per test session (seconds to generate)."""

from __future__ import annotations

import shutil

import pytest

# isort: off
import moegs_bench  # noqa: F401  (before torch: it sets OpenMP's wait policy, read when torch loads)
import torch
# isort: on

torch.set_num_threads(max(1, min(2, torch.get_num_threads())))


@pytest.fixture(scope="session")
def tiny_scene_dir(tmp_path_factory):
    """A prepared `mixed` scene, n3v rig, tiny size. Treat as read-only; copy to modify."""
    from moegs_bench.data.synthetic import generate_synthetic

    out = tmp_path_factory.mktemp("scenes") / "mixed-tiny"
    generate_synthetic(out, scene="mixed", rig="n3v", size="tiny", seed=0, device="cpu")
    return out


@pytest.fixture(scope="module")
def one_thread():
    """One torch thread for a module (`pytestmark = pytest.mark.usefixtures("one_thread")`):
    the reference rasteriser's small batches run fastest single-threaded on a shared CPU."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def scene_copy(tiny_scene_dir, tmp_path):
    """A private copy of the tiny scene that a test may damage."""
    dst = tmp_path / "scene"
    shutil.copytree(tiny_scene_dir, dst)
    return dst
