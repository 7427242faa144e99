"""Depth geometry metrics (eval/depth.py): multi-view depth consistency (MDC, MoE-GS Eq. 16),
depth error, `evaluate_depth` on a synthetic scene, and the `mdc` table.

Analytic scenes are planes ray-cast here in torch (camera-z depth through pixel centres at +0.5,
OpenCV axes), independently of the code under test."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pandas as pd
import pytest
import torch

from moegs_bench.data.load import load_scene
from moegs_bench.eval.depth import (
    backproject,
    choose_frames,
    depth_error,
    evaluate_depth,
    multiview_depth_consistency,
    pair_consistency,
    project,
    sample_pairs,
)
from moegs_bench.report.tables import build_table, format_table

H, W = 48, 64


# -- analytic scenes ----------------------------------------------------------------------------
def rotation(yaw: float, pitch: float) -> torch.Tensor:
    """World-to-camera rotation [3,3] (float64): yaw about y, then pitch about x (degrees)."""
    a, b = math.radians(yaw), math.radians(pitch)
    ry = torch.tensor([[math.cos(a), 0, -math.sin(a)], [0, 1, 0], [math.sin(a), 0, math.cos(a)]])
    rx = torch.tensor([[1, 0, 0], [0, math.cos(b), math.sin(b)], [0, -math.sin(b), math.cos(b)]])
    return (rx @ ry).double()


def viewmat(R: torch.Tensor, centre) -> torch.Tensor:
    """World-to-camera [4,4] of a camera with rotation R at world position `centre`."""
    vm = torch.eye(4, dtype=torch.float64)
    vm[:3, :3] = R
    vm[:3, 3] = -R @ torch.as_tensor(centre, dtype=torch.float64)
    return vm


def intrinsics(f: float, cx: float = W / 2, cy: float = H / 2) -> torch.Tensor:
    return torch.tensor([[f, 0, cx], [0, f, cy], [0, 0, 1]], dtype=torch.float64)


def plane_depth(K, vm, normal, offset, box=None) -> torch.Tensor:
    """Camera-z depth [H,W] of the plane normal·x = offset seen by (K, vm) (inf where missed or
    outside box = (lo [3], hi [3]))."""
    ys, xs = torch.meshgrid(torch.arange(H, dtype=torch.float64) + 0.5,
                            torch.arange(W, dtype=torch.float64) + 0.5, indexing="ij")
    d_cam = torch.stack([(xs - K[0, 2]) / K[0, 0], (ys - K[1, 2]) / K[1, 1], torch.ones_like(xs)], -1)
    R, t = vm[:3, :3], vm[:3, 3]
    centre = -R.T @ t
    d_world = d_cam @ R  # R^T d for row vectors; camera-z of d is 1, so the ray parameter is z
    n = torch.as_tensor(normal, dtype=torch.float64)
    s = (offset - n @ centre) / (d_world @ n)
    hit = centre + s[..., None] * d_world
    ok = s > 0
    if box is not None:
        lo, hi = (torch.as_tensor(b, dtype=torch.float64) for b in box)
        ok &= ((hit >= lo - 1e-9) & (hit <= hi + 1e-9)).all(-1)
    return torch.where(ok, s, torch.full_like(s, math.inf))


def scene_depth(K, vm, planes) -> torch.Tensor:
    """Nearest of several planes [(normal, offset, box)]: [H,W] float32."""
    return torch.stack([plane_depth(K, vm, *p) for p in planes]).amin(0).float()


def common_rotation_rig():
    """Five cameras sharing one (non-trivial) rotation, at different positions along all three
    camera axes and with different focal lengths, facing a plane perpendicular to their optical
    axis: every depth map is constant, so re-projection is exact whatever pixel it lands in."""
    R = rotation(20.0, 10.0)
    offsets = [(0, 0, 0), (0.3, 0, 0.4), (-0.2, 0.15, -0.3), (0.1, -0.2, 0.2), (-0.3, -0.1, 0.5)]
    centres = [R.T @ torch.tensor(o, dtype=torch.float64) for o in offsets]  # camera axes -> world
    Ks = [intrinsics(f) for f in (50.0, 55.0, 48.0, 60.0, 52.0)]
    vms = [viewmat(R, c) for c in centres]
    plane = (R[2], 5.0, None)  # normal = the common optical axis, 5 units ahead of camera 0
    depths = torch.stack([scene_depth(K, vm, [plane]) for K, vm in zip(Ks, vms, strict=True)])
    return depths, torch.stack(Ks).float(), torch.stack(vms).float()


# -- MDC ----------------------------------------------------------------------------------------
def test_mdc_zero_for_consistent_depths_and_grows_with_an_offset():
    # catches: comparing view i's own depth with view j's instead of the re-projected z (the
    # cameras differ along the optical axis, so d_i != d_j), R used for R^T, viewmat taken as
    # camera-to-world, a perturbation not reaching MDC, or pairs involving the view dropped
    depths, Ks, vms = common_rotation_rig()
    assert len(set(depths[:, 0, 0].tolist())) == 5  # the depths really differ between views
    mdc, fraction, n_pairs = multiview_depth_consistency(depths, Ks, vms)
    assert n_pairs == 20
    assert mdc == pytest.approx(0.0, abs=1e-5)
    assert fraction > 0.6

    involving = [(i, j) for i in range(5) for j in range(5) if i != j and 2 in (i, j)]
    previous = mdc
    for delta in (0.02, 0.05, 0.1, 0.2):  # below the occlusion tolerance (5% of ~5 units)
        bumped = depths.clone()
        bumped[2] += delta
        # every compared pixel of a pair with view 2 is off by exactly delta, either direction
        assert multiview_depth_consistency(bumped, Ks, vms, pairs=involving)[0] == pytest.approx(delta, rel=1e-3)
        now = multiview_depth_consistency(bumped, Ks, vms)[0]
        assert previous < now < delta
        previous = now


def test_pushed_back_view_counts_as_occluded_in_the_others():
    # catches: a missing occlusion rule (pixels of view 2 pushed 0.6 units, > 5%, behind every
    # other view's surface are another surface there) or one that also drops points in front
    depths, Ks, vms = common_rotation_rig()
    bumped = depths.clone()
    bumped[2] += 0.6
    from_2 = pair_consistency(bumped[2], bumped[0], Ks[2], vms[2], Ks[0], vms[0])
    into_2 = pair_consistency(bumped[0], bumped[2], Ks[0], vms[0], Ks[2], vms[2])
    assert int(from_2.valid) == 0
    assert int(into_2.valid) > 0.6 * into_2.considered
    assert float(into_2.l1_sum) / int(into_2.valid) == pytest.approx(0.6, rel=1e-4)


def test_tilted_plane_general_poses_at_pixel_quantisation_level():
    # catches: K_i and K_j mixed up (the focal lengths differ), a +0.5 pixel-centre slip, or
    # rotations composed the wrong way: each puts MDC far above the half-pixel sampling error
    planes = [((0.0, 0.3, 1.0), 6.0, None)]  # tilted: depth varies over every image
    poses = [(0, 0, (0, 0, 0), 50.0), (8, -3, (0.5, 0.1, 0.2), 56.0), (-6, 4, (-0.4, -0.2, 0.1), 46.0)]
    Ks = [intrinsics(f) for *_, f in poses]
    vms = [viewmat(rotation(y, p), c) for y, p, c, _ in poses]
    depths = torch.stack([scene_depth(K, vm, planes) for K, vm in zip(Ks, vms, strict=True)])
    mdc, fraction, _ = multiview_depth_consistency(depths, torch.stack(Ks).float(), torch.stack(vms).float())
    assert fraction > 0.6
    # nearest-pixel sampling is off by at most half a pixel: |dD/dpixel| / 2 here
    step = (depths[:, 1:, :] - depths[:, :-1, :]).abs().amax().item()
    assert mdc < step / 2
    assert mdc < 0.01 * depths.mean().item()


def test_reprojection_of_one_pixel_matches_hand_computation():
    # catches: pixel centres at 0 instead of +0.5, K_i / K_j swapped, world-to-camera read as
    # camera-to-world, the wrong sampled pixel in view j, or z taken before the transform
    K_i = torch.tensor([[100.0, 0, 32], [0, 100, 24], [0, 0, 1]])
    K_j = torch.tensor([[80.0, 0, 30], [0, 80, 20], [0, 0, 1]])
    vm_i = torch.eye(4)
    vm_i[:3, 3] = torch.tensor([0.5, -0.2, 1.0])
    vm_j = torch.eye(4)
    vm_j[:3, :3] = torch.tensor([[0.0, 0, -1], [0, 1, 0], [1, 0, 0]])  # 90 degrees about y
    vm_j[:3, 3] = torch.tensor([4.5, 0.0, 3.5])
    depth_i = torch.full((H, W), 5.0)
    # pixel (row 20, col 10), centre (10.5, 20.5), depth 5, in camera i:
    #   x = (10.5 - 32) / 100 * 5 = -1.075, y = (20.5 - 24) / 100 * 5 = -0.175, z = 5
    # world = camera - t_i = (-1.575, 0.025, 4)
    # camera j = R_j world + t_j = (-4, 0.025, -1.575) + (4.5, 0, 3.5) = (0.5, 0.025, 1.925)
    # pixel in j: u = 30 + 80 * 0.5 / 1.925 = 50.779..., v = 20 + 80 * 0.025 / 1.925 = 21.039...
    world = backproject(depth_i, K_i, vm_i)[20, 10]
    assert world.tolist() == pytest.approx([-1.575, 0.025, 4.0], abs=1e-5)
    uv, z = project(world, K_j, vm_j)
    assert uv.tolist() == pytest.approx([30 + 40 / 1.925, 20 + 2 / 1.925], abs=1e-4)
    assert float(z) == pytest.approx(1.925, abs=1e-5)

    only = torch.zeros(H, W, dtype=torch.bool)
    only[20, 10] = True
    depth_j = torch.full((H, W), 100.0)  # elsewhere far behind: a wrong pixel gives ~98
    depth_j[21, 50] = 2.025
    s = pair_consistency(depth_i, depth_j, K_i, vm_i, K_j, vm_j, valid_i=only)
    assert int(s.valid) == 1 and s.considered == H * W
    assert float(s.l1_sum) == pytest.approx(0.1, abs=1e-4)


def test_out_of_frame_occluded_and_masked_pixels_are_excluded():
    # catches: no occlusion rule (65 background pixels hidden behind the foreground in j would
    # add 65 * 5 = 325), clamping instead of dropping points outside j's frame, and valid_j
    # read at view i's pixel instead of the pixel sampled in j
    K = intrinsics(50.0)
    vm_i, vm_j = viewmat(torch.eye(3, dtype=torch.float64), (0, 0, 0)), viewmat(torch.eye(3, dtype=torch.float64), (1, 0, 0))
    # background z = 10, foreground rectangle z = 5; baseline 1 -> disparities 5 and 10 pixels,
    # so pixel centres land on pixel centres. Foreground in i: cols 27..41, rows 19..31; in j
    # cols 17..31. Background of i at cols 22..26 (rows 19..31) lands on j's foreground:
    # 5 * 13 = 65 occluded. Background of i at cols 0..4 leaves j's frame: 5 * 48 = 240.
    planes = [((0, 0, 1), 10.0, None), ((0, 0, 1), 5.0, ((-0.52, -0.52, 4), (0.98, 0.78, 6)))]
    d_i, d_j = scene_depth(K, vm_i, planes), scene_depth(K, vm_j, planes)
    assert int((d_i == 5).sum()) == 15 * 13 and bool((d_j[19:32, 17:32] == 5).all())
    K, vm_i, vm_j = K.float(), vm_i.float(), vm_j.float()

    s = pair_consistency(d_i, d_j, K, vm_i, K, vm_j)
    assert (int(s.valid), s.considered) == (H * W - 240 - 65, H * W)
    assert float(s.l1_sum) == pytest.approx(0.0, abs=1e-3)

    everything = pair_consistency(d_i, d_j, K, vm_i, K, vm_j, occlusion_tol=math.inf)
    assert int(everything.valid) == H * W - 240
    assert float(everything.l1_sum) == pytest.approx(65 * 5.0, rel=1e-4)

    valid_j = torch.ones(H, W, dtype=torch.bool)
    valid_j[:, :10] = False  # j's cols 0..9 are i's background cols 5..14: 10 * 48 fewer
    assert int(pair_consistency(d_i, d_j, K, vm_i, K, vm_j, valid_j=valid_j).valid) == H * W - 305 - 480
    valid_i = torch.ones(H, W, dtype=torch.bool)
    valid_i[:, -1] = False  # i's last column: 48 fewer
    assert int(pair_consistency(d_i, d_j, K, vm_i, K, vm_j, valid_i=valid_i).valid) == H * W - 305 - 48


# -- depth error --------------------------------------------------------------------------------
def test_depth_error_on_known_arrays():
    # catches: means over all pixels instead of usable ones (true <= 0 or NaN), abs rel divided
    # by the prediction, or the valid mask ignored
    pred = torch.tensor([[[1.0, 2.0], [3.0, 4.0]], [[2.0, 2.0], [2.0, 2.0]]])
    true = torch.tensor([[[1.0, 1.0], [2.0, 0.0]], [[math.nan, 4.0], [2.0, 2.0]]])
    # usable: 1|1 (0), 2|1 (1, rel 1), 3|2 (1, rel 0.5), 2|4 (2, rel 0.5), 2|2, 2|2
    out = depth_error(pred, true)
    assert out["depth_l1"] == pytest.approx(4 / 6)
    assert out["depth_abs_rel"] == pytest.approx(2 / 6)
    valid = torch.ones_like(pred, dtype=torch.bool)
    valid[1] = False
    out = depth_error(pred, true, valid)
    assert out == pytest.approx({"depth_l1": 2 / 3, "depth_abs_rel": 1.5 / 3})
    assert math.isnan(depth_error(pred, torch.zeros_like(true))["depth_l1"])


# -- subsampling --------------------------------------------------------------------------------
def test_frame_choice_and_pair_sampling():
    # catches: n frames that are not spread over the sequence, pairs drawn with repetition or
    # with i == j, a sample that depends on anything but the seed
    assert choose_frames(range(8), None) == list(range(8))
    assert choose_frames(range(8), 3) == [0, 4, 7]
    assert choose_frames(range(8), 20) == list(range(8))
    assert choose_frames([1, 3, 5], [3, 4]) == [3]
    assert sample_pairs(4, None) == sample_pairs(4, 0) == sample_pairs(4, 99)
    assert len(sample_pairs(4, None)) == 12
    draw = sample_pairs(6, 7, torch.Generator().manual_seed(3))
    assert len(set(draw)) == 7 and all(i != j for i, j in draw)
    assert draw == sample_pairs(6, 7, torch.Generator().manual_seed(3))


# -- a synthetic scene --------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tiny_data(tiny_scene_dir):
    return load_scene(tiny_scene_dir, torch.device("cpu"), with_gt=True)


def gt_renderer(data, bump: float = 0.0, bumped=(1, 3, 5), calls=None):
    """render_depth returning the scene's ground-truth depth (+bump on cameras `bumped`) and
    alpha [C,H,W,1] of ones (a RenderOutput's shape); logs (cams, frame) into `calls`."""
    scene = data.scene
    names = [c.name for c in scene.cameras]

    def render_depth(cams, frame):
        if calls is not None:
            calls.append((cams.tolist(), frame))
        maps = [torch.from_numpy(np.load(scene.root / scene.gt["depth"][names[c]][frame])) + (bump if c in bumped else 0.0)
                for c in cams.tolist()]
        depth = torch.stack(maps).float()
        return depth, torch.ones(*depth.shape, 1)

    return render_depth


def test_evaluate_depth_ground_truth_is_consistent_and_a_wrong_depth_is_not(tiny_data):
    # catches: wrong scene conventions (pixel centres, viewmat direction: the ground truth would
    # not agree with itself), missing cameras of the train split, the subsample not recorded
    # or not honoured, and MDC blind to views that disagree
    calls = []
    out = evaluate_depth(gt_renderer(tiny_data, calls=calls), tiny_data, frames=2, max_pairs=6, seed=1)
    assert {k: out[k] for k in ("mdc_pairs", "mdc_frames", "mdc_max_pairs")} == {
        "mdc_pairs": 12.0, "mdc_frames": 2.0, "mdc_max_pairs": 6.0}
    assert out["depth_l1"] == 0.0 and out["depth_abs_rel"] == 0.0
    # ground truth agrees with itself up to nearest-pixel sampling on slanted walls and edges
    assert out["mdc"] < 0.2 and out["mdc"] < 0.05 * float(tiny_data.splits["test"].depth.mean())
    assert out["mdc_valid_fraction"] > 0.4
    mdc_frames = sorted({f for cams, f in calls if len(cams) > 1})
    assert mdc_frames == [0, 7]  # two frames: the first and the last
    rendered = {c for cams, f in calls if len(cams) > 1 for c in cams}
    assert rendered <= set(range(6)) and rendered - {0}  # train cameras (1..5) take part too

    wrong = evaluate_depth(gt_renderer(tiny_data, bump=0.5), tiny_data, frames=2, max_pairs=6, seed=1)
    assert wrong["mdc"] > 2 * out["mdc"] and wrong["mdc"] > out["mdc"] + 0.1
    assert wrong["depth_l1"] == 0.0  # the test camera (cam00) is not bumped
    assert evaluate_depth(gt_renderer(tiny_data), tiny_data, frames=2, max_pairs=6, seed=1) == out

    every = evaluate_depth(gt_renderer(tiny_data), tiny_data, frames=[3], max_pairs=None)
    assert (every["mdc_pairs"], every["mdc_frames"], every["mdc_max_pairs"]) == (30.0, 1.0, 0.0)


def test_evaluate_depth_monocular_scene_has_no_mdc(tiny_data):
    # catches: pairs of a camera with itself (MDC 0 for free) or a crash when no frame has two
    # cameras; the test split holds one camera, so it stands in for a monocular scene
    mono = dataclasses.replace(tiny_data, splits={"test": tiny_data.splits["test"]})
    out = evaluate_depth(gt_renderer(mono), mono)
    assert set(out) == {"depth_l1", "depth_abs_rel"}
    no_gt = dataclasses.replace(tiny_data, splits={"test": dataclasses.replace(tiny_data.splits["test"], depth=None)})
    assert evaluate_depth(gt_renderer(no_gt), no_gt) == {}


# -- the table ----------------------------------------------------------------------------------
def _depth_rows() -> pd.DataFrame:
    """mdc = base + scene offset + 0.02 seed; stg has two seeds on scene a."""
    rows = []
    values = {("stg", "default"): 0.30, ("moe", "n3"): 0.10}
    for (method, variant), base in values.items():
        for scene, offset in (("a", 0.0), ("b", 0.2)):
            for seed in ((0, 1) if method == "stg" and scene == "a" else (0,)):
                common = dict(dataset="synthetic", scene=scene, method=method, variant=variant, seed=seed)
                metrics = {"mdc": base + offset + 0.02 * seed, "mdc_valid_fraction": 0.8,
                           "depth_l1": 2 * base, "depth_abs_rel": base / 10,
                           "mdc_max_pairs": 20.0, "mdc_frames": 4.0, "psnr": 30.0}
                rows += [{**common, "metric": m, "value": v} for m, v in metrics.items()]
    return pd.DataFrame(rows)


def test_mdc_table():
    # catches: a plain mean over rows (stg's extra seed on scene a would weigh it twice), the
    # wrong columns (psnr or the sampling settings shown), a footnote without the sampling
    table = build_table("mdc", _depth_rows())
    assert list(table.columns) == ["MDC", "Valid fraction", "Depth L1", "Depth abs rel"]
    assert list(table.index) == ["stg", "moe (n3)"]
    # stg: scene a (0.30 + 0.32) / 2 = 0.31, scene b 0.50 -> 0.405
    assert table.loc["stg", "MDC"] == pytest.approx(0.405)
    assert table.loc["moe (n3)", "MDC"] == pytest.approx(0.20)
    assert table.loc["moe (n3)", "Depth L1"] == pytest.approx(0.2)
    notes = " ".join(table.attrs["footnotes"])
    assert "at most 20 ordered pairs per frame" in notes and "4 frames per scene" in notes
    assert "Lower is better" in notes
    text = format_table(table)
    assert "MDC" in text and "0.405" in text

    rows = _depth_rows()
    rows = rows[~((rows["method"] == "moe") & rows["metric"].str.startswith("mdc"))]  # monocular
    rows.loc[rows["metric"] == "mdc_max_pairs", "value"] = 0.0
    table = build_table("mdc", rows)
    assert math.isnan(table.loc["moe (n3)", "MDC"]) and table.loc["moe (n3)", "Depth L1"] == pytest.approx(0.2)
    assert "all ordered pairs per frame" in " ".join(table.attrs["footnotes"])
