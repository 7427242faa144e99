"""Depth geometry metrics: multi-view depth consistency (MDC, MoE-GS Eq. 16 and App. D.3) and
depth error against ground truth.

MDC asks whether the depth maps of one method, rendered from several cameras at one time, describe
one surface: every pixel of view i is back-projected through its depth, re-projected into view j,
and its camera-z there is compared (L1) with view j's depth at the nearest pixel. Pixels that
leave view j's frame, lie behind a camera, fail either view's validity mask, or land clearly
behind view j's surface (occluded in j: another surface, not an error) are left out. The L1 is
pooled over the valid pixels of all ordered pairs (i, j), i != j, of the cameras of a frame, and
over frames.

Everything works for any method: `evaluate_depth` takes a function `render_depth(cams, frame) ->
(depth, alpha)` (an expert's depth, a mixture's blended depth, a fused model's), so this module
knows no expert or router. Conventions: OpenCV camera axes, world-to-camera viewmats, camera-z
depth, pixel centres at +0.5 (as `render` and the synthetic ground truth).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import NamedTuple

import torch
from torch import Tensor

from ..data.load import SceneData

OCCLUSION_TOL = 0.05  # relative: a point > 5% behind view j's surface belongs to another surface
ALPHA_THRESHOLD = 0.5  # a rendered pixel counts as covered (its depth is meaningful) above this

# (camera indices [C] (CPU, long), frame) -> (depth [C,H,W], alpha [C,H,W] or None)
DepthRenderer = Callable[[Tensor, int], tuple[Tensor, Tensor | None]]


class PairStats(NamedTuple):
    """Sums that pool over pairs and frames: l1_sum (0-dim tensor), valid (0-dim long tensor:
    pixels compared), considered (pixels of the source views looked at)."""

    l1_sum: Tensor
    valid: Tensor
    considered: int


# -- geometry -------------------------------------------------------------------------------
def pixel_centres(height: int, width: int, device, dtype) -> Tensor:
    """Homogeneous pixel centres (x + 0.5, y + 0.5, 1): [H,W,3]."""
    ys, xs = torch.meshgrid(torch.arange(height, device=device, dtype=dtype) + 0.5,
                            torch.arange(width, device=device, dtype=dtype) + 0.5, indexing="ij")
    return torch.stack([xs, ys, torch.ones_like(xs)], -1)


def backproject(depth: Tensor, K: Tensor, viewmat: Tensor) -> Tensor:
    """World points of every pixel centre of a camera-z depth map.

    depth [H,W], K [3,3], viewmat [4,4] world-to-camera (OpenCV) -> points [H,W,3].
    """
    H, W = depth.shape
    pix = pixel_centres(H, W, depth.device, depth.dtype)
    K, viewmat = K.to(depth), viewmat.to(depth)
    cam = depth[..., None] * (pix @ torch.linalg.inv(K).T)  # K^-1 [u,v,1] has z = 1: scale by z
    R, t = viewmat[:3, :3], viewmat[:3, 3]
    return (cam - t) @ R  # R^T (x - t), written for row vectors


def project(points: Tensor, K: Tensor, viewmat: Tensor) -> tuple[Tensor, Tensor]:
    """Pixel coordinates and camera-z of world points.

    points [...,3], K [3,3], viewmat [4,4] world-to-camera -> uv [...,2] (pixels, centres at
    +0.5; meaningless where z <= 0), z [...].
    """
    K, viewmat = K.to(points), viewmat.to(points)
    cam = points @ viewmat[:3, :3].T + viewmat[:3, 3]
    z = cam[..., 2]
    uvw = cam @ K.T
    return uvw[..., :2] / z[..., None], z


def nearest_pixel(uv: Tensor, width: int, height: int) -> tuple[Tensor, Tensor, Tensor]:
    """The pixel containing each point (pixel k spans [k, k+1), so its centre k + 0.5 is the
    nearest): uv [...,2] -> col [...], row [...] (long, clamped into the image) and inside [...]
    (bool: uv lies in the frame)."""
    u, v = uv[..., 0], uv[..., 1]
    inside = (u >= 0) & (u < width) & (v >= 0) & (v < height)  # False for NaN as well
    u, v = torch.where(inside, u, 0.0), torch.where(inside, v, 0.0)  # no NaN/inf into .long()
    return u.floor().long().clamp(0, width - 1), v.floor().long().clamp(0, height - 1), inside


def usable(depth: Tensor) -> Tensor:
    """Where a depth value can be used: finite and > 0. [...] -> bool [...]."""
    return torch.isfinite(depth) & (depth > 0)


# -- one pair, all pairs --------------------------------------------------------------------
def pair_consistency(depth_i: Tensor, depth_j: Tensor, K_i: Tensor, vm_i: Tensor, K_j: Tensor,
                     vm_j: Tensor, valid_i: Tensor | None = None, valid_j: Tensor | None = None,
                     occlusion_tol: float = OCCLUSION_TOL) -> PairStats:
    """Re-project view i's depth into view j and compare with view j's depth (nearest pixel).

    depth_i [H,W], depth_j [H',W'] camera-z; K [3,3]; vm [4,4] world-to-camera; valid_i [H,W],
    valid_j [H',W'] bool or None (e.g. alpha > 0.5). A pixel of i is compared when its point
    falls inside view j's frame with z > 0, both depths are finite and > 0, both masks hold
    (valid_j at the sampled pixel), and it is not occluded in j: z_j > d_j (1 + occlusion_tol)
    means view j sees a nearer surface there. Returns PairStats: the L1 sum of |z_j - d_j| over
    compared pixels, their count, and H*W (pixels considered).
    """
    Hj, Wj = depth_j.shape
    uv, z = project(backproject(depth_i, K_i, vm_i), K_j, vm_j)
    col, row, inside = nearest_pixel(uv, Wj, Hj)
    d_j = depth_j[row, col]
    ok = inside & (z > 0) & usable(depth_i) & usable(d_j)
    if valid_i is not None:
        ok &= valid_i
    if valid_j is not None:
        ok &= valid_j[row, col]
    ok &= z <= d_j * (1.0 + occlusion_tol)  # behind j's surface: hidden in j, not an error
    err = torch.where(ok, (z - d_j).abs(), torch.zeros_like(z))
    return PairStats(err.sum(), ok.sum(), depth_i.numel())


def all_pairs(count: int) -> list[tuple[int, int]]:
    """Every ordered pair (i, j), i != j, of `count` views."""
    return [(i, j) for i in range(count) for j in range(count) if i != j]


def sample_pairs(count: int, max_pairs: int | None, generator: torch.Generator | None = None
                 ) -> list[tuple[int, int]]:
    """At most `max_pairs` ordered pairs of `count` views, drawn without replacement with
    `generator` (None or 0: all pairs), in sorted order."""
    pairs = all_pairs(count)
    if not max_pairs or max_pairs >= len(pairs):
        return pairs
    pick = torch.randperm(len(pairs), generator=generator)[:max_pairs]
    return [pairs[k] for k in sorted(pick.tolist())]


def pooled_pairs(depths: Tensor, Ks: Tensor, viewmats: Tensor, valid: Tensor | None,
                 pairs: Sequence[tuple[int, int]], occlusion_tol: float = OCCLUSION_TOL) -> PairStats:
    """PairStats summed over `pairs` of indices into depths [C,H,W], Ks [C,3,3], viewmats
    [C,4,4], valid [C,H,W] bool or None. One pair at a time, so memory stays that of one pair."""
    l1 = depths.new_zeros(())
    count = torch.zeros((), dtype=torch.long, device=depths.device)
    considered = 0
    for i, j in pairs:
        s = pair_consistency(depths[i], depths[j], Ks[i], viewmats[i], Ks[j], viewmats[j],
                             None if valid is None else valid[i], None if valid is None else valid[j],
                             occlusion_tol)
        l1, count, considered = l1 + s.l1_sum, count + s.valid, considered + s.considered
    return PairStats(l1, count, considered)


def add_stats(a: PairStats, b: PairStats) -> PairStats:
    """Sum of two PairStats (pooling over frames)."""
    return PairStats(a.l1_sum + b.l1_sum.to(a.l1_sum), a.valid + b.valid.to(a.valid),
                     a.considered + b.considered)


def mdc_from_stats(stats: PairStats) -> tuple[float, float]:
    """(MDC = pooled mean L1 over compared pixels, NaN if none; valid fraction)."""
    valid = int(stats.valid)
    mdc = float(stats.l1_sum) / valid if valid else float("nan")
    return mdc, valid / stats.considered if stats.considered else float("nan")


def multiview_depth_consistency(depths: Tensor, Ks: Tensor, viewmats: Tensor,
                                valid: Tensor | None = None,
                                pairs: Sequence[tuple[int, int]] | None = None,
                                occlusion_tol: float = OCCLUSION_TOL) -> tuple[float, float, int]:
    """MDC of C depth maps of one time (Eq. 16, pooled over pixels).

    depths [C,H,W] camera-z, Ks [C,3,3], viewmats [C,4,4] world-to-camera, valid [C,H,W] bool
    or None; pairs: ordered (i, j) index pairs (None: all i != j). Returns (mdc: mean L1 over
    the valid pixels of all pairs, valid_fraction: valid pixels / pixels considered, n_pairs).
    """
    pairs = all_pairs(len(depths)) if pairs is None else list(pairs)
    Ks, viewmats = Ks.to(depths), viewmats.to(depths)
    mdc, fraction = mdc_from_stats(pooled_pairs(depths, Ks, viewmats, valid, pairs, occlusion_tol))
    return mdc, fraction, len(pairs)


# -- depth error ----------------------------------------------------------------------------
def depth_error_sums(pred: Tensor, true: Tensor, valid: Tensor | None = None
                     ) -> tuple[Tensor, Tensor, Tensor]:
    """Sums of |pred - true| and |pred - true| / true over pixels where `true` is finite and
    > 0 (and `valid`), and their count. pred, true [B,H,W], valid [B,H,W] bool or None."""
    ok = usable(true) & torch.isfinite(pred)
    if valid is not None:
        ok &= valid
    safe_true = torch.where(ok, true, torch.ones_like(true))  # no division by 0 where not used
    err = torch.where(ok, (pred - true).abs(), torch.zeros_like(pred))
    return err.sum(), (err / safe_true).sum(), ok.sum()


def depth_error(pred: Tensor, true: Tensor, valid: Tensor | None = None) -> dict[str, float]:
    """Depth error over the usable pixels (true finite and > 0, and `valid`), pooled over the
    batch: pred, true [B,H,W] (or [H,W]) -> {"depth_l1": mean |pred - true|, "depth_abs_rel":
    mean |pred - true| / true} (NaN without usable pixels)."""
    l1, rel, n = depth_error_sums(pred, true, valid)
    n = int(n)
    return {"depth_l1": float(l1) / n if n else float("nan"),
            "depth_abs_rel": float(rel) / n if n else float("nan")}


# -- a scene --------------------------------------------------------------------------------
def frame_cameras(data: SceneData) -> dict[int, Tensor]:
    """frame -> sorted camera indices [C] (CPU, long) with a view at that frame in any split."""
    splits = list(data.splits.values())
    if not splits:
        return {}
    cams, frames = torch.cat([v.cams for v in splits]), torch.cat([v.frames for v in splits])
    return {int(f): torch.unique(cams[frames == f]) for f in torch.unique(frames)}


def choose_frames(candidates: Sequence[int], frames: int | Sequence[int] | None) -> list[int]:
    """Frames to evaluate among `candidates` (sorted): None = all; an int n = n evenly spaced
    ones (first and last included); a list = those of it that are candidates."""
    candidates = sorted(candidates)
    if frames is None:
        return candidates
    if isinstance(frames, int):
        if frames <= 0 or not candidates:
            return []
        if frames >= len(candidates):
            return candidates
        picks = torch.linspace(0, len(candidates) - 1, frames).round().long().tolist()
        return [candidates[k] for k in dict.fromkeys(picks)]
    wanted = set(int(f) for f in frames)
    return [f for f in candidates if f in wanted]


def as_maps(x: Tensor | None) -> Tensor | None:
    """Accept [C,H,W,1] (a RenderOutput's depth / alpha) as [C,H,W]."""
    return x[..., 0] if x is not None and x.dim() == 4 and x.shape[-1] == 1 else x


def frame_mdc(render_depth: DepthRenderer, data: SceneData, cams: Tensor, frame: int,
              max_pairs: int | None, generator: torch.Generator, alpha_threshold: float,
              occlusion_tol: float) -> tuple[PairStats, int]:
    """PairStats of one frame over (a sample of) the ordered pairs of cameras `cams` [C], and
    the number of pairs. Only the cameras that appear in the drawn pairs are rendered."""
    pairs = sample_pairs(len(cams), max_pairs, generator)
    used = sorted({k for p in pairs for k in p})
    slot = {k: n for n, k in enumerate(used)}  # index into `cams` -> index into the renders
    sub = cams[used]
    depth, alpha = render_depth(sub, frame)
    depth, alpha = as_maps(depth), as_maps(alpha)
    valid = None if alpha is None else alpha > alpha_threshold
    vms, Ks = data.viewmats[sub.to(data.device)].to(depth), data.Ks[sub.to(data.device)].to(depth)
    local = [(slot[i], slot[j]) for i, j in pairs]
    return pooled_pairs(depth, Ks, vms, valid, local, occlusion_tol), len(pairs)


def scene_mdc(render_depth: DepthRenderer, data: SceneData, frames: int | Sequence[int] | None = None,
              max_pairs: int | None = None, seed: int = 0, alpha_threshold: float = ALPHA_THRESHOLD,
              occlusion_tol: float = OCCLUSION_TOL) -> dict[str, float]:
    """MDC pooled over the chosen frames that have at least two cameras (see `evaluate_depth`):
    {"mdc", "mdc_valid_fraction", "mdc_pairs", "mdc_frames", "mdc_max_pairs"}, or {} when no
    frame has two cameras (a monocular scene)."""
    by_frame = {f: c for f, c in frame_cameras(data).items() if len(c) >= 2}
    chosen = choose_frames(list(by_frame), frames)
    if not chosen:
        return {}
    generator = torch.Generator().manual_seed(seed)
    total, n_pairs = None, 0
    for f in chosen:
        stats, n = frame_mdc(render_depth, data, by_frame[f], f, max_pairs, generator,
                             alpha_threshold, occlusion_tol)
        total, n_pairs = stats if total is None else add_stats(total, stats), n_pairs + n
    mdc, fraction = mdc_from_stats(total)
    return {"mdc": mdc, "mdc_valid_fraction": fraction, "mdc_pairs": float(n_pairs),
            "mdc_frames": float(len(chosen)), "mdc_max_pairs": float(max_pairs or 0)}


def split_depth_error(render_depth: DepthRenderer, data: SceneData, split: str = "test") -> dict[str, float]:
    """depth_l1 and depth_abs_rel of the views of `split` against their ground-truth depth,
    pooled over pixels; {} when the split has none loaded. Renders one call per frame."""
    views = data.splits.get(split)
    if views is None or views.depth is None or len(views) == 0:
        return {}
    sums = None
    for f in torch.unique(views.frames).tolist():
        idx = (views.frames == f).nonzero()[:, 0]
        pred = as_maps(render_depth(views.cams[idx], int(f))[0])
        part = depth_error_sums(pred, views.depth[idx.to(views.depth.device)].to(pred))
        sums = part if sums is None else tuple(a + b.to(a) for a, b in zip(sums, part, strict=True))
    l1, rel, n = (float(s) for s in sums)
    return {"depth_l1": l1 / n if n else float("nan"), "depth_abs_rel": rel / n if n else float("nan")}


def evaluate_depth(render_depth: DepthRenderer, data: SceneData,
                   frames: int | Sequence[int] | None = None, max_pairs: int | None = None,
                   seed: int = 0, alpha_threshold: float = ALPHA_THRESHOLD,
                   occlusion_tol: float = OCCLUSION_TOL) -> dict[str, float]:
    """MDC over the scene's cameras and depth error on the test views of one method.

    render_depth(cams [C] long, frame) -> (depth [C,H,W], alpha [C,H,W] or None) renders the
    method's camera-z depth ([C,H,W,1] accepted). frames: None = every frame with at least two
    cameras (a view in any split), an int = that many evenly spaced such frames, a list = those
    frames; max_pairs: at most this many ordered camera pairs per frame, drawn with a generator
    seeded by `seed` (None/0: all). Pixels with alpha <= alpha_threshold are not compared.

    Returns {"mdc", "mdc_valid_fraction", "mdc_pairs", "mdc_frames", "mdc_max_pairs"} (absent
    for a monocular scene: no frame has two cameras) and {"depth_l1", "depth_abs_rel"} (only
    when the test split has ground-truth depth loaded). All values are floats; "mdc_max_pairs"
    is 0 when every pair was used.
    """
    with torch.no_grad():
        out = scene_mdc(render_depth, data, frames, max_pairs, seed, alpha_threshold, occlusion_tol)
        out.update(split_depth_error(render_depth, data))
    return out
