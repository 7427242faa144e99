"""Same seed, same machine: bit-identical training on the CPU, with 2 threads and with 1.

Two threads are what makes a scheduling-dependent reduction show: with one thread every
reduction runs in one order anyway. The runs are short but cross densification (the Gaussian
count changes) and, for `ed3dgs`, the deformation decoders and the k-NN smoothness term.
"""

from __future__ import annotations

import pytest
import torch

from moegs_bench.data.load import load_scene
from moegs_bench.eval.evaluate import evaluate_views
from moegs_bench.experts.registry import expert_config, get_expert
from moegs_bench.experts.views import expert_view_renderer
from moegs_bench.train.loop import train_expert

CPU = torch.device("cpu")
SHORT = {"iterations": 30, "checkpoint_every": 0, "densify": {"start": 10, "stop": 25, "every": 10}}


@pytest.fixture(scope="module")
def data(tiny_scene_dir):
    return load_scene(tiny_scene_dir, CPU, with_gt=True)


def train_once(name: str, data, points: int, threads: int):
    """What the harness does for one expert, with `threads` torch threads: seed, build, train;
    then test PSNR. Returns (TrainResult, PSNR, every tensor of the model)."""
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        cfg = expert_config(name, "tiny", {"max_init_points": points, "train": SHORT})
        torch.manual_seed(0)
        expert = get_expert(name).from_scene(data, cfg, torch.Generator().manual_seed(0))
        result = train_expert(expert, data, seed=0)
        psnr = evaluate_views(expert_view_renderer(expert, data), data).summary["psnr"]
    finally:
        torch.set_num_threads(before)
    state = {k: v.detach().clone() for k, v in expert.state_dict().items() if isinstance(v, torch.Tensor)}
    return result, psnr, state


def differing(a: dict, b: dict) -> list[str]:
    assert a.keys() == b.keys()
    return [k for k in a if not torch.equal(a[k], b[k])]


@pytest.mark.parametrize("name,points", [("static", 1500), ("ed3dgs", 1500)])
def test_training_is_bit_identical_across_runs_and_thread_counts(data, name, points):
    # catches: a reduction whose order depends on thread scheduling (indexing's backward,
    # index_put_ with accumulate, in the reference rasteriser made these differ from step ~9)
    first, psnr_a, state_a = train_once(name, data, points, threads=2)
    second, psnr_b, state_b = train_once(name, data, points, threads=2)
    assert first.num_gaussians != points  # densification ran, so its statistics are covered
    assert first.losses == second.losses
    assert first.num_gaussians == second.num_gaussians
    assert psnr_a == psnr_b
    assert not differing(state_a, state_b), f"{name}: parameters differ between identical runs"
    # one thread gives the same model (docs/results.md "Determinism": observed, not promised
    # for every thread count; a reported loss may differ in its last bit)
    _, psnr_1, state_1 = train_once(name, data, points, threads=1)
    assert psnr_1 == psnr_a
    assert not differing(state_a, state_1), f"{name}: 1 and 2 threads train different models"
