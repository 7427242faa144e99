"""Lifting a trained router's pixel gates back to the experts' Gaussians, and the post-hoc
fused model (MoE-GS App. D, Eqs. 12–15).

Gaussian j of expert k contributes C_kj(u) = T_kj(u)·α_kj(u) to pixel u (Eq. 12); its
responsibility is R̄_kj = Σ_u G'_k(u)·C_kj(u) / Σ_u C_kj(u) over the pixels of every training
view (Eqs. 13–14). Both sums come from one backward pass per expert and view: splatting a
per-Gaussian channel e_j = 1 gives the image E(u) = Σ_j e_j T_j(u) α_j(u), so
∂ Σ_u G(u)·E(u) / ∂e_j = Σ_u G(u)·C_j(u). The fused model concatenates every expert's
Gaussians with opacity R̄·α (Eq. 15) and is rendered by the plain renderer, no 2D blending.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from ..eval.evaluate import ViewOutput, ViewRenderer
from ..eval.trajectories import assign_to_objects, truth_at
from ..progress import Progress
from ..render.backend import render
from ..render.gaussians import Gaussians, concat, harmonise_sh
from .pool import ExpertPool
from .routers import Router

METHOD = "moe-fused"  # the stored method of a fused model
UNSEEN = 0.0  # the responsibility of a Gaussian no training ray sees: it is not used


@dataclass
class Responsibilities:
    """Per expert: R̄ [N_k] in [0,1] and the total contribution Σ_u C [N_k] it was
    normalised by (0 for Gaussians no training ray sees; their R̄ is UNSEEN)."""

    values: list[Tensor]
    coverage: list[Tensor]

    def state_dict(self) -> dict:
        return {"values": [v.cpu() for v in self.values], "coverage": [c.cpu() for c in self.coverage]}

    @classmethod
    def from_state(cls, state: dict, device) -> Responsibilities:
        return cls([v.to(device) for v in state["values"]], [c.to(device) for c in state["coverage"]])


def gated_contributions(gaussians: Gaussians, gates: Tensor, viewmats: Tensor, Ks: Tensor, width: int,
                        height: int, backend: str = "auto") -> tuple[Tensor, Tensor]:
    """(Σ_u G(u)·C_j(u), Σ_u C_j(u)) [N] for one expert's Gaussians over the pixels of views
    (viewmats [C,4,4], Ks [C,3,3]) with that expert's gates [C,H,W] (no gradient to them)."""
    ones = torch.ones(len(gaussians), 2, device=gaussians.means.device, requires_grad=True)
    out = render(gaussians, viewmats, Ks, width, height, extras=ones,
                 extras_background=torch.zeros(2, device=ones.device), backend=backend)
    total = (gates.detach() * out.extras[..., 0]).sum() + out.extras[..., 1].sum()
    (grad,) = torch.autograd.grad(total, ones)
    return grad[:, 0], grad[:, 1]


def accumulate_responsibilities(router: Router, pool: ExpertPool, split: str = "train",
                                temperature: float | None = None,
                                progress: Progress | None = None) -> Responsibilities:
    """R̄ of every Gaussian of every expert from the router's gates on every view of `split`
    (temperature: the evaluation one by default, the gates the mixture is judged with)."""
    data = pool.data
    views = data.splits[split]
    temp = router.cfg.eval_temp if temperature is None else temperature
    num = [torch.zeros(n, device=data.device) for n in pool.sizes]
    den = [torch.zeros(n, device=data.device) for n in pool.sizes]
    for i in range(len(views)):
        cam, frame = int(views.cams[i]), int(views.frames[i])
        with torch.no_grad():
            gates = router(pool, cam, frame, temp).gates  # [K,1,H,W]
        viewmats, Ks = data.camera_batch(torch.tensor([cam]))
        for k, g in enumerate(pool.view_gaussians(cam, frame)):
            a, b = gated_contributions(g, gates[k], viewmats, Ks, data.width, data.height, pool.backend)
            num[k] += a
            den[k] += b
        if progress is not None:
            progress(i + 1, len(views))
    values = [torch.where(d > 0, n / d.clamp_min(1e-12), torch.full_like(n, UNSEEN)).clamp(0, 1)
              for n, d in zip(num, den, strict=True)]
    return Responsibilities(values, den)


def fused_gaussians(gaussians: list[Gaussians], responsibilities: list[Tensor]) -> Gaussians:
    """Eq. 15: every expert's Gaussians in one set, opacities scaled by their R̄ [N_k]."""
    scaled = [g.with_opacities(g.opacities * r) for g, r in zip(harmonise_sh(gaussians), responsibilities,
                                                                   strict=True)]
    return concat(scaled)


def fused_renderer(pool: ExpertPool, resp: Responsibilities, split: str = "test") -> ViewRenderer:
    """The fused model as a renderer for evaluation: view index of `split` -> its image, on the
    first expert's background (as the Volume Router renders a concatenation)."""
    pool.check_concatenable(METHOD, "the fused model")
    data = pool.data
    views = data.splits[split]

    def render_view(i: int) -> ViewOutput:
        cam, frame = int(views.cams[i]), int(views.frames[i])
        viewmats, Ks = data.camera_batch(torch.tensor([cam]))
        g = fused_gaussians(pool.view_gaussians(cam, frame), resp.values)
        out = render(g, viewmats, Ks, data.width, data.height, background=pool.backgrounds[0], backend=pool.backend)
        return ViewOutput(out.rgb[0])

    return render_view


def fused_depth(pool: ExpertPool, resp: Responsibilities):
    """The fused model's depth: (cameras [C], frame) -> (depth [C,H,W], alpha [C,H,W])."""
    data = pool.data

    def render_depth(cams: Tensor, frame: int) -> tuple[Tensor, Tensor]:
        depths, alphas = [], []
        for cam in cams.tolist():  # per camera: camera-dependent experts deform per view
            viewmats, Ks = data.camera_batch(torch.tensor([cam]))
            g = fused_gaussians(pool.view_gaussians(cam, frame), resp.values)
            out = render(g, viewmats, Ks, data.width, data.height, backend=pool.backend)
            depths.append(out.depth[0, ..., 0])
            alphas.append(out.alpha[0, ..., 0])
        return torch.stack(depths), torch.stack(alphas)

    return render_depth


def responsibility_stats(resp: Responsibilities, names: list[str]) -> dict[str, float]:
    """Per expert label: mean R̄ of the Gaussians training rays see, weighted by how much they
    contribute (the expert's share of the routed volume), unweighted quantiles and the
    fraction above 0.5."""
    out = {}
    for name, r, c in zip(names, resp.values, resp.coverage, strict=True):
        seen = c > 0
        if not seen.any():
            continue
        rs = r[seen]
        q = torch.quantile(rs.float().cpu(), torch.tensor([0.1, 0.5, 0.9]))
        out.update({f"resp_weighted_{name}": float((r * c).sum() / c.sum()), f"resp_p10_{name}": float(q[0]),
                    f"resp_p50_{name}": float(q[1]), f"resp_p90_{name}": float(q[2]),
                    f"resp_above_half_{name}": float((rs > 0.5).float().mean()),
                    f"resp_unseen_{name}": float((~seen).float().mean())})
    return out


def responsibility_by_regime(resp: Responsibilities, pool: ExpertPool) -> dict[str, float]:
    """On scenes with true object motion (synthetic): each expert's contribution-weighted mean
    R̄ over its Gaussians in objects of each motion regime at frame 0 (the room and anything
    in no object count as static), `resp_<label>_<regime>`; {} elsewhere."""
    scene = pool.data.scene
    rel, regimes = scene.gt.get("trajectories"), list(scene.gt.get("regimes", []))
    if not rel or not regimes:
        return {}
    truth = truth_at(scene.root / rel, pool.data.times.cpu())  # poses at every frame; frame 0 is used
    out = {}
    for k, (name, r, c) in enumerate(zip(pool.names, resp.values, resp.coverage, strict=True)):
        means = pool.gaussians(k, 0, 0).means.cpu()
        ids = assign_to_objects(means, truth.centres[:, 0], truth.quats[:, 0], truth.scales[:, 0], truth.kinds)
        static = regimes.index("static") if "static" in regimes else 0
        regime = torch.where(ids >= 0, truth.regime_ids[ids.clamp_min(0)], torch.full_like(ids, static))
        r, c = r.cpu().double(), c.cpu().double()
        for i, label in enumerate(regimes):
            mask = (regime == i) & (c > 0)
            if mask.any():
                out[f"resp_{name}_{label}"] = float((r[mask] * c[mask]).sum() / c[mask].sum())
    return out


def gate_shares(router: Router, pool: ExpertPool, split: str = "test") -> dict[str, float]:
    """Mean gate of each expert over the pixels of each motion regime of `split` (synthetic
    label maps): `gate_<label>_<regime>` — where the router sends each kind of motion."""
    data = pool.data
    views = data.splits[split]
    regimes = list(data.scene.gt.get("regimes", []))
    if views.labels is None or not regimes:
        return {}
    k = len(pool)
    sums = torch.zeros(k, len(regimes), dtype=torch.float64)
    counts = torch.zeros(len(regimes), dtype=torch.float64)
    for i in range(len(views)):
        with torch.no_grad():
            gates = router(pool, int(views.cams[i]), int(views.frames[i]), router.cfg.eval_temp).gates[:, 0]
        labels = views.labels[i].to(gates.device).flatten()
        flat = gates.flatten(1).double()
        sums += torch.stack([torch.bincount(labels, weights=flat[e], minlength=len(regimes))[:len(regimes)]
                             for e in range(k)]).cpu()
        counts += torch.bincount(labels, minlength=len(regimes))[:len(regimes)].double().cpu()
    return {f"gate_{name}_{regime}": float(sums[e, r] / counts[r])
            for e, name in enumerate(pool.names) for r, regime in enumerate(regimes) if counts[r] > 0}


__all__ = ["Responsibilities", "gated_contributions", "accumulate_responsibilities", "fused_gaussians",
           "fused_renderer", "fused_depth", "responsibility_stats", "responsibility_by_regime", "gate_shares",
           "METHOD", "UNSEEN"]
