from __future__ import annotations

import pytest
import torch

from moegs_bench.data.load import load_scene
from moegs_bench.eval.evaluate import RegimeErrors, evaluate_views


def test_regime_psnr_pools_squared_error_per_label():
    acc = RegimeErrors(["static", "fast", "unused"])
    gts = torch.zeros(1, 2, 2, 3)
    preds = gts.clone()
    preds[0, 0, 0] = 0.1  # one "fast" pixel off by 0.1 in every channel
    labels = torch.tensor([[[1, 0], [0, 0]]])
    acc.add(preds, gts, labels)
    out = acc.psnr()
    assert out["psnr_fast"] == pytest.approx(20.0, abs=1e-5)  # MSE 0.01 over that pixel's channels
    assert out["psnr_static"] == pytest.approx(120.0)  # exact: MSE floored at 1e-12
    assert "psnr_unused" not in out


def test_evaluate_views_reports_per_regime_psnr(tiny_scene_dir):
    data = load_scene(tiny_scene_dir, torch.device("cpu"), with_gt=True)
    assert data.splits["train"].labels is None and data.splits["test"].labels is not None
    # a renderer that returns ground truth except a constant shift on every pixel
    views = data.splits["test"]
    ev = evaluate_views(lambda i: views.images[i].float() / 255 * 0.9, data)
    regimes = data.scene.gt["regimes"]
    present = {regimes[i] for i in torch.unique(views.labels).tolist()}
    assert {k[len("psnr_"):] for k in ev.summary if k.startswith("psnr_")} == present
    # every pixel is off by 10%, so each regime's PSNR is finite and near the overall one
    for name in present:
        assert abs(ev.summary[f"psnr_{name}"] - ev.summary["psnr"]) < 6
    assert len(ev.rows) == len(views)
