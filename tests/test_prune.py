"""Gate-aware pruning (MoE-GS §3.3, Eq. 10): the importance, the rules, Gaussians really removed
from the experts and the router, progressive ratio targets, and the stored method."""

from __future__ import annotations

import os
import subprocess
import sys

import pandas as pd
import pytest
import torch

from moegs_bench.data.load import load_scene
from moegs_bench.errors import ConfigError
from moegs_bench.experts.registry import available_experts, expert_config, get_expert
from moegs_bench.moe import prune as P
from moegs_bench.moe.blend import pixel_rays
from moegs_bench.moe.pool import ExpertPool
from moegs_bench.moe.routers import build_router, router_config

pytestmark = pytest.mark.usefixtures("one_thread")
CPU = torch.device("cpu")


def _experts(data, dtype=torch.float32):
    experts = []
    for seed, degree, points in ((0, 1, 60), (1, 0, 40)):
        cfg = expert_config("static", "tiny", {"sh_degree": degree, "max_init_points": points})
        e = get_expert("static").from_scene(data, cfg, torch.Generator().manual_seed(seed))
        e.active_sh_degree = degree
        experts.append(e.to(dtype))
    return experts


def _abs_phi(router, viewmats, Ks, width, height, c=20.0) -> None:
    """Φ = |w2D_dir + c·(d_j(u) − d_j(centre))| + |w2D_time| (8→6→3→1, ReLU, no bias; d_j
    the ray direction component that varies most over the camera's image, the offset
    carried by the constant ray origin): its sensitivity to the splatted channels changes sign
    across the image of this camera, so a signed sum over pixels would cancel."""
    origins, dirs = pixel_rays(viewmats, Ks, width, height)
    j = int(dirs[0].reshape(-1, 3).std(0).argmax())
    o = origins[0, 0, 0]
    m = int(o.abs().argmax())
    bias = -c * float(dirs[0, height // 2, width // 2, j]) / float(o[m])
    l1, l2, l3 = router.phi[0], router.phi[2], router.phi[4]
    with torch.no_grad():
        for layer in (l1, l2, l3):
            layer.weight.zero_()
        for row, sign in ((0, 1.0), (1, -1.0)):
            l1.weight[row, 0], l1.weight[row, 5 + j], l1.weight[row, 2 + m] = sign, sign * c, sign * bias
        l1.weight[2, 1], l1.weight[3, 1] = 1, -1
        l2.weight[0, :2] = 1
        l2.weight[1, 2:4] = 1
        l3.weight[0, :2] = 1


def _randomise(router) -> None:
    """Per-Gaussian weights that differ between Gaussians and experts, with both signs."""
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for plist in (router.w, router.w_dir, router.w_time):
            for p in plist:
                p.copy_(torch.rand(p.shape, generator=g, dtype=p.dtype) * 4 - 2)


@pytest.fixture(scope="module")
def data(tiny_scene_dir):
    return load_scene(tiny_scene_dir, CPU, with_gt=True)


@pytest.fixture(scope="module")
def pool(data):
    return ExpertPool(_experts(data), ["a", "b"], data)


@pytest.fixture(scope="module")
def router(pool):
    r = build_router("vapr", pool, router_config("vapr", "tiny"))
    _randomise(r)
    return r.eval()


def _moving_views(data):
    """Two training view indices of one camera at frames with t > 0 (w_time enters as t·w_time)."""
    views = data.splits["train"]
    cam = int(views.cams[0])
    ids = [i for i in range(len(views)) if int(views.frames[i]) > 0 and int(views.cams[i]) == cam]
    return [ids[0], ids[-1]]


def test_importance_is_the_l1_norm_of_the_gate_jacobian(data):
    """Catches: a signed sum over pixels (|∂Σ_u G'/∂w| instead of Σ_u |∂G'/∂w|), a dropped or
    doubled mean over views, the gates of every expert instead of the owner's, only the w
    channel, or the derivative w.r.t. w_time instead of the splatted t·w_time. Finite
    differences of the router's own forward, in float64."""
    pool = ExpertPool(_experts(data, torch.float64), ["a", "b"], data)
    router = build_router("vapr", pool, router_config("vapr", "tiny")).double()
    _randomise(router)
    views = data.splits["train"]
    ids = _moving_views(data)
    _abs_phi(router, *data.camera_batch(views.cams[ids[:1]]), data.width, data.height)
    router.train()  # the training forward: the evaluation one is float32-only
    temp = router.cfg.eval_temp
    imp = P.gate_importance(router, pool, ids)
    eps = 1e-6
    signed_differs = False
    for k in range(len(pool)):
        for i in imp[k].argsort(descending=True)[:2].tolist():
            l1, signed, w_only = 0.0, 0.0, 0.0
            for v in ids:
                cam, frame = int(views.cams[v]), int(views.frames[v])
                t = float(data.times[frame])
                for plist, step in ((router.w, eps), (router.w_dir, eps), (router.w_time, eps / t)):
                    with torch.no_grad():
                        plist[k][i] += step
                        up = router(pool, cam, frame, temp).gates[k]
                        plist[k][i] -= 2 * step
                        down = router(pool, cam, frame, temp).gates[k]
                        plist[k][i] += step
                    d = (up - down) / (2 * eps)  # ∂G'_k(u)/∂x_ic of the splatted entry x_ic
                    l1 += float(d.abs().sum())
                    signed += abs(float(d.sum()))
                    w_only += float(d.abs().sum()) if plist is router.w else 0.0
            l1, signed, w_only = l1 / len(ids), signed / len(ids), w_only / len(ids)
            assert float(imp[k][i]) == pytest.approx(l1, rel=1e-4), (k, i)
            signed_differs |= abs(signed - l1) > 0.05 * l1
            assert w_only < 0.95 * l1  # w_dir and w_time matter here
    assert signed_differs  # the scene tells the L1 norm from a signed sum


def test_importance_max_is_the_largest_per_view_value(pool, router):
    """Catches: the importance-max rule averaging (or summing) the views like Eq. 10, or taking
    the largest value of another expert's or another view set's."""
    views = pool.data.splits["train"]
    ids = [0, len(views) // 2, len(views) - 1]
    per_view = [P.view_importance(router, pool, int(views.cams[i]), int(views.frames[i]), router.cfg.eval_temp)
                for i in ids]
    mean = P.gate_importance(router, pool, ids)
    top = P.gate_importance(router, pool, ids, reduce="max")
    for k in range(len(pool)):
        stacked = torch.stack([v[k] for v in per_view])
        torch.testing.assert_close(top[k], stacked.amax(0), rtol=1e-6, atol=0)
        torch.testing.assert_close(mean[k], stacked.mean(0), rtol=1e-5, atol=1e-12)
        assert bool((top[k] > mean[k] * 1.01).any())  # the views differ: max is not the mean
    with pytest.raises(ConfigError, match="reduce"):
        P.gate_importance(router, pool, ids, reduce="median")


def test_vapr_gates_match_the_routers_forward(pool, router):
    """Catches: a pixel head (Φ input order, residual on w2D, temperature) that drifted from
    the VAPR's forward, which would score Gaussians against gates the mixture never uses."""
    cam, frame = 1, 3
    t = pool.data.times[frame]
    views = pool.render_view(cam, frame, extras=router.router_channels(t), extras_background=torch.ones(3),
                             background=router.expert_background(CPU))
    splat = torch.stack([o.extras for o in views.outputs])
    with torch.no_grad():
        want = router(pool, cam, frame, 0.7).gates
        got = P.vapr_gates(router, splat, views.viewmats, views.Ks, pool.data.width, pool.data.height, 0.7)
    assert (got - want).abs().max() <= 1e-6


def _expected_rows(expert, keep):
    return {name: p.detach()[keep] for name, p in expert.per_gaussian_params().items()}


def test_importance_threshold_keeps_exactly_the_gaussians_at_or_above_tau(pool, router):
    """Catches: a strict/loose comparison, masks applied to the wrong expert or shifted rows,
    router weights not pruned with their Gaussians, Φ not carried over."""
    cfg = P.PruneConfig(steps=1, finetune_iterations=0, views=3)
    ids = P.spaced_views(len(pool.data.splits["train"]), 3)
    imp = P.gate_importance(router, pool, ids)
    tau = float(torch.cat(imp).median())
    result = P.prune_mixture(router, pool, P.PruneTarget("threshold", tau), cfg)
    for k in range(len(pool)):
        keep = imp[k] >= tau
        assert torch.equal(result.keeps[k], keep), k
        assert 0 < int(keep.sum()) < len(keep)
        for name, rows in _expected_rows(pool.experts[k], keep).items():
            assert torch.equal(result.pool.experts[k].params[name].detach(), rows), (k, name)
        for new, old in ((result.router.w, router.w), (result.router.w_dir, router.w_dir),
                         (result.router.w_time, router.w_time)):
            assert torch.equal(new[k].detach(), old[k].detach()[keep])
    assert result.pool.sizes == [int(k.sum()) for k in result.keeps]
    for a, b in zip(result.router.phi.parameters(), router.phi.parameters(), strict=True):
        assert torch.equal(a, b)
    assert pool.sizes == [60, 40] and router.sizes == [60, 40]  # the inputs are not changed


def test_sigmoid_rule_keeps_exactly_sigmoid_w_at_or_above_the_threshold(pool, router):
    """Catches: the authors' rule applied to the raw w, to w_dir, or with a strict comparison."""
    cfg = P.PruneConfig(rule="sigmoid", steps=1, finetune_iterations=0)
    tau = 0.5
    result = P.prune_mixture(router, pool, P.PruneTarget("threshold", tau), cfg)
    for k in range(len(pool)):
        keep = 1 / (1 + torch.exp(-router.w[k].detach().double())) >= tau  # independent of torch.sigmoid
        assert torch.equal(result.keeps[k], keep)
        assert torch.equal(result.router.w[k].detach(), router.w[k].detach()[keep])


def test_pruned_mixture_renders_like_the_surviving_gaussians(pool, router):
    """Catches: experts and router pruned with different masks or orders, a per-Gaussian
    tensor left unpruned, colours or router channels misaligned after pruning. Reference:
    the unpruned router over the original experts with the pruned Gaussians made fully
    transparent (they then add nothing to any pixel)."""
    keeps = [torch.rand(n, generator=torch.Generator().manual_seed(k)) < 0.6 for k, n in enumerate(pool.sizes)]
    pruned_router, pruned_pool = P.prune_mixture_rows(router, pool, keeps)
    hidden = []
    for e, keep in zip(pool.experts, keeps, strict=True):
        e = P.keep_expert_rows(e, torch.ones_like(keep))
        with torch.no_grad():
            e.params["opacities"][~keep] = -1e4
        hidden.append(e)
    reference = P.pool_like(pool, hidden)
    views = pool.data.splits["test"]
    for i in range(len(views)):
        cam, frame = int(views.cams[i]), int(views.frames[i])
        with torch.no_grad():
            got = pruned_router(pruned_pool, cam, frame, 1.0)
            want = router(reference, cam, frame, 1.0)
        assert (got.image - want.image).abs().max() <= 1e-5
        assert (got.gates - want.gates).abs().max() <= 1e-5
    assert sum(pruned_pool.sizes) < sum(pool.sizes)


def test_ratio_target_reached_progressively_with_fine_tuning(pool, router, monkeypatch):
    """Catches: a ratio taken per expert instead of over the mixture, all of it removed in
    the first round, no router fine-tuning between rounds, scores not recomputed after it."""
    calls = []
    real = P.gate_importance
    monkeypatch.setattr(P, "gate_importance", lambda *a, **kw: calls.append(1) or real(*a, **kw))
    cfg = P.PruneConfig(steps=2, finetune_iterations=2, views=2)
    total = sum(pool.sizes)
    result = P.prune_mixture(router, pool, P.PruneTarget("ratio", 0.55), cfg, start_step=40)
    assert len(calls) == 2
    assert sum(result.steps[0].kept) == total - round(0.55 * total / 2)
    assert result.num_gaussians == sum(result.steps[1].kept) == total - round(0.55 * total)
    assert result.pool.sizes == result.steps[1].kept
    assert all(s.finetune_steps == 2 for s in result.steps)
    # fine-tuned: the kept Gaussians' weights moved away from the trained router's
    moved = max(float((new.detach() - old.detach()[keep]).abs().max())
                for new, old, keep in zip(result.router.w, router.w, result.keeps, strict=True))
    assert moved > 1e-4


def test_select_keep_shares_one_threshold_over_experts():
    """Catches: a ratio applied per expert, ties resolved all in favour of the first expert,
    an expert pruned to nothing (no renderer draws an empty set)."""
    scores = [torch.tensor([0.9, 0.1, 0.5, 0.7]), torch.tensor([0.2, 0.8, 0.3])]
    keeps, tau = P.select_keep(scores, keep_count=3)
    assert [k.tolist() for k in keeps] == [[True, False, False, True], [False, True, False]] and tau == pytest.approx(0.7)
    ties = [torch.zeros(10), torch.zeros(30)]
    keeps, _ = P.select_keep(ties, keep_count=20)
    assert [int(k.sum()) for k in keeps] == [5, 15]  # spread evenly over the experts
    low = [torch.tensor([5.0, 6.0, 7.0]), torch.tensor([0.1, 0.2])]
    keeps, _ = P.select_keep(low, keep_count=2)
    assert [k.tolist() for k in keeps] == [[False, False, True], [False, True]]
    keeps, tau = P.select_keep(low, threshold=1.0)
    assert [k.tolist() for k in keeps] == [[True, True, True], [False, True]] and tau == 1.0


@pytest.mark.parametrize("name", sorted(available_experts()))
def test_keep_rows_prunes_every_expert(data, name):
    """Catches: a per-Gaussian tensor of some expert left at its old length (or a shared one
    cut), so that the pruned expert's Gaussians are not the original's surviving ones; and an
    expert whose caches cannot be copied (E-D3DGS's sparse neighbour graph, built here)."""
    overrides = {"smooth_coef": 0.001, "knn": 4} if name == "ed3dgs" else {}
    cfg = expert_config(name, "tiny", overrides)
    expert = get_expert(name).from_scene(data, cfg, torch.Generator().manual_seed(0)).eval()
    expert.on_densify()  # the caches a trained expert carries
    n = expert.num_gaussians
    keep = torch.rand(n, generator=torch.Generator().manual_seed(1)) < 0.5
    pruned = P.keep_expert_rows(expert, keep)
    assert pruned.num_gaussians == int(keep.sum()) and expert.num_gaussians == n
    t = data.times[3]
    with torch.no_grad():
        want = expert.gaussians_at(t, camera=0)
        got = pruned.gaussians_at(t, camera=0)
    for field in ("means", "quats", "scales", "opacities", "sh", "features"):
        a, b = getattr(got, field), getattr(want, field)
        if b is not None:
            assert torch.allclose(a, b[keep.to(b.device)], atol=1e-6), field


def test_method_names_and_options():
    """Catches: names that do not parse back (tables could not find the runs), a ratio read
    as a fraction, bad --prune items accepted, pruning asked without the VAPR."""
    from moegs_bench.bench.prune import prune_settings

    p55 = P.PruneTarget("ratio", 0.55)
    assert P.pruned_method("moe-vapr", p55) == "moe-vapr-p55"
    assert P.pruned_method("moe-vapr", P.PruneTarget("threshold", 0.02), "sigmoid") == "moe-vapr-t0.02-sigmoid"
    assert P.parse_pruned_method("moe-vapr-p75") == ("moe-vapr", P.PruneTarget("ratio", 0.75), "importance")
    assert P.parse_pruned_method("moe-vapr-t0.02-sigmoid")[1:] == (P.PruneTarget("threshold", 0.02), "sigmoid")
    assert P.pruned_method("moe-vapr", p55, "importance-max") == "moe-vapr-p55-max"
    assert P.parse_pruned_method("moe-vapr-p55-max") == ("moe-vapr", p55, "importance-max")
    assert prune_settings("55", "importance-max", routers=["vapr"])[1].rule == "importance-max"
    with pytest.raises(ConfigError, match="--prune-rule"):
        prune_settings("55", "importance-min", routers=["vapr"])
    assert not P.is_pruned_method("moe-vapr") and not P.is_pruned_method("moe-fused")
    targets, cfg = prune_settings("55,75,t0.5", "sigmoid", 4, ["finetune_iterations=7"], ["vapr"])
    assert [t.tag for t in targets] == ["p55", "p75", "t0.5"]
    assert (cfg.rule, cfg.steps, cfg.finetune_iterations) == ("sigmoid", 4, 7)
    assert prune_settings("none")[0] == []
    for spec, routers, words in (("150", ["vapr"], "--prune"), ("abc", ["vapr"], "--prune"),
                                 ("55", ["pixel"], "--router vapr")):
        with pytest.raises(ConfigError, match=words):
            prune_settings(spec, routers=routers)
    with pytest.raises(ConfigError, match="--prune-set"):
        prune_settings("55", overrides=["nothing=1"], routers=["vapr"])


def _cli(*args):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "moegs_bench", *map(str, args)], capture_output=True, text=True,
                          env=env)


def _status(stdout: str, method: str) -> str:
    rows = [line for line in stdout.splitlines() if line.startswith(f"| {method} ")]
    return rows[0].strip().strip("|").split("|")[-1].strip() if rows else ""


def test_cli_prune_stores_a_method_and_reuses_it(tiny_scene_dir, tmp_path):
    """Catches: a pruned mixture not stored as its own method, a size row that is not the
    kept count, a stored model as large as the unpruned one, a rerun that prunes again."""
    runs = tmp_path / "runs"
    args = ("run", "--scene", tiny_scene_dir, "--runs", runs, "--experts", "static@tiny,static@small",
            "--set", "train.iterations=8", "--set", "static@tiny:max_init_points=200",
            "--set", "static@small:max_init_points=120", "--router", "vapr", "--router-set", "iterations=3",
            "--prune", "55", "--prune-steps", "2", "--prune-set", "finetune_iterations=2",
            "--prune-set", "views=3", "--html", "none")
    first = _cli(*args)
    assert first.returncode == 0, first.stderr
    assert _status(first.stdout, "moe-vapr-p55") == "trained"
    df = pd.read_csv(runs / "results.csv")
    value = df.set_index(["method", "metric"]).value
    total = value[("moe-vapr", "num_gaussians")]
    assert value[("moe-vapr-p55", "num_gaussians")] == total - round(0.55 * total)
    assert value[("moe-vapr-p55", "num_gaussians_unpruned")] == total
    assert value[("moe-vapr-p55", "model_mb")] < value[("moe-vapr", "model_mb")]
    run = runs / "synthetic" / "mixed" / "moe-vapr-p55" / "static@small+static@tiny" / "seed0"
    assert (run / "checkpoints" / "router.pt").is_file() and (run / "checkpoints" / "keep.pt").is_file()
    assert len(pd.read_csv(run / "per_image.csv")) == len(pd.read_csv(runs / "synthetic" / "mixed" / "moe-vapr"
                                                                      / "static@small+static@tiny" / "seed0"
                                                                      / "per_image.csv"))
    again = _cli(*args)
    assert again.returncode == 0, again.stderr
    assert _status(again.stdout, "moe-vapr-p55") == "reused"
