"""Experts trained per temporal segment (the paper's STG† on N3V: one model per 150 frames):
segment scenes, their initial points, the segmented expert and its run."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from moegs_bench.bench import harness
from moegs_bench.bench.harness import run_expert
from moegs_bench.bench.store import RunStore
from moegs_bench.data.init import InitData
from moegs_bench.data.load import load_scene
from moegs_bench.experts.registry import expert_config, get_expert
from moegs_bench.experts.segments import SegmentedExpert, load_expert, segment_ranges
from moegs_bench.experts.views import expert_view_renderer
from moegs_bench.moe.pool import ExpertPool
from moegs_bench.moe.routers import build_router, router_config

CPU = torch.device("cpu")
FAST = {"train": {"iterations": 6}, "max_init_points": 200}


@pytest.fixture(scope="module")
def data(tiny_scene_dir):
    return load_scene(tiny_scene_dir, CPU, with_gt=True)


def test_segment_ranges():
    assert segment_ranges(300, 150) == [(0, 150), (150, 300)]
    assert segment_ranges(8, 3) == [(0, 3), (3, 6), (6, 8)]
    assert segment_ranges(8, 0) == [(0, 8)] and segment_ranges(8, 8) == [(0, 8)]


def test_a_temporal_segment_is_a_scene_of_its_frames(data):
    part = data.temporal_segment(4, 8)
    f = len(data.times)
    assert torch.allclose(part.times, (data.times[4:8] - data.times[4]) / (1.0 - data.times[4]))
    assert torch.allclose(part.times, torch.arange(4) / 4.0)  # as if those frames were the whole video
    for split, views in data.splits.items():
        keep = views.frames >= 4
        sub = part.splits[split]
        assert torch.equal(sub.frames, views.frames[keep] - 4) and torch.equal(sub.cams, views.cams[keep])
        assert torch.equal(sub.images, views.images[keep])
    assert part.segment == (4, 8) and data.segment_span(4, 8) == (pytest.approx(4 / f), 1.0)


def test_segment_init_points_are_its_frames_in_its_time(data):
    merged = data.scene.load_points("merged")
    init = InitData.from_scene(data.temporal_segment(2, 6))
    pts = init.points("merged")
    keep = (merged["frame"] >= 2) & (merged["frame"] < 6)
    assert len(pts["xyz"]) == keep.sum() > 0
    assert np.array_equal(pts["frame"], merged["frame"][keep] - 2)
    t0, t1 = float(data.times[2]), float(data.times[6])
    assert np.allclose(pts["time"], (merged["time"][keep] - t0) / (t1 - t0), atol=1e-6)
    assert pts["time"].min() >= 0 and pts["time"].max() < 1
    frames = sorted(int(f) for f in data.scene.points.get("frames") or {})
    if frames:  # per-frame clouds: frame:k of the segment is frame k + start of the scene
        assert {f"frame:{f - 2}" for f in frames if 2 <= f < 6} <= init.point_sets


def test_the_segmented_expert_is_the_model_of_the_segment_at_its_local_time(data):
    cfg = expert_config("stg", "tiny", FAST)
    parts = [data.temporal_segment(s, e) for s, e in [(0, 4), (4, 8)]]
    models = [get_expert("stg").from_scene(p, cfg, torch.Generator().manual_seed(k)) for k, p in enumerate(parts)]
    expert = SegmentedExpert(models, [data.segment_span(0, 4), data.segment_span(4, 8)])
    t = float(data.times[5])
    k, local = expert.locate(t)
    assert k == 1 and float(local) == pytest.approx(0.25)
    assert expert.locate(float(data.times[3]))[0] == 0 and expert.locate(0.0)[0] == 0
    a, b = expert.gaussians_at(t), models[1].gaussians_at(torch.tensor(0.25))
    assert torch.equal(a.means, b.means) and torch.equal(a.opacities, b.opacities)
    assert expert.num_gaussians == models[0].num_gaussians + models[1].num_gaussians


def test_a_segmented_run_trains_one_model_per_segment_and_evaluates_as_one(data, tmp_path, monkeypatch):
    store = RunStore(tmp_path)
    trained = []
    real = harness.train_expert
    monkeypatch.setattr(harness, "train_expert", lambda e, d, **kw: trained.append(d.segment) or real(e, d, **kw))
    run = run_expert("static", data, store, preset="tiny", overrides=FAST, segment_frames=4)
    assert trained == [(0, 4), (4, 8)]
    assert run.metrics["segments"] == 2 and run.metrics["iterations"] == 12
    expert = load_expert(run.run.checkpoint_path("model.pt"), CPU)
    assert isinstance(expert, SegmentedExpert) and len(expert.models) == 2
    # the stored evaluation is the segment models' own renders of their frames
    views = data.splits["test"]
    i = int(torch.nonzero(views.frames == 6)[0])
    whole = expert_view_renderer(expert, data)(i)
    part = data.temporal_segment(4, 8)
    j = int(torch.nonzero((part.splits["test"].frames == 2) & (part.splits["test"].cams == views.cams[i]))[0])
    alone = expert_view_renderer(expert.models[1], part)(j)
    assert torch.allclose(whole, alone)
    # an interrupted run keeps its finished segments
    (run.run.dir / "DONE").unlink()
    trained.clear()
    again = run_expert("static", data, store, preset="tiny", overrides=FAST, segment_frames=4)
    assert trained == [] and again.metrics["psnr"] == pytest.approx(run.metrics["psnr"])
    # a mixture sees one expert
    plain = run_expert("static", data, store, preset="tiny", overrides=FAST, variant="plain")
    assert "segments" not in plain.metrics
    pool = ExpertPool([expert, load_expert(plain.run.checkpoint_path("model.pt"), CPU)], ["seg", "plain"], data)
    out = build_router("vapr", pool, router_config("vapr", "tiny"))(pool, 0, 6, 1.0)
    assert out.gates.shape[0] == 2 and torch.allclose(out.gates.sum(0), torch.ones_like(out.gates[0]))


def test_the_n3v_file_trains_stg_in_150_frame_models():
    from moegs_bench.data.datasets import dataset_segment_frames

    assert dataset_segment_frames("n3v") == {"stg": 150}
    assert dataset_segment_frames("synthetic") == {}
