"""`moegs-bench report --figure NAME`: every figure drawn from a tiny run store (two static
experts, the VAPR router, every analysis), checked against the rows and files the store holds;
a store without a figure's data names the run that makes it."""

from __future__ import annotations

import json
import shutil
import sys
import types

import numpy as np
import pandas as pd
import pytest
import torch
from click.testing import CliRunner
from matplotlib.colors import to_rgb
from PIL import Image

from moegs_bench.bench.store import results
from moegs_bench.cli import cli, main
from moegs_bench.data.scene import read_scene
from moegs_bench.moe.blend import gate_image
from moegs_bench.report.figures import (
    FIGURES,
    FigureDataMissing,
    build_figure,
    draw_figure,
    method_color,
)
from moegs_bench.report.figures.images import decode_gates

pytestmark = pytest.mark.usefixtures("one_thread")
VARIANT = "static@small+static@tiny"
LABELS = ["static@small", "static@tiny"]  # the pool's order: index k of gates and label maps
ARGS = ["--experts", "static@tiny,static@small", "--set", "train.iterations=6",
        "--set", "static@tiny:max_init_points=200", "--set", "static@small:max_init_points=120",
        "--router", "vapr", "--router-set", "iterations=3", "--analysis", "all", "--mdc-frames", "2",
        "--mdc-pairs", "4", "--trajectory-gaussians", "50"]


@pytest.fixture(scope="module")
def runs(tiny_scene_dir, tmp_path_factory):
    """The store, with its scene kept where `run` keeps synthetic scenes (RUNS/scenes)."""
    root = tmp_path_factory.mktemp("store") / "runs"
    scene = root / "scenes" / "mixed-tiny"
    shutil.copytree(tiny_scene_dir, scene)
    out = CliRunner().invoke(cli, ["run", *ARGS, "--scene", str(scene), "--runs", str(root)])
    assert out.exit_code == 0, out.output
    return root


@pytest.fixture
def report(monkeypatch, capsys):
    """`moegs-bench report ARGS` as the console runs it (errors: one line, exit 2) -> (exit
    status, stdout, stderr)."""

    def call(*args):
        monkeypatch.setattr(sys, "argv", ["moegs-bench", "report", *map(str, args)])
        try:
            main()
            code = 0
        except SystemExit as exc:
            code = exc.code
        out = capsys.readouterr()
        return code, out.out, out.err

    return call


def run_dir(runs, method, variant):
    return runs / "synthetic" / "mixed" / method / variant / "seed0"


def png(path) -> np.ndarray:
    return np.asarray(Image.open(path))


def middle_view(per_image: pd.DataFrame) -> tuple[str, int]:
    camera = per_image.camera.iloc[0]
    frames = sorted(per_image[per_image.camera == camera].frame)
    return camera, frames[len(frames) // 2]


# -- files ---------------------------------------------------------------------------------------
def test_every_figure_is_registered_and_listed(report):
    assert list(FIGURES) == ["gates", "per-frame", "regions", "trajectories", "mdc", "efficiency", "regimes"]
    code, out, _ = report("--list")
    tables, figures = out.split("Figures")
    assert "main" in tables and "gates" not in tables
    assert all(name in figures for name in FIGURES) and "router-ablation" not in figures


@pytest.mark.parametrize("name", [n for n in FIGURES if n != "efficiency"])
def test_each_figure_is_written_as_png_and_pdf(runs, tmp_path, name, report):
    code, out, err = report("--figure", name, "--runs", runs, "--out", tmp_path)
    assert code == 0, err
    files = sorted(tmp_path.iterdir())
    assert [f.name for f in files] == [f"{name}-synthetic.pdf", f"{name}-synthetic.png"]  # nothing else: no temp file
    assert out.split() == [str(tmp_path / f"{name}-synthetic.png"), str(tmp_path / f"{name}-synthetic.pdf")]
    pdf, image = files
    assert pdf.read_bytes().startswith(b"%PDF-") and pdf.read_bytes().rstrip().endswith(b"%%EOF")
    with Image.open(image) as im:
        assert im.format == "PNG" and im.size[0] > 600 and im.size[1] > 200


# -- what each figure shows comes from the store --------------------------------------------------
def test_per_frame_lines_are_the_runs_per_image_psnr(runs):
    fig = build_figure("per-frame", runs)
    lines = {line.get_label(): line for line in fig.axes[0].get_lines()}
    expected = {"static@small": ("static", "small"), "static@tiny": ("static", "tiny"),
                f"moe-vapr ({VARIANT})": ("moe-vapr", VARIANT), f"oracle-pixel ({VARIANT})": ("oracle-pixel", VARIANT),
                f"moe-fused ({VARIANT})": ("moe-fused", VARIANT)}
    for label, (method, variant) in expected.items():
        rows = pd.read_csv(run_dir(runs, method, variant) / "per_image.csv")
        curve = rows.groupby("frame").psnr.mean()
        np.testing.assert_allclose(lines[label].get_xdata(), curve.index)
        np.testing.assert_allclose(lines[label].get_ydata(), curve.values)
        assert to_rgb(lines[label].get_color()) == to_rgb(method_color(label))


def test_gates_show_the_stored_renders_gates_and_ground_truth(runs):
    fig = build_figure("gates", runs)
    gt_ax, small_ax, tiny_ax, gate_ax, moe_ax = fig.axes[:5]
    router = run_dir(runs, "moe-vapr", VARIANT)
    per_image = pd.read_csv(router / "per_image.csv")
    camera, frame = middle_view(per_image)
    stem = f"{camera}_{frame:05d}.png"
    scene = read_scene(runs / "scenes" / "mixed-tiny")
    np.testing.assert_array_equal(gt_ax.images[0].get_array(), png(scene.image_path(camera, frame)))
    for ax, label, variant in ((small_ax, "static@small", "small"), (tiny_ax, "static@tiny", "tiny")):
        expert = run_dir(runs, "static", variant)
        np.testing.assert_array_equal(ax.images[0].get_array(), png(expert / "renders" / stem))
        rows = pd.read_csv(expert / "per_image.csv")
        psnr = rows[(rows.camera == camera) & (rows.frame == frame)].psnr.item()
        assert ax.get_title() == f"{label}\n{psnr:.2f} dB"
    np.testing.assert_array_equal(moe_ax.images[0].get_array(), png(router / "renders" / stem))
    psnr = per_image[(per_image.camera == camera) & (per_image.frame == frame)].psnr.item()
    assert moe_ax.get_title() == f"moe-vapr\n{psnr:.2f} dB"
    # the gate map in the experts' colours: where the saved map is mostly expert k's palette
    # colour, the figure shows mostly expert k's figure colour
    saved = png(router / "gates" / stem).astype(float) / 255
    shown = np.asarray(gate_ax.images[0].get_array(), dtype=float)
    g = decode_gates(png(router / "gates" / stem), 2)
    colours = np.array([to_rgb(method_color(lab)) for lab in LABELS])
    np.testing.assert_allclose(shown, np.einsum("khw,kc->hwc", g, colours), atol=1e-6)
    assert saved.shape == shown.shape and not np.allclose(saved, shown)


def test_gate_maps_decode_back_to_the_gates():
    torch.manual_seed(0)
    gates = torch.softmax(3 * torch.randn(2, 12, 16), 0)
    image = (gate_image(gates).numpy() * 255 + 0.5).astype(np.uint8)  # as the run store saves it
    np.testing.assert_allclose(decode_gates(image, 2), gates.numpy(), atol=0.02)
    three = torch.softmax(3 * torch.randn(3, 12, 16), 0)
    image = (gate_image(three).numpy() * 255 + 0.5).astype(np.uint8)
    np.testing.assert_allclose(decode_gates(image, 3), three.numpy(), atol=0.03)
    assert decode_gates(image, 4) is None  # four palette colours in three channels: ambiguous


def test_regions_show_the_oracles_label_maps(runs):
    fig = build_figure("regions", runs)
    _, map_ax, _, bar_ax = fig.axes[:4]
    oracle = run_dir(runs, "oracle-pixel", VARIANT)
    camera, frame = middle_view(pd.read_csv(oracle / "per_image.csv"))
    best = png(oracle / "best" / f"{camera}_{frame:05d}.png")
    colours = np.array([to_rgb(method_color(lab)) for lab in LABELS])
    np.testing.assert_allclose(map_ax.images[0].get_array(), colours[best])
    counts = sum(np.bincount(png(p).ravel(), minlength=2) for p in (oracle / "best").glob("*.png"))
    heights = [bar.get_height() for bar in bar_ax.patches]
    np.testing.assert_allclose(heights, 100 * counts / counts.sum())
    assert 0 < heights[0] < 100  # the two experts really split the pixels


def test_mdc_bars_are_the_stored_mdc(runs):
    fig = build_figure("mdc", runs)
    df = results(runs)
    stored = df[df.metric == "mdc"].set_index(["method", "variant"]).value
    bars = {c.get_label(): c.patches[0].get_height() for c in fig.axes[0].containers}
    assert bars == pytest.approx({"static@small": stored[("static", "small")], "static@tiny": stored[("static", "tiny")],
                                  f"moe-vapr ({VARIANT})": stored[("moe-vapr", VARIANT)],
                                  f"moe-fused ({VARIANT})": stored[("moe-fused", VARIANT)]})


def test_regime_bars_are_the_stored_per_regime_psnr(runs):
    fig = build_figure("regimes", runs)
    ax = fig.axes[0]
    groups = [t.get_text() for t in ax.get_xticklabels()]
    df = results(runs)
    psnr = df[df.metric.str.startswith("psnr_")].set_index(["method", "variant", "metric"]).value
    checked = 0
    for container in ax.containers:
        method, variant = {"static@small": ("static", "small"), "static@tiny": ("static", "tiny")}.get(
            container.get_label(), (container.get_label().split(" (")[0], VARIANT))
        assert method != "oracle-pixel"  # an upper bound, not a method
        for bar, regime in zip(container.patches, groups, strict=True):
            assert bar.get_height() == pytest.approx(psnr[(method, variant, f"psnr_{regime}")])
            checked += 1
    assert checked >= 4 * len(groups) and "static" in groups


def test_trajectories_are_the_stored_tracks_in_the_stored_camera(runs):
    fig = build_figure("trajectories", runs)
    tracks = np.load(run_dir(runs, "static", "small") / "analysis" / "trajectories.npz")
    assert str(tracks["view_camera"]) == "cam00" and tracks["view_K"].shape == (3, 3)
    ax = next(a for a in fig.axes if a.get_title().startswith("static@small"))
    # project every stored track: each one in front of the camera is drawn (at most 120 per
    # regime are; the tiny store tracks 50 per regime)
    w2c, K = tracks["view_w2c"].astype(np.float64), tracks["view_K"].astype(np.float64)
    cam = tracks["tracks"].astype(np.float64) @ w2c[:3, :3].T + w2c[:3, 3]
    uv = (cam @ K.T)[..., :2] / cam[..., 2:3] - 0.5  # pixel centres at +0.5, imshow's at 0
    lines = ax.get_lines()
    assert len(lines) == int((cam[..., 2] > 0).all(axis=1).sum()) > 0
    for line in lines:
        drawn = np.stack([line.get_xdata(), line.get_ydata()], -1)
        assert np.abs(uv - drawn[None]).max(axis=(1, 2)).min() < 1e-4
    expert_render = png(run_dir(runs, "static", "small") / "renders" / "cam00_00000.png") / 255
    np.testing.assert_allclose(ax.images[0].get_array(), 0.45 + 0.55 * expert_render)


def test_efficiency_plots_stored_fps_and_memory(runs, tmp_path):
    store = tmp_path / "runs"
    shutil.copytree(runs, store, ignore=shutil.ignore_patterns("checkpoints", "scenes", "renders"))
    fps = {("static", "tiny"): 250.0, ("static", "small"): 400.0, ("moe-vapr", VARIANT): 90.0}
    for (method, variant), value in fps.items():  # what a run on a CUDA machine stores
        path = run_dir(store, method, variant) / "summary.json"
        summary = json.loads(path.read_text())
        summary["metrics"].update(fps=value, render_memory_mb=value / 10)
        path.write_text(json.dumps(summary))
    fig = build_figure("efficiency", store)
    psnr = results(store).query("metric == 'psnr'").set_index(["method", "variant"]).value
    ax_fps, ax_mem = fig.axes[:2]
    points = {c.get_label(): c.get_offsets()[0] for c in ax_fps.collections}
    assert points["static@tiny"].tolist() == pytest.approx([250.0, psnr[("static", "tiny")]])
    assert points[f"moe-vapr ({VARIANT})"].tolist() == pytest.approx([90.0, psnr[("moe-vapr", VARIANT)]])
    assert len(points) == 3  # only methods with a measured FPS
    memory = {c.get_label(): c.get_offsets()[0][0] for c in ax_mem.collections}
    assert memory["static@small"] == pytest.approx(40.0)


# -- the scene is used only when it is the one the runs were made from ---------------------------
@pytest.mark.parametrize("damage", ["remove", "edit"])
def test_ground_truth_only_from_the_runs_own_scene(runs, tmp_path, damage):
    store = tmp_path / "runs"
    shutil.copytree(runs, store, ignore=shutil.ignore_patterns("checkpoints"))
    scene_json = store / "scenes" / "mixed-tiny" / "scene.json"
    if damage == "remove":
        shutil.rmtree(store / "scenes")
    else:  # same dataset and name, other content: not the scene of these runs
        meta = json.loads(scene_json.read_text())
        meta["frames"]["times"][-1] += 0.01
        scene_json.write_text(json.dumps(meta))
    gt_ax = build_figure("gates", store).axes[0]
    assert len(gt_ax.images) == 0 and "scenes" in gt_ax.texts[0].get_text()


# -- missing data names the run that makes it -----------------------------------------------------
@pytest.fixture(scope="module")
def experts_only(runs, tmp_path_factory):
    """A store of one expert run without analyses."""
    store = tmp_path_factory.mktemp("experts-only") / "runs"
    shutil.copytree(run_dir(runs, "static", "tiny"), run_dir(store, "static", "tiny"),
                    ignore=shutil.ignore_patterns("checkpoints", "analysis"))
    return store


@pytest.mark.parametrize("name, says", [
    ("gates", "run `moegs-bench run --experts 2 --router vapr --runs"),
    ("regions", "run `moegs-bench run --experts 2 --router vapr --runs"),
    ("trajectories", "--analysis trajectories"),
    ("mdc", "--analysis fusion,mdc"),
    ("efficiency", "on a CUDA machine"),
])
def test_missing_data_names_the_run_to_make(experts_only, tmp_path, name, says, report):
    code, out, err = report("--figure", name, "--runs", experts_only, "--out", tmp_path)
    message = err.strip()
    assert code == 2 and out == "" and message.startswith("error: "), (code, out, err)
    assert "\n" not in message and says in message and str(experts_only) in message, message
    assert not any(tmp_path.iterdir())
    with pytest.raises(FigureDataMissing):
        draw_figure(name, experts_only, tmp_path)


def test_the_cpu_store_has_no_fps_and_says_where_it_is_measured(runs, tmp_path, report):
    code, _, err = report("--figure", "efficiency", "--runs", runs, "--out", tmp_path)
    assert code == 2 and "no render FPS rows" in err and "CUDA" in err


def test_store_and_name_errors_are_one_line(runs, tmp_path, report):
    cases = [(["--figure", "nope", "--runs", str(runs)], "unknown figure; valid figures: gates"),
             (["--figure", "gates", "--runs", str(tmp_path / "none")], "no such run store"),
             (["--figure", "gates", "--runs", str(runs), "--dataset", "n3v"], "--dataset n3v: no runs")]
    for args, says in cases:
        code, _, err = report(*args, "--out", tmp_path / "figs")
        assert code == 2 and says in err and err.strip().count("\n") == 0, err


def test_several_datasets_need_a_choice(runs, tmp_path, report):
    store = tmp_path / "runs"
    shutil.copytree(run_dir(runs, "static", "tiny"), store / "synthetic" / "mixed" / "static" / "tiny" / "seed0",
                    ignore=shutil.ignore_patterns("checkpoints"))
    shutil.copytree(run_dir(runs, "static", "tiny"), store / "other" / "mixed" / "static" / "tiny" / "seed0",
                    ignore=shutil.ignore_patterns("checkpoints"))
    code, _, err = report("--figure", "per-frame", "--runs", store, "--out", tmp_path / "figs")
    assert code == 2 and "several datasets (other, synthetic); name one" in err
    code, _, err = report("--figure", "per-frame", "--runs", store, "--dataset", "other", "--out", tmp_path / "figs")
    assert code == 0 and (tmp_path / "figs" / "per-frame-other.png").is_file(), err


def test_html_writes_the_report_through_the_report_module(runs, tmp_path, monkeypatch, report):
    calls = []

    def write_report(runs_dir, html_dir, dataset=None):
        calls.append((runs_dir, html_dir, dataset))
        return html_dir / "index.html"

    monkeypatch.setitem(sys.modules, "moegs_bench.report.html", types.SimpleNamespace(write_report=write_report))
    code, out, err = report("--html", tmp_path / "site", "--runs", runs)
    assert code == 0, err
    assert calls == [(runs, tmp_path / "site", None)] and out.strip() == str(tmp_path / "site" / "index.html")


# -- colours ------------------------------------------------------------------------------------
def test_one_fixed_colour_per_method():
    experts = ["static", "stg", "ex4dgs", "ed3dgs", "4dgs"]
    mixtures = ["moe-vapr", "moe-pixel", "moe-volume", "moe-fused", "uniform-average", "oracle-pixel", "oracle-image"]
    colours = [method_color(m) for m in experts + mixtures]
    assert len(set(colours)) == len(colours)
    assert method_color("moe-vapr (ex4dgs+stg)") == method_color("moe-vapr")  # a table label
    assert method_color("static@tiny") != method_color("static@small") != method_color("static")
    assert method_color("some-new-method") == method_color("some-new-method") not in colours
