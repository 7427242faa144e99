"""Row edits of per-Gaussian tensors that keep optimiser moments and strategy statistics
aligned: for experts that add, remove or re-initialise Gaussians outside gsplat's strategy
(error-guided sampling, static->dynamic conversion)."""

from __future__ import annotations

import torch
from torch import Tensor, nn


def _swap(params: nn.ParameterDict, optimizers: dict, name: str, new_value: Tensor, state_fn) -> None:
    """Replace params[name] by new_value; state_fn(v) maps each per-row optimiser tensor."""
    old = params[name]
    new = nn.Parameter(new_value, requires_grad=old.requires_grad)
    opt = optimizers.get(name)
    if opt is not None:
        state = opt.state.pop(old, {})
        for k, v in list(state.items()):
            if k != "step" and isinstance(v, Tensor) and v.dim() > 0 and v.shape[0] == old.shape[0]:
                state[k] = state_fn(v)
        opt.param_groups[0]["params"] = [new]
        opt.state[new] = state
    params[name] = new


def _map_state(strategy_state: dict | None, n_old: int, fn) -> None:
    if strategy_state is None:
        return
    for k, v in list(strategy_state.items()):
        if isinstance(v, Tensor) and v.dim() > 0 and v.shape[0] == n_old:
            strategy_state[k] = fn(v)


@torch.no_grad()
def append_gaussians(params: nn.ParameterDict, optimizers: dict, rows: dict[str, Tensor],
                     strategy_state: dict | None = None) -> None:
    """Append rows (one tensor per parameter name, same leading size M) to every per-Gaussian
    tensor. New rows start with zero optimiser moments and zero strategy statistics."""
    names = list(params.keys())
    missing = [n for n in names if n not in rows]
    if missing:
        raise ValueError(f"append_gaussians: no new rows for {missing}")
    n_old = params[names[0]].shape[0]
    m = rows[names[0]].shape[0]
    for name in names:
        p = params[name]
        extra = rows[name].to(p)
        if extra.shape[0] != m or extra.shape[1:] != p.shape[1:]:
            raise ValueError(f"append_gaussians: {name} rows have shape {tuple(extra.shape)}, "
                             f"expected [{m}, {', '.join(map(str, p.shape[1:]))}]")
        _swap(params, optimizers, name, torch.cat([p.detach(), extra]),
              lambda v: torch.cat([v, v.new_zeros((m, *v.shape[1:]))]))
    _map_state(strategy_state, n_old, lambda v: torch.cat([v, v.new_zeros((m, *v.shape[1:]))]))


@torch.no_grad()
def keep_gaussians(params: nn.ParameterDict, optimizers: dict, keep: Tensor,
                   strategy_state: dict | None = None) -> None:
    """Keep only the rows where the boolean mask `keep` [N] is true, in every tensor."""
    n_old = keep.shape[0]
    for name in list(params.keys()):
        _swap(params, optimizers, name, params[name].detach()[keep], lambda v: v[keep])
    _map_state(strategy_state, n_old, lambda v: v[keep])


@torch.no_grad()
def reset_rows(params: nn.ParameterDict, optimizers: dict, name: str, index: Tensor, values: Tensor) -> None:
    """Overwrite rows `index` of params[name] with `values` and zero their optimiser moments
    (a re-initialised Gaussian should not inherit the old momentum)."""
    p = params[name]
    new = p.detach().clone()
    new[index] = values.to(new)

    def zero_rows(v: Tensor) -> Tensor:
        v = v.clone()
        v[index] = 0
        return v

    _swap(params, optimizers, name, new, zero_rows)
