from __future__ import annotations

import torch
from torch import nn

from moegs_bench.optim.densify import append_gaussians, keep_gaussians, reset_rows


def setup(n=5):
    params = nn.ParameterDict({"means": nn.Parameter(torch.randn(n, 3)), "coeffs": nn.Parameter(torch.randn(n, 4, 3))})
    opts = {k: torch.optim.Adam([{"params": [p], "lr": 0.1, "name": k}]) for k, p in params.items()}
    loss = sum(p.square().sum() for p in params.values())
    loss.backward()
    for o in opts.values():
        o.step()
    return params, opts


def test_append_keeps_rows_and_zero_moments():
    params, opts = setup()
    old = {k: v.detach().clone() for k, v in params.items()}
    state = {"grad2d": torch.ones(5), "scene_scale": 1.0}
    append_gaussians(params, opts, {"means": torch.zeros(2, 3), "coeffs": torch.ones(2, 4, 3)}, state)
    assert params["means"].shape == (7, 3) and params["coeffs"].shape == (7, 4, 3)
    assert torch.equal(params["coeffs"][:5], old["coeffs"]) and torch.equal(params["coeffs"][5:], torch.ones(2, 4, 3))
    for k, o in opts.items():
        assert o.param_groups[0]["params"][0] is params[k]
        st = o.state[params[k]]
        assert st["exp_avg"].shape[0] == 7 and st["exp_avg"][5:].abs().sum() == 0 and st["exp_avg"][:5].abs().sum() > 0
    assert state["grad2d"].tolist() == [1, 1, 1, 1, 1, 0, 0]
    # the optimiser still steps the new tensor
    params["means"].sum().backward()
    opts["means"].step()


def test_keep_selects_the_same_rows_everywhere():
    params, opts = setup()
    keep = torch.tensor([True, False, True, False, True])
    before = params["means"].detach()[keep].clone()
    moment = opts["means"].state[params["means"]]["exp_avg"][keep].clone()
    keep_gaussians(params, opts, keep)
    assert torch.equal(params["means"], before)
    assert torch.equal(opts["means"].state[params["means"]]["exp_avg"], moment)
    assert params["coeffs"].shape[0] == 3


def test_reset_rows_zeroes_their_moments_only():
    params, opts = setup()
    reset_rows(params, opts, "means", torch.tensor([1, 3]), torch.zeros(2, 3))
    st = opts["means"].state[params["means"]]
    assert params["means"][1].abs().sum() == 0 and st["exp_avg"][1].abs().sum() == 0
    assert st["exp_avg"][0].abs().sum() > 0
