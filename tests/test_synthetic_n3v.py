"""The N3V-sized synthetic scene (`--size n3v`): its numbers, and its code path at a reduced
image size and frame count (ground truth for the test views only, unsynced atomic writes,
resuming over missing and empty files)."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch

from moegs_bench.bench.harness import default_preset
from moegs_bench.data.load import load_scene
from moegs_bench.data.synthetic import SIZES, generate_synthetic, make_rig
from moegs_bench.data.synthetic import rigs as rigs_module

pytestmark = pytest.mark.usefixtures("one_thread")


def test_n3v_size_is_the_n3v_rig():
    spec = SIZES["n3v"]
    assert (spec.width, spec.height, spec.frames) == (1352, 1014, 300)
    rig = make_rig("n3v", "n3v")
    assert len(rig.cameras) == 19 and rig.test == ["cam00"] and len(rig.train) == 18
    assert rig.num_frames == 300 and spec.gt_views == "test"


@pytest.fixture
def reduced_n3v(monkeypatch, tmp_path):
    """generate_synthetic at size "n3v" with 64x48 images and 3 frames (everything else, and
    every line of code, as the full N3V size)."""
    small = dataclasses.replace(SIZES["n3v"], width=64, height=48, frames=3, points_per_frame=300)
    monkeypatch.setitem(rigs_module.SIZES, "n3v", small)
    out = tmp_path / "n3v"
    scene = generate_synthetic(out, scene="mixed", rig="n3v", size="n3v", seed=0, device="cpu")
    return out, scene


def test_reduced_n3v_generates_with_test_ground_truth_only(reduced_n3v):
    out, scene = reduced_n3v
    assert len(scene.cameras) == 19 and len(scene.times) == 3
    assert len(list((out / "frames").rglob("*.png"))) == 19 * 3
    assert sorted(p.parent.name for p in (out / "gt" / "depth").rglob("*.npy")) == ["cam00"] * 3
    assert scene.gt["depth"]["cam05"] == [None] * 3 and scene.gt["labels"]["cam00"][2] == "gt/labels/cam00/00002.png"
    assert not list(out.rglob("*.tmp"))
    data = load_scene(out, torch.device("cpu"), with_gt=True)
    test = data.splits["test"]
    assert test.depth.shape == (3, 48, 64) and test.labels.shape == (3, 48, 64)
    assert len(data.splits["train"]) == 18 * 3
    assert data.synthetic_size == "n3v" and default_preset("stg", data) == "fast"
    assert json.loads((out / "scene.json").read_text())["meta"]["size_spec"]["gt_views"] == "test"


def test_reduced_n3v_resumes_missing_and_empty_files(reduced_n3v):
    out, _ = reduced_n3v
    before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file() and p.name != "scene.json"}
    (out / "scene.json").unlink()
    (out / "frames/cam03/00001.png").unlink()
    (out / "gt/depth/cam00/00002.npy").write_bytes(b"")  # what a power cut leaves of an unsynced write
    generate_synthetic(out, scene="mixed", rig="n3v", size="n3v", seed=0, device="cpu")
    after = {p: p.read_bytes() for p in out.rglob("*") if p.is_file() and p.name != "scene.json"}
    assert after.keys() == before.keys()
    assert all(after[p] == before[p] for p in before), "a resumed generation writes the same bytes"
    assert np.load(out / "gt/depth/cam00/00002.npy").shape == (48, 64)
