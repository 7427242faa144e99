"""Deformation heads shared by `4dgs` and `ed3dgs`: one small MLP per output on a shared hidden
feature, evaluated as two matrix products for all heads together.

Both originals decode a hidden feature h [N,W] with one head per deformation (dx, ds, dr, do,
dSH), each ReLU -> Linear(W,W) -> ReLU -> Linear(W,k). Run head by head that is ten matrix
products, ten bias reductions in the backward and a dozen element-wise launches per decoder
call, at hundreds of thousands of rows. Here the first layers of all heads are one
Linear(W, H*W) (they read the same input) and the last layers one Linear(H*W, sum k) whose
weight is block-diagonal (each head reads only its own block): the same function.

`precision="bfloat16"` runs the two products in bfloat16 with float32 accumulation (tensor
cores); the outputs are returned as float32.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import ConfigError

PRECISIONS = {"float32": torch.float32, "bfloat16": torch.bfloat16}


def check_precision(value: str, option: str) -> torch.dtype:
    """The dtype of a `mlp_precision` setting; one clear error naming `option` otherwise."""
    if value not in PRECISIONS:
        raise ConfigError(f"{option}: {value!r} is not one of {sorted(PRECISIONS)}")
    return PRECISIONS[value]


class DeformHeads(nn.Module):
    """Heads ReLU -> Linear(W,W) -> ReLU -> Linear(W,k_h) over one hidden [N,W].

    outputs: {head name: k_h}. init: "xavier" (4DGaussians' Xavier-uniform weights) or
    "torch" (nn.Linear's default); biases always get nn.Linear's default U(+-1/sqrt(fan_in)).
    Parameters: `w1` [H*W, W] (head h in rows h*W:(h+1)*W), `b1` [H*W], `w2` [sum k, H*W]
    (head h's block at its output rows x columns h*W:(h+1)*W; zero elsewhere and kept zero by
    the fixed `w2_mask`, which also zeroes the gradient there), `b2` [sum k].
    """

    def __init__(self, width: int, outputs: dict[str, int], init: str = "xavier",
                 generator: torch.Generator | None = None):
        super().__init__()
        if init not in ("xavier", "torch"):
            raise ValueError(f"init: {init!r} is not 'xavier' or 'torch'")
        self.width = width
        self.names = tuple(outputs)
        self.sizes = dict(outputs)
        n, total = len(self.names), sum(outputs.values())
        self.w1 = nn.Parameter(torch.empty(n * width, width))
        self.b1 = nn.Parameter(torch.empty(n * width))
        self.w2 = nn.Parameter(torch.zeros(total, n * width))
        self.b2 = nn.Parameter(torch.empty(total))
        self.register_buffer("w2_mask", torch.zeros(total, n * width), persistent=False)
        # head -> (its output rows, its hidden columns) in w2
        self.blocks: dict[str, tuple[slice, slice]] = {}
        start = 0
        for i, k in enumerate(self.names):
            self.blocks[k] = (slice(start, start + self.sizes[k]), slice(i * width, (i + 1) * width))
            start += self.sizes[k]
        with torch.no_grad():  # block by block, as separate nn.Linear layers would be
            bound = 1.0 / math.sqrt(width)
            for rows, cols in self.blocks.values():
                _init_weight(self.w1[cols], init, generator)
                _init_weight(self.w2[rows, cols], init, generator)
                self.w2_mask[rows, cols] = 1.0
            self.b1.uniform_(-bound, bound, generator=generator)
            self.b2.uniform_(-bound, bound, generator=generator)

    def head_weight(self, name: str) -> Tensor:
        """Head `name`'s last-layer weight [k, W] (a view of its block of w2)."""
        rows, cols = self.blocks[name]
        return self.w2[rows, cols]

    def forward(self, hidden: Tensor, heads: tuple[str, ...] | None = None,
                precision: torch.dtype = torch.float32) -> dict[str, Tensor]:
        """hidden [N,W] (before the heads' first ReLU) -> {head: [N,k_h] float32} for the
        requested heads (all by default, in the order given at construction)."""
        names, out = self.flat(hidden, heads, precision)
        return self.split(names, out)

    def selected(self, heads: tuple[str, ...] | None) -> tuple[str, ...]:
        """The requested heads that exist, in construction order (all for None)."""
        return self.names if heads is None else tuple(k for k in self.names if k in heads)

    def flat(self, hidden: Tensor, heads: tuple[str, ...] | None = None,
             precision: torch.dtype = torch.float32) -> tuple[tuple[str, ...], Tensor]:
        """As forward, but the outputs side by side: (head names, [N, sum of their k] float32);
        sums of several decoders' outputs then cost one addition (`split` separates them)."""
        names = self.selected(heads)
        if not names:
            return names, hidden.new_zeros(hidden.shape[0], 0)
        w1, b1, w2, b2 = self.w1, self.b1, self.w2 * self.w2_mask, self.b2
        if len(names) < len(self.names):  # a subset (e.g. trajectories): only its blocks
            blocks = [self.blocks[k] for k in names]
            w1 = torch.cat([w1[cols] for _, cols in blocks])
            b1 = torch.cat([b1[cols] for _, cols in blocks])
            w2 = torch.block_diag(*[w2[rows, cols] for rows, cols in blocks])
            b2 = torch.cat([b2[rows] for rows, _ in blocks])
        x = torch.relu(hidden).to(precision)
        a = torch.relu(F.linear(x, w1.to(precision), b1.to(precision)))
        return names, F.linear(a, w2.to(precision), b2.to(precision)).float()

    def split(self, names: tuple[str, ...], out: Tensor) -> dict[str, Tensor]:
        """[N, sum k] from `flat` -> {head: [N,k_h]} (views)."""
        return dict(zip(names, out.split([self.sizes[k] for k in names], dim=-1), strict=True))


def _init_weight(w: Tensor, init: str, generator: torch.Generator | None) -> None:
    if init == "xavier":
        nn.init.xavier_uniform_(w, generator=generator)
    else:  # nn.Linear.reset_parameters: kaiming_uniform(a=sqrt(5)) = U(+-1/sqrt(fan_in))
        nn.init.kaiming_uniform_(w, a=math.sqrt(5), generator=generator)


__all__ = ["DeformHeads", "PRECISIONS", "check_precision"]
