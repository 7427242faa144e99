"""Distillation (MoE-GS Eq. 11): the loss, the loop's hook, the pseudo-label cache, the stage
(`run --distill`) and its tables."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch
from click.testing import CliRunner

from moegs_bench.bench.distill import (
    ExpertRecipe,
    distill_seeds,
    mixture_pseudo_labels,
    mixture_variant,
    run_variant,
    weighting_plan,
)
from moegs_bench.bench.harness import StoredRun
from moegs_bench.bench.store import Run, RunId, RunStore
from moegs_bench.cli import cli as main_cli
from moegs_bench.data.load import load_scene
from moegs_bench.errors import ConfigError
from moegs_bench.experts.registry import expert_config, get_expert
from moegs_bench.experts.views import render_expert_views
from moegs_bench.moe.distill import DistillConfig, pseudo_labels, segment_views
from moegs_bench.moe.pool import ExpertPool
from moegs_bench.moe.routers import build_router, router_config
from moegs_bench.report.tables import build_table, format_table
from moegs_bench.train.loop import expert_loss, train_expert
from moegs_bench.train.losses import DistillTargets, distillation_loss, photometric

pytestmark = pytest.mark.usefixtures("one_thread")
CPU = torch.device("cpu")
LAM = 0.3  # not 0.5: a λ / (1-λ) swap changes every identity below


class StubExpert:
    """What `expert_loss` asks of an expert: a photometric weighting (w ≠ 1, its own SSIM share)
    and a regulariser."""

    def photometric_weighting(self, step):
        return 1.5, 0.35

    def regularisation(self, step):
        return torch.tensor(0.0125)


def images(seed=0, b=2, h=24, w=20):
    g = torch.Generator().manual_seed(seed)
    return [torch.rand(b, h, w, 3, generator=g) for _ in range(3)]


def targets(gate, moe, lam=LAM):
    return DistillTargets(lambda idx: (gate, moe), lam)


# -- the loss ------------------------------------------------------------------------------------
def test_gate_one_is_the_ordinary_loss_against_ground_truth():
    pred, gt, moe = images()
    e, idx = StubExpert(), torch.tensor([0, 1])
    ordinary = expert_loss(e, pred, gt, 3)  # w·((1-λs)·L1 + λs·D-SSIM) + reg
    reg = e.regularisation(3)
    distilled = expert_loss(e, pred, gt, 3, targets(torch.ones(2, 24, 20), moe), idx)
    torch.testing.assert_close(distilled - reg, LAM * (ordinary - reg))
    # the expert's own weighting: w and its SSIM share, not the 3DGS default
    torch.testing.assert_close(ordinary - reg, 1.5 * photometric(pred, gt, 0.35))


def test_gate_zero_is_the_ordinary_loss_against_the_mixture():
    pred, gt, moe = images(1)
    e, idx = StubExpert(), torch.tensor([0, 1])
    reg = e.regularisation(0)
    against_moe = expert_loss(e, pred, moe, 0) - reg
    distilled = expert_loss(e, pred, gt, 0, targets(torch.zeros(2, 24, 20, 1), moe), idx) - reg
    torch.testing.assert_close(distilled, (1 - LAM) * against_moe)


def test_ground_truth_where_the_gate_is_one_and_the_mixture_elsewhere():
    """An expert equal to the ground truth where G' = 1 and to I_MoE where G' = 0 has zero
    loss; swapped targets or masks would not."""
    _, gt, moe = images(2)
    gate = torch.zeros(2, 24, 20)
    gate[:, :, :10] = 1.0
    pred = torch.where(gate[..., None] > 0, gt, moe)
    assert distillation_loss(pred, gt, moe, gate, LAM) < 1e-6
    swapped = torch.where(gate[..., None] > 0, moe, gt)
    assert distillation_loss(swapped, gt, moe, gate, LAM) > 0.05
    # without weights both supervisions see every pixel: λ·L(I, GT) + (1-λ)·L(I, I_MoE)
    none = distillation_loss(pred, gt, moe, None, LAM, 0.2)
    torch.testing.assert_close(none, LAM * photometric(pred, gt) + (1 - LAM) * photometric(pred, moe))


def test_lambda_and_gate_shape_are_checked():
    pred, gt, moe = images()
    with pytest.raises(ValueError, match="λ"):
        distillation_loss(pred, gt, moe, None, 1.5)
    with pytest.raises(ValueError, match="gate"):
        distillation_loss(pred, gt, moe, torch.ones(2, 24, 19), 0.5)
    with pytest.raises(ConfigError, match="--distill-lambda"):
        DistillConfig(lam=-0.1)
    with pytest.raises(ConfigError, match="--distill-seeds"):
        distill_seeds(0, 0)
    assert distill_seeds(2, 3) == [3, 4, 5]
    assert weighting_plan("none,b:both", ["a", "b"]) == {"a": ("none",), "b": ("routing", "none")}
    assert weighting_plan("", ["a"]) == {"a": ("routing",)}
    with pytest.raises(ConfigError, match="'weights'"):
        weighting_plan("b:weights")


# -- the mixture, the cache and the loop -----------------------------------------------------------
@pytest.fixture(scope="module")
def data(tiny_scene_dir):
    return load_scene(tiny_scene_dir, CPU)


def static(data, seed, points, **train):
    cfg = expert_config("static", "tiny", {"max_init_points": points, "train": train})
    return get_expert("static").from_scene(data, cfg, torch.Generator().manual_seed(seed))


@pytest.fixture(scope="module")
def mixture(data):
    pool = ExpertPool([static(data, 0, 150), static(data, 1, 120)], ["a", "b"], data)
    torch.manual_seed(0)
    return build_router("vapr", pool, router_config("vapr", "tiny", {})), pool


@pytest.fixture(scope="module")
def labels(mixture, data, tmp_path_factory):
    router, pool = mixture
    return pseudo_labels(tmp_path_factory.mktemp("cache"), "k", data, ["a", "b"], lambda: (router, pool))


def test_gradients_reach_only_the_expert(data, mixture):
    router, pool = mixture
    expert = static(data, 2, 150)
    out = router(pool, 1, 2, 1.0)  # with autograd on: Eq. 11 must still treat it as a target
    pred, _ = render_expert_views(expert, data, torch.tensor([1]), torch.tensor([2]), torch.zeros(3))
    gt = data.image_float("train", torch.tensor([0]))
    distillation_loss(pred, gt, out.image, out.gates[0], 0.5).backward()
    assert all(p.grad is None for p in router.parameters())
    assert all(not p.requires_grad for e in pool.experts for p in e.parameters())
    grads = [p.grad for p in expert.params.values()]
    assert all(g is not None for g in grads) and any(g.abs().sum() > 0 for g in grads)


def test_pseudo_labels_are_cached_reused_and_rebuilt_for_another_router(data, mixture, tmp_path):
    router, pool = mixture
    calls = {"source": 0, "forward": 0}
    forward = router.forward

    def counting(*args, **kw):
        calls["forward"] += 1
        return forward(*args, **kw)

    router.forward = counting

    def source():
        calls["source"] += 1
        return router, pool

    views = data.splits["train"]
    try:
        first = pseudo_labels(tmp_path, "key1", data, ["a", "b"], source)
        assert first.rendered and calls == {"source": 1, "forward": len(views)}
        assert first.images.shape == (len(views), data.height, data.width, 3) and first.images.dtype == np.uint8
        assert first.gates.shape == (len(views), 2, data.height, data.width) and first.gates.dtype == np.float16
        again = pseudo_labels(tmp_path, "key1", data, ["a", "b"], source)
        assert not again.rendered and calls == {"source": 1, "forward": len(views)}  # nothing rendered
        np.testing.assert_array_equal(again.images, first.images)
        other = pseudo_labels(tmp_path, "key2", data, ["a", "b"], source)  # the router's key changed
        assert other.rendered and calls["forward"] == 2 * len(views)
        assert sorted(p.name for p in tmp_path.iterdir()) == ["key2"]  # the stale cache is gone
    finally:
        del router.forward
    # the cache holds the mixture's image and gates of each view
    with torch.no_grad():
        out = router(pool, int(views.cams[3]), int(views.frames[3]), router.cfg.eval_temp)
    assert np.abs(other.images[3] / 255.0 - out.image[0].numpy()).max() <= 0.5 / 255 + 1e-6
    np.testing.assert_allclose(other.gates[3].astype(np.float32), out.gates[:, 0].numpy(), atol=1e-3)


def test_targets_serve_each_experts_gates_and_segment_views(data, labels):
    views = data.splits["train"]
    for device_mb in (4096.0, 0.0):  # on the device, or read from the memory map per step
        full = labels.targets("b", "routing", CPU, 0.4, device_mb=device_mb)
        assert full.lam == 0.4
        gate, moe = full.provider(torch.tensor([5, 0]))
        assert gate.shape == (2, data.height, data.width) and moe.shape == (2, data.height, data.width, 3)
        torch.testing.assert_close(gate[0], torch.from_numpy(labels.gates[5, 1].astype(np.float32)))
        assert not gate.requires_grad and not moe.requires_grad
        # a temporal segment's view i is the i-th view of its frames
        keep = segment_views(views, 3, 6)
        seg = labels.targets("b", "routing", CPU, 0.4, keep=keep, device_mb=device_mb)
        local = torch.tensor([0, int(keep.sum()) - 1])
        rows = torch.nonzero(keep).squeeze(1)[local]
        g_seg, m_seg = seg.provider(local)
        g_full, m_full = full.provider(rows)
        torch.testing.assert_close(g_seg, g_full)
        torch.testing.assert_close(m_seg, m_full)
        assert labels.targets("a", "none", CPU, device_mb=device_mb).provider(local)[0] is None
    with pytest.raises(ConfigError, match="'c'"):
        labels.targets("c", "routing", CPU)


def test_loop_hook_replaces_only_the_photometric_loss(data):
    """G' ≡ 1 with λ = 1 (or G' ≡ 0, λ = 0 and I_MoE = ground truth) is the ordinary loss:
    training is then the same step for step, densification and schedules included."""
    train = {"iterations": 12, "checkpoint_every": 0,
             "densify": {"start": 4, "stop": 11, "every": 4, "grad_threshold": 1e-5}}
    plain = static(data, 3, 300, **train)
    ref = train_expert(plain, data, seed=4)
    views = data.splits["train"]

    def ones(idx):
        return torch.ones(len(idx), data.height, data.width), torch.zeros(len(idx), data.height, data.width, 3)

    def zeros(idx):
        return torch.zeros(len(idx), data.height, data.width), data.image_float("train", idx)

    for provider, lam in ((ones, 1.0), (zeros, 0.0)):
        seen = []

        def recording(idx, provider=provider, seen=seen):
            seen.append(idx.clone())
            assert idx.max() < len(views)
            return provider(idx)

        twin = static(data, 3, 300, **train)
        result = train_expert(twin, data, seed=4, targets=DistillTargets(recording, lam))
        assert len(seen) == 12
        assert result.losses == pytest.approx(ref.losses, rel=1e-5, abs=1e-7)
        assert twin.num_gaussians == plain.num_gaussians
        torch.testing.assert_close(twin.params["means"], plain.params["means"])
    # a real mixture target changes training
    other = static(data, 3, 300, **train)
    half = DistillTargets(lambda idx: (torch.full((len(idx), data.height, data.width), 0.5),
                                       torch.zeros(len(idx), data.height, data.width, 3)), 0.5)
    assert train_expert(other, data, seed=4, targets=half).losses != pytest.approx(ref.losses, rel=1e-3)


def test_a_segmented_expert_trains_each_segment_on_its_own_views(data, labels, tmp_path):
    cfg = expert_config("static", "tiny", {"max_init_points": 120, "train": {"iterations": 3, "checkpoint_every": 0}})
    recipe = ExpertRecipe("a", "static", "tiny", cfg, segment_frames=4)  # 8 frames: two segments
    keeps, asked = [], []

    def targets_for(keep):
        keeps.append(keep)
        inner = labels.targets("a", "routing", CPU, 0.5, keep)

        def provider(idx):
            asked.append((len(keeps) - 1, idx.clone()))
            return inner.provider(idx)

        return DistillTargets(provider, inner.lam)

    rid = RunId("synthetic", "mixed", "a-distilled", "m", 1)
    run = run_variant(recipe, data, RunStore(tmp_path / "runs"), rid, recipe.run_config("distilled", 1),
                      targets_for=targets_for, save_images=False)
    views = data.splits["train"]
    assert [k.tolist() for k in keeps] == [segment_views(views, 0, 4).tolist(), segment_views(views, 4, 8).tolist()]
    assert len(asked) == 6 and all(int(idx.max()) < int(keeps[s].sum()) for s, idx in asked)
    assert run.metrics["segments"] == 2 and run.run.is_complete


# -- the stage from the command line --------------------------------------------------------------
MIXTURE = "moe-vapr.seed0.ex4dgs+stg"
ARGS = ("--experts", "2", "--router", "vapr", "--distill", "--distill-weighting", "routing,stg:both",
        "--set", "train.iterations=6", "--set", "max_init_points=300", "--router-set", "iterations=2")


def cli(*args):
    return CliRunner().invoke(main_cli, [str(a) for a in args])


@pytest.fixture(scope="module")
def distill_run(tiny_scene_dir, tmp_path_factory):
    runs = tmp_path_factory.mktemp("runs")
    return runs, cli("run", *ARGS, "--scene", tiny_scene_dir, "--runs", runs)


def test_run_distill_stores_retrained_and_distilled_experts(distill_run):
    runs, out = distill_run
    assert out.exit_code == 0, out.output
    root = runs / "synthetic" / "mixed"
    df = pd.read_csv(runs / "results.csv")
    psnr = df[df.metric == "psnr"].set_index(["method", "variant", "seed"]).value
    iters = df[df.metric == "iterations"].set_index(["method", "variant", "seed"]).value
    assert not (root / "ex4dgs-distilled-noweight").exists()  # "routing,stg:both": w/o weight for stg only
    for expert in ("ex4dgs", "stg"):
        kinds = ("-distilled", "-distilled-noweight") if expert == "stg" else ("-distilled",)
        for method, variant in ((f"{expert}-retrained", "default"), *((expert + k, MIXTURE) for k in kinds)):
            assert (root / method / variant / "seed1" / "DONE").is_file(), method
            assert np.isfinite(psnr[(method, variant, 1)])
            assert iters[(method, variant, 1)] == iters[(expert, "default", 0)] == 6  # the baseline's budget
        config = json.loads((root / f"{expert}-distilled" / MIXTURE / "seed1" / "config.json").read_text())["config"]
        assert config["lambda"] == 0.5 and config["weighting"] == "routing" and config["seed"] == 1
        cache = root / "moe-vapr" / "ex4dgs+stg" / "seed0" / "pseudo-labels" / config["pseudo_labels"]
        assert (cache / "meta.json").is_file()
    # the printed table: baseline, retrained and distilled rows of each expert
    lines = out.output[out.output.index("distillation (the mixture"):].splitlines()
    for expert in ("ex4dgs", "stg"):
        for training in ("baseline (in the mixture)", "retrained (GT loss)", "distilled (routing weight)"):
            assert any(line.startswith(f"| {expert}") and training in line for line in lines), training
        noweight = any(line.startswith(f"| {expert}") and "w/o weight" in line for line in lines)
        assert noweight == (expert == "stg")


def test_report_distillation_tables(distill_run):
    runs, _ = distill_run
    for name in ("distillation", "distillation-weighting"):
        out = cli("report", "--table", name, "--runs", runs)
        assert out.exit_code == 0, out.output
        assert "distilled (w/o weight)" in out.output and "no published values for Synthetic" in out.output
        assert ("| ex4dgs" in out.output) == (name == "distillation")  # no w/o-weight run of ex4dgs


def test_cache_key_follows_the_router_run(distill_run, tiny_scene_dir, monkeypatch):
    """The pseudo-labels are looked up under a key of the router run's own key: the same while
    the router run is unchanged, another (so rendered afresh) once it was retrained."""
    runs, _ = distill_run
    root = runs / "synthetic" / "mixed"
    data = load_scene(tiny_scene_dir, CPU)
    experts = [StoredRun.load(e, Run(root / e / "default" / "seed0", RunId("synthetic", "mixed", e)))
               for e in ("ex4dgs", "stg")]
    rid = RunId("synthetic", "mixed", "moe-vapr", "ex4dgs+stg")
    router = StoredRun.load("moe-vapr", Run(root / "moe-vapr" / "ex4dgs+stg" / "seed0", rid))
    assert mixture_variant(router) == MIXTURE
    keys = []
    monkeypatch.setattr("moegs_bench.bench.harness.code_fingerprint", lambda *modules: "pinned")  # one code version
    monkeypatch.setattr("moegs_bench.bench.distill.pseudo_labels", lambda folder, key, *a, **kw: keys.append(key))
    mixture_pseudo_labels(experts, router, data)
    mixture_pseudo_labels(experts, router, data)
    config_path = router.run.dir / "config.json"
    config = json.loads(config_path.read_text())
    config["key"] = "0123456789abcdef"  # a retrained router
    config_path.write_text(json.dumps(config))
    mixture_pseudo_labels(experts, router, data)
    assert keys[0] == keys[1] != keys[2]
    config["config"]["experts"] = {"ex4dgs": "x"}  # a router of another expert set
    config_path.write_text(json.dumps(config))
    with pytest.raises(ConfigError, match="trained on ex4dgs"):
        mixture_pseudo_labels(experts, router, data)


def test_distill_options_fail_before_training(tiny_scene_dir, tmp_path):
    out = cli("run", "--experts", "2", "--router", "pixel", "--distill", "--scene", tiny_scene_dir, "--runs", tmp_path)
    assert isinstance(out.exception, ConfigError) and "--distill" in str(out.exception)
    assert "--router vapr" in str(out.exception)
    out = cli("run", "--experts", "2", "--router", "vapr", "--distill", "--distill-seeds", "0",
              "--scene", tiny_scene_dir, "--runs", tmp_path)
    assert isinstance(out.exception, ConfigError) and "--distill-seeds" in str(out.exception)
    out = cli("run", "--experts", "2", "--router", "vapr", "--distill", "--distill-weighting", "routing,ed3dgs:both",
              "--scene", tiny_scene_dir, "--runs", tmp_path)
    assert isinstance(out.exception, ConfigError) and "ed3dgs not in the expert set" in str(out.exception)
    assert not any(tmp_path.glob("synthetic/*/*/*/seed*/DONE"))


# -- the tables on published data --------------------------------------------------------------
def _technicolor_rows():
    scenes = ["Birthday", "Fabien", "Painter", "Theater", "Train"]
    rows = []
    for i, scene in enumerate(scenes):
        for method, variant, seeds, base in (("ed3dgs", "default", [0], 30.0), ("ed3dgs-retrained", "default", [1, 2], 31.0),
                                             ("ed3dgs-distilled", MIXTURE, [1, 2], 32.0),
                                             ("ed3dgs-distilled-noweight", MIXTURE, [1, 2], 31.5),
                                             ("moe-vapr", "ex4dgs+stg+ed3dgs", [0], 33.0)):
            for s in seeds:
                rows.append({"dataset": "technicolor", "scene": scene, "method": method, "variant": variant,
                             "seed": s, "metric": "psnr", "value": base + i + 0.5 * (s - 1)})
    return pd.DataFrame(rows)


def test_distillation_tables_mean_spread_and_paper_values():
    df = _technicolor_rows()
    table = build_table("distillation", df, metrics=["psnr"])
    assert list(table.index.get_level_values(1)) == [
        "baseline (in the mixture)", "retrained (GT loss)", "distilled (w/o weight)", "distilled (routing weight)",
        "retrained (GT loss) (paper)", "distilled (w/o weight) (paper)", "distilled (routing weight) (paper)"]
    row = table.loc[("ed3dgs", "distilled (routing weight)")]
    assert row[("Birthday", "PSNR", "mean")] == pytest.approx(32.25)  # seeds 1, 2: 32.0, 32.5
    assert row[("Birthday", "PSNR", "std")] == pytest.approx(np.std([32.0, 32.5], ddof=1))
    assert row[("Average", "PSNR", "mean")] == pytest.approx(34.25)
    paper = table.loc[("ed3dgs", "distilled (routing weight) (paper)")]
    assert paper[("Average", "PSNR", "mean")] == pytest.approx(33.67)  # Table 7
    assert paper[("Fabien", "PSNR", "mean")] == pytest.approx(35.68)  # Table 11
    assert "moe-vapr" not in str(table.index)
    weighting = build_table("distillation-weighting", df, metrics=["ssim"])
    assert weighting.loc[("ed3dgs", "distilled (routing weight) (paper)")][("Average", "SSIM", "mean")] == \
        pytest.approx(0.918)  # Table 13 prints 0.918 where Table 7 prints 0.915
    text = format_table(table, "markdown")
    assert "32.25 ± 0.35" in text
    with pytest.raises(ConfigError, match="distilled-no-weight"):
        build_table("distillation-weighting", df[~df.method.str.endswith("noweight")])
