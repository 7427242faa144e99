"""A router and a table registered from this module alone reach `run --router`, the stored
results, `report --table router-ablation` and `report --table NAME` with no other edit."""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd
import pytest
import torch
from click.testing import CliRunner
from torch import nn

from moegs_bench.cli import cli
from moegs_bench.moe.blend import blend, softmax_gates
from moegs_bench.moe.routers import ROUTERS, Router, RouterConfig, RouterOutput, register_router
from moegs_bench.report.tables import TABLES, register_table


@dataclass
class ToyConfig(RouterConfig):
    lr: float = 0.05


class ToyRouter(Router):
    """One learned logit per expert, the same at every pixel."""

    name = "toy"
    title = "Toy router"
    Config = ToyConfig

    def __init__(self, sizes, cfg, device=None):
        super().__init__(sizes, cfg)
        self.bias = nn.Parameter(torch.zeros(len(sizes), device=device))

    def forward(self, pool, cam, frame, temperature):
        views = pool.render_view(cam, frame)
        k, c, h, w = views.images.shape[:4]
        gates = softmax_gates(self.bias[:, None, None, None].expand(k, c, h, w), temperature)
        return RouterOutput(blend(views.images, gates), gates)

    def param_groups(self):
        return [{"name": "bias", "params": [self.bias]}]

    def learning_rates(self, step):
        return {"bias": self.cfg.lr}


def toy_count(df: pd.DataFrame, dataset: str | None = None) -> pd.DataFrame:
    runs = df.drop_duplicates("run_dir").groupby("method").size()
    return pd.DataFrame({"runs": runs}).rename_axis("method")


@pytest.fixture
def registered():
    register_router(ToyRouter)
    register_table("toy-count", "Completed runs per method")(toy_count)
    yield
    ROUTERS.pop("toy")
    TABLES.pop("toy-count")


def test_a_router_and_a_table_from_one_module(registered, tiny_scene_dir, tmp_path):
    runner = CliRunner()
    args = ["run", "--experts", "static@tiny,static@small", "--set", "train.iterations=4",
            "--set", "max_init_points=150", "--router", "toy", "--router-set", "iterations=2",
            "--router-set", "toy:lr=0.1", "--scene", str(tiny_scene_dir), "--runs", str(tmp_path)]
    out = runner.invoke(cli, args)
    assert out.exit_code == 0, out.output
    assert "| moe-toy " in out.output
    df = pd.read_csv(tmp_path / "results.csv")
    toy = df[df.method == "moe-toy"].set_index("metric").value
    assert toy["iterations"] == 2 and "psnr" in toy and "psnr_static" in toy
    ablation = runner.invoke(cli, ["report", "--table", "router-ablation", "--runs", str(tmp_path)])
    assert ablation.exit_code == 0, ablation.output
    assert "| Toy router " in ablation.output and "Toy router (paper" not in ablation.output
    listed = runner.invoke(cli, ["report", "--list"])
    assert "toy-count" in listed.output
    counted = runner.invoke(cli, ["report", "--table", "toy-count", "--runs", str(tmp_path)])
    assert counted.exit_code == 0, counted.output
    assert "| moe-toy " in counted.output and "| static " in counted.output


def test_without_registration_the_router_is_unknown(tiny_scene_dir, tmp_path):
    out = CliRunner().invoke(cli, ["run", "--experts", "static", "--router", "toy", "--scene",
                                   str(tiny_scene_dir), "--runs", str(tmp_path)])
    assert out.exit_code != 0 and "--router toy" in str(out.exception or out.output)
