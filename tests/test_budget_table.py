"""The budget table (paper Table 6) from hand-made results: budgets as rows, experts and the
mixture as columns, scenes and seeds averaged, the paper's rows beside ours on N3V."""

from __future__ import annotations

import math

import pandas as pd
import pytest

from moegs_bench.errors import ConfigError
from moegs_bench.report.tables import build_table, format_table

SET = "ed3dgs+ex4dgs+stg"
MOE = f"moe-vapr ({SET})"


def rows(dataset="synthetic", scenes=("a", "b"), budgets=(1.0, 0.5, 0.1), seeds=(0, 1), drop=()):
    out = []
    for budget in budgets:
        tag = "" if budget == 1.0 else f"b{budget * 100:g}"
        for k, scene in enumerate(scenes):
            for seed in seeds:
                for j, (method, base) in enumerate([("ed3dgs", "default"), ("stg", "default"), ("moe-vapr", SET)]):
                    if (method, budget, scene) in drop:
                        continue
                    variant = base if budget == 1.0 else (tag if base == "default" else f"{base}.{tag}")
                    # value = 30 + 10*budget + scene k + seed/2 + 2 for the mixture
                    value = 30 + 10 * budget + k + seed / 2 + 2 * (j == 2)
                    out.append({"dataset": dataset, "scene": scene, "method": method, "variant": variant,
                                "seed": seed, "metric": "psnr", "value": value})
    out.append({"dataset": dataset, "scene": scenes[0], "method": "oracle-pixel", "variant": f"{SET}.b50", "seed": 0,
                "metric": "psnr", "value": 99.0})
    return pd.DataFrame(out)


def test_budgets_by_method():
    t = build_table("budget", rows())
    assert list(t.index) == ["100%", "50%", "10%"] and list(t.columns) == ["ed3dgs", "stg", MOE]
    # mean over scenes a (k=0), b (k=1) and seeds 0, 1: 30 + 10 f + 0.5 + 0.25
    assert t.loc["50%", "stg"] == pytest.approx(35.75)
    assert t.loc["10%", MOE] == pytest.approx(33.75)
    assert t.loc["100%", "ed3dgs"] == pytest.approx(40.75)
    assert "oracle-pixel" not in " ".join(t.columns)  # baselines are not part of Table 6
    assert "| 50%" in format_table(t, "markdown")


def test_cell_needs_every_scene():
    t = build_table("budget", rows(drop={("stg", 0.5, "b")}))
    assert math.isnan(t.loc["50%", "stg"]) and not math.isnan(t.loc["50%", "ed3dgs"])
    assert any("1 cell(s) left blank" in n for n in t.attrs["footnotes"])


def test_paper_rows_on_n3v():
    t = build_table("budget", rows(dataset="n3v", scenes=("cook_spinach",), budgets=(1.0, 0.5, 0.2)))
    assert list(t.index) == ["100%", "100% (paper)", "50%", "50% (paper)", "20%", "20% (paper)", "10% (paper)"]
    assert t.loc["50% (paper)", "ed3dgs"] == 32.19 and t.loc["20% (paper)", MOE] == 32.60
    assert t.loc["10% (paper)", "stg"] == 31.19
    assert not any("(paper)" in i for i in build_table("budget", rows()).index)
    assert "(paper)" in " ".join(build_table("budget", rows(), paper="always").index)


def test_without_budget_runs_the_error_says_how():
    with pytest.raises(ConfigError, match="--budget"):
        build_table("budget", rows(budgets=(1.0,)))
    with pytest.raises(ConfigError, match="paper"):
        build_table("budget", rows(), paper="maybe")


def test_methods_only_at_full_budget_are_left_out_unless_asked_for():
    """Catches: a store shared with other studies (an N=2 mixture, pruned mixtures, trained at
    100% only) filling Table 6 with columns that have one cell."""
    extra = pd.DataFrame([{"dataset": "synthetic", "scene": s, "method": m, "variant": v, "seed": seed,
                           "metric": "psnr", "value": 31.0}
                          for s in ("a", "b") for seed in (0, 1)
                          for m, v in (("moe-vapr", "ex4dgs+stg"), ("moe-vapr-p55", SET), ("ex4dgs", "default"))])
    df = pd.concat([rows(), extra], ignore_index=True)
    t = build_table("budget", df)
    assert list(t.columns) == ["ed3dgs", "stg", MOE]
    assert any("100% only: ex4dgs, moe-vapr (ex4dgs+stg), moe-vapr-p55" in n for n in t.attrs["footnotes"])
    asked = build_table("budget", df, methods=["stg", "ex4dgs"])
    assert list(asked.columns) == ["stg", "ex4dgs"] and asked.loc["100%", "ex4dgs"] == pytest.approx(31.0)


def test_seeds_run_at_full_budget_only_are_left_out():
    """Catches: a seed study in the same store pulling the 100% row towards other seeds than
    the reduced budgets were trained with."""
    df = rows(seeds=(0, 1))
    seed5 = df[(df.variant.isin(["default", SET])) & (df.seed == 0)].assign(seed=5, value=0.0)
    t = build_table("budget", pd.concat([df, seed5], ignore_index=True))
    assert t.loc["100%", "ed3dgs"] == pytest.approx(40.75)  # seed 5's zeros are not averaged in
    assert any("Seed(s) 5 left out" in n for n in t.attrs["footnotes"])
