"""Render FPS / memory rows of every method (eval/efficiency.py, bench/efficiency.py): the
measurement on CPU with the host clock, the N3V-resolution cameras, and the harness's note on CPU."""

from __future__ import annotations

import time

import pytest
import torch
from click.testing import CliRunner

from moegs_bench.bench import efficiency as bench_eff
from moegs_bench.bench import harness
from moegs_bench.bench.experiment import Experiment, run_experiment
from moegs_bench.bench.harness import run_moe
from moegs_bench.bench.store import notes, results
from moegs_bench.cli.run import run as run_command
from moegs_bench.data.load import load_scene
from moegs_bench.errors import ConfigError
from moegs_bench.eval.efficiency import (
    N3V_SIZE,
    EfficiencyConfig,
    at_resolution,
    measure_efficiency,
    tensor_bytes,
    timed_views,
)
from moegs_bench.experts.registry import expert_config, get_expert
from moegs_bench.moe import pool as pool_module
from moegs_bench.moe.pool import ExpertPool
from moegs_bench.moe.responsibility import Responsibilities
from moegs_bench.moe.routers import build_router, router_config
from moegs_bench.render.backend import render
from moegs_bench.render.gaussians import Gaussians

pytestmark = pytest.mark.usefixtures("one_thread")
CPU = torch.device("cpu")
TIMING_KEYS = {"fps", "render_ms", "fps_n3v", "render_ms_n3v"}
MULTIPASS_KEYS = {"fps_multipass", "render_ms_multipass", "fps_multipass_n3v", "render_ms_multipass_n3v"}


@pytest.fixture(scope="module")
def data(tiny_scene_dir):
    return load_scene(tiny_scene_dir, CPU, with_gt=True)


def blob(data, view: int) -> Gaussians:
    """One small Gaussian off the optical axis of the test view's camera (a quarter of the
    image to the right and below the principal point), at depth 4."""
    views = data.splits["test"]
    viewmats, Ks = data.camera_batch(views.cams[view:view + 1])
    K, w2c = Ks[0], viewmats[0]
    u, v = K[0, 2] + data.width / 4, K[1, 2] + data.height / 4
    cam = torch.stack([(u - K[0, 2]) / K[0, 0] * 4, (v - K[1, 2]) / K[1, 1] * 4, torch.tensor(4.0)])
    world = w2c[:3, :3].T @ (cam - w2c[:3, 3])
    return Gaussians(world[None], torch.tensor([[1.0, 0, 0, 0]]), torch.full((1, 3), 0.06), torch.tensor([0.9]),
                     features=torch.ones(1, 3))


def centroid(alpha):
    """Alpha-weighted pixel centre (x, y) of an [H,W] map, pixel centres at +0.5."""
    h, w = alpha.shape
    ys, xs = torch.meshgrid(torch.arange(h) + 0.5, torch.arange(w) + 0.5, indexing="ij")
    return torch.stack([(alpha * xs).sum(), (alpha * ys).sum()]) / alpha.sum()


def blob_renderer(g: Gaussians, scene, calls: list | None = None):
    views = scene.splits["test"]

    def render_view(i):
        if calls is not None:
            calls.append((scene.width, scene.height, i))
        out = render(g, *scene.camera_batch(views.cams[i:i + 1]), scene.width, scene.height)
        return out.rgb[0]

    return render_view


def test_scaled_cameras_see_the_same_point_at_the_scaled_pixel(data):
    # catches: focal lengths or the principal point left unscaled, x and y scales swapped: the
    # blob, off the optical axis, would land elsewhere in the 1352x1014 image
    g = blob(data, 0)
    n3v = at_resolution(data, *N3V_SIZE)
    assert (n3v.width, n3v.height) == N3V_SIZE == (1352, 1014)
    views = data.splits["test"]
    small = render(g, *data.camera_batch(views.cams[:1]), data.width, data.height)
    big = render(g, *n3v.camera_batch(views.cams[:1]), n3v.width, n3v.height)
    assert big.rgb.shape == (1, 1014, 1352, 3)
    sx, sy = 1352 / data.width, 1014 / data.height
    c_small, c_big = centroid(small.alpha[0, ..., 0]), centroid(big.alpha[0, ..., 0])
    torch.testing.assert_close(c_big, c_small * torch.tensor([sx, sy]), rtol=0.01, atol=0.5)
    assert c_big[0] > 1352 * 0.6 and c_big[1] > 1014 * 0.6  # really off-axis: a centred blob proves nothing
    torch.testing.assert_close(data.Ks, load_scene(data.scene, CPU, splits=()).Ks)  # the scene is left as it was


def test_oracle_ground_truth_is_resized_with_the_cameras(data):
    n3v = at_resolution(data, 96, 72, images_of="test")
    assert n3v.splits["test"].images.shape == (len(data.splits["test"]), 72, 96, 3)
    assert n3v.splits["test"].images.dtype == torch.uint8
    assert n3v.splits["train"].images is data.splits["train"].images  # other splits untouched
    assert at_resolution(data, data.width, data.height) is data


def test_measure_efficiency_on_cpu_times_both_resolutions(data):
    # the function works on CPU with the host clock; catches: the second resolution rendered
    # with the scene's cameras (image size checked), memory rows invented on CPU, wrong fps
    g = blob(data, 0)
    calls: list = []
    cfg = EfficiencyConfig(warmup=1, views=2, repeats=2)
    out = measure_efficiency(lambda scene: blob_renderer(g, scene, calls), data, config=cfg, what="one blob")
    assert set(out.metrics) == TIMING_KEYS
    for suffix in ("", "_n3v"):
        assert out.metrics[f"render_ms{suffix}"] > 0
        assert out.metrics[f"fps{suffix}"] == pytest.approx(1e3 / out.metrics[f"render_ms{suffix}"])
        assert "perf_counter" in out.notes[f"fps{suffix}"] and "one blob" in out.notes[f"fps{suffix}"]
        assert "unavailable on cpu" in out.notes[f"render_memory_mb{suffix}"]
    assert "1352x1014" in out.notes["fps_n3v"] and f"{data.width}x{data.height}" in out.notes["fps"]
    sizes = [(w, h) for w, h, _ in calls]
    # per resolution: 1 warm-up + 2 views x 2 repeats, nothing more
    assert sizes == [(data.width, data.height)] * 5 + [N3V_SIZE] * 5
    assert {i for *_, i in calls} == set(timed_views(len(data.splits["test"]), 2)) == {0, len(data.splits["test"]) - 1}


def test_render_ms_is_the_median_over_views_of_each_views_median(data):
    # per-view times 1, 10 and 100 ms: the median is 10 ms (a mean would be 37 ms); a view's
    # first call is slow (200 ms) and its median ignores it; warm-up calls are not timed
    delays = {0: 0.001, 1: 0.010, 2: 0.100}
    seen: dict[int, int] = {}
    n = len(data.splits["test"])
    index = {v: k for k, v in enumerate(timed_views(n, 3))}

    def make(scene):
        def render_view(i):
            k = index[i]
            seen[k] = seen.get(k, 0) + 1
            time.sleep(0.2 if seen[k] == 2 else delays[k])  # call 1 of view k is a warm-up
            return torch.zeros(scene.height, scene.width, 3)

        return render_view

    out = measure_efficiency(make, data, config=EfficiencyConfig(warmup=3, views=3, repeats=3, n3v_size=None))
    assert set(out.metrics) == {"fps", "render_ms"}
    assert 10.0 <= out.metrics["render_ms"] < 30.0


def test_config_is_checked():
    with pytest.raises(ConfigError, match="repeats"):
        EfficiencyConfig(repeats=0)
    with pytest.raises(ConfigError, match="n3v_size"):
        EfficiencyConfig(n3v_size=(0, 10))


def test_tensor_bytes_counts_shared_tensors_once():
    lin = torch.nn.Linear(4, 3)  # 12 weights + 3 biases, float32
    assert tensor_bytes(lin, lin.weight, None) == 15 * 4


# -- the harness -------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def pool(data):
    experts = []
    for seed, points in ((0, 60), (1, 40)):
        cfg = expert_config("static", "tiny", {"sh_degree": 0, "max_init_points": points})
        experts.append(get_expert("static").from_scene(data, cfg, torch.Generator().manual_seed(seed)))
    return ExpertPool(experts, ["a", "b"], data)


SMALL = EfficiencyConfig(warmup=1, views=2, repeats=1, n3v_size=(40, 30), on_cpu=True)


def test_every_method_kind_is_measured_at_both_sizes(pool):
    # the harness' renderers for experts, routers, baselines (oracles compare with resized ground
    # truth) and the fused model, measured on CPU when asked; catches a renderer left on the
    # scene's cameras at the second size (measure_efficiency checks the image size)
    router = build_router("vapr", pool, router_config("vapr", "tiny"))
    resp = Responsibilities([torch.rand(n) for n in pool.sizes], [torch.ones(n) for n in pool.sizes])
    kinds = {
        "expert": bench_eff.expert_efficiency(pool.experts[0], pool.data, (0.0, 0.0, 0.0), SMALL),
        "router": bench_eff.router_efficiency(router, pool, SMALL),
        "uniform": bench_eff.baseline_efficiency("uniform-average", pool, SMALL),
        "oracle": bench_eff.baseline_efficiency("oracle-pixel", pool, SMALL),
        "fused": bench_eff.fused_efficiency(pool, resp, SMALL),
    }
    for kind, (metrics, text) in kinds.items():
        assert set(metrics) == TIMING_KEYS | (MULTIPASS_KEYS if kind == "router" else set()), kind
        assert "40x30" in text["fps_n3v"], kind
    assert "router" in kinds["router"][1]["fps"] and "R̄" in kinds["fused"][1]["fps"]
    # timing renders evaluate the Gaussians of every view: no per-frame cache
    assert bench_eff.timing_pool(pool, pool.data).cache_bytes == 0


def test_router_rows_time_both_render_modes(pool, monkeypatch):
    """The plain rows come from single-pass renders, the `_multipass` rows from multi-pass ones.
    Catches: render_mode ignored by timing_pool (every render in one mode), the two measurements'
    suffixes swapped (multi-pass renders are made 40 ms slower here, so the slow numbers must
    be the `_multipass` ones), notes that do not say which mode was timed."""
    real = pool_module.render_experts
    modes: list[str] = []

    def spy(*args, mode="auto", **kw):
        modes.append(mode)
        if mode == bench_eff.MULTI_PASS:
            time.sleep(0.04)
        return real(*args, mode=mode, **kw)

    monkeypatch.setattr(pool_module, "render_experts", spy)
    router = build_router("vapr", pool, router_config("vapr", "tiny"))
    metrics, text = bench_eff.router_efficiency(router, pool, SMALL)
    per_mode = 2 * (SMALL.warmup + 2 * SMALL.repeats)  # two sizes, warm-up + 2 views x repeats, one pool render each
    assert modes == [bench_eff.SINGLE_PASS] * per_mode + [bench_eff.MULTI_PASS] * per_mode
    assert set(metrics) == TIMING_KEYS | MULTIPASS_KEYS
    for suffix in ("", "_n3v"):
        assert metrics[f"render_ms_multipass{suffix}"] > metrics[f"render_ms{suffix}"] + 30
        assert "multi-pass" in text[f"fps_multipass{suffix}"] and "single-pass" in text[f"fps{suffix}"]
        assert "multi-pass" not in text[f"fps{suffix}"]
    assert bench_eff.multipass_metric("render_memory_mb_n3v") == "render_memory_mb_multipass_n3v"
    assert bench_eff.timing_pool(pool, pool.data, bench_eff.MULTI_PASS).render_mode == bench_eff.MULTI_PASS


def test_router_rows_on_cpu_are_notes_for_both_modes(pool):
    """Catches: a mixture on CPU storing reference-rasteriser timings for either mode, or the
    multi-pass rows missing their reason."""
    router = build_router("vapr", pool, router_config("vapr", "tiny"))
    metrics, text = bench_eff.router_efficiency(router, pool, EfficiencyConfig(views=1))
    assert metrics == {} and text == {"fps": bench_eff.CPU_NOTE, "fps_multipass": bench_eff.CPU_NOTE}


def test_render_option_is_checked_before_any_work(tiny_scene_dir, tmp_path):
    """Catches: a bad --render accepted (and failing only at the first mixture render), the
    option missing from the command line."""
    with pytest.raises(ConfigError, match="--render sideways: expected auto, single-pass, multi-pass"):
        run_experiment(Experiment(scene=str(tiny_scene_dir), render_mode="sideways", runs_dir=tmp_path / "runs"))
    assert not (tmp_path / "runs").exists()
    res = CliRunner().invoke(run_command, ["--render", "sideways"])
    assert res.exit_code == 2 and "--render" in res.output


def test_on_cpu_the_harness_stores_the_note_and_no_timings(tiny_scene_dir, tmp_path, monkeypatch):
    # catches: timings of the reference rasteriser stored as FPS, a run without the note; and
    # run_moe's render_mode not reaching the mixtures' pool
    runs = tmp_path / "runs"
    result = run_experiment(Experiment(scene=str(tiny_scene_dir), experts="static@tiny,static", runs_dir=runs,
                                       device="cpu", overrides=("train.iterations=5",)))
    pools: list[str] = []

    class Recorded(ExpertPool):
        def __init__(self, *args, **kw):
            super().__init__(*args, **kw)
            pools.append(self.render_mode)

    monkeypatch.setattr(harness, "ExpertPool", Recorded)
    mixtures = run_moe(result.experts, result.data, result.store, {}, render_mode="multi-pass")
    assert pools == ["multi-pass"]
    df, nt = results(runs), notes(runs)
    assert df.run_dir.nunique() == 2 + 3  # two experts, three baselines
    assert not set(df.metric) & (TIMING_KEYS | {"render_memory_mb", "render_memory_mb_n3v"})
    fps_notes = nt[nt.metric == "fps"]
    assert len(fps_notes) == 5 and set(fps_notes.note) == {bench_eff.CPU_NOTE}
    assert bench_eff.CPU_NOTE == "unavailable on CPU (timings of the reference rasteriser are not comparable)"
    # a mixture's size rows add its experts' (no duplicate of the experts' own rows)
    sizes = df[df.metric.isin(["num_gaussians", "model_mb"])].pivot_table(index="run_dir", columns="metric",
                                                                         values="value", aggfunc="count")
    assert sizes.shape == (5, 2) and (sizes.values == 1).all()
    experts = df[df.method == "static"].set_index("metric").value  # both experts are `static`
    uniform = df[df.method == "uniform-average"].set_index("metric").value
    assert uniform["num_gaussians"] == pytest.approx(experts.groupby(level=0).sum()["num_gaussians"])
    assert uniform["model_mb"] == pytest.approx(experts.groupby(level=0).sum()["model_mb"])
    assert all(m.notes["fps"] == bench_eff.CPU_NOTE for m in mixtures)


def test_expert_rows_time_the_frozen_inference_path(data):
    """Catches: an expert timed on its training path (parameters still requiring gradients)
    while the mixtures' rows time their experts frozen, on the inference path: Table 3 would
    then compare the experts unfairly. And the trained expert must come back as it was."""
    cfg = expert_config("stg", "tiny", {"max_init_points": 80})
    expert = get_expert("stg").from_scene(data, cfg, torch.Generator().manual_seed(0))
    paths: list[bool] = []
    real = expert.gaussians_at

    def spy(t, camera=None):
        paths.append(expert.uses_inference_path())
        return real(t, camera=camera)

    expert.gaussians_at = spy
    expert.train()
    metrics, _ = bench_eff.expert_efficiency(expert, data, (0.0, 0.0, 0.0), SMALL)
    assert set(metrics) == TIMING_KEYS
    assert paths and all(paths)
    assert expert.training and all(p.requires_grad for p in expert.parameters())
    assert expert._inference is None  # the inference tensors are freed afterwards
