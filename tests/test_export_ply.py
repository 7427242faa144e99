"""Gaussians as 3DGS PLY files (render/ply.py) and `moegs-bench export` of stored runs
(bench/export.py): the layout 3DGS viewers read, exact round trips, same renders."""

from __future__ import annotations

import shutil
import sys

import numpy as np
import pytest
import torch
from numpy.lib.recfunctions import repack_fields
from plyfile import PlyData, PlyElement

from moegs_bench.bench.experiment import Experiment, run_experiment
from moegs_bench.bench.export import export_run, frame_name, load_source, resolve_run
from moegs_bench.cli import main
from moegs_bench.data.load import load_scene
from moegs_bench.errors import ConfigError
from moegs_bench.experts.segments import load_expert
from moegs_bench.experts.views import expert_view_renderer
from moegs_bench.moe.pool import ExpertPool
from moegs_bench.moe.responsibility import Responsibilities, fused_gaussians, fused_renderer
from moegs_bench.render.backend import render
from moegs_bench.render.gaussians import Gaussians
from moegs_bench.render.ply import PlyError, ply_properties, read_ply, write_ply
from moegs_bench.render.sh import C0

pytestmark = pytest.mark.usefixtures("one_thread")
CPU = torch.device("cpu")

# GaussianModel.construct_list_of_attributes of the 3DGS code at SH degree 3
THREE_DGS_DEGREE3 = (["x", "y", "z", "nx", "ny", "nz", "f_dc_0", "f_dc_1", "f_dc_2"]
                     + [f"f_rest_{i}" for i in range(45)]
                     + ["opacity", "scale_0", "scale_1", "scale_2", "rot_0", "rot_1", "rot_2", "rot_3"])


def random_gaussians(n: int = 40, degree: int = 3, seed: int = 0) -> Gaussians:
    g = torch.Generator().manual_seed(seed)
    return Gaussians(
        means=torch.randn(n, 3, generator=g) * 0.3 + torch.tensor([0.0, 0.0, 3.0]),
        quats=torch.randn(n, 4, generator=g),  # unnormalised, as experts produce them
        scales=torch.rand(n, 3, generator=g) * 0.08 + 0.01,
        opacities=torch.rand(n, generator=g) * 0.98 + 0.01,
        sh=torch.randn(n, 16, 3, generator=g) * 0.3,
        sh_degree=degree,
    )


def camera(width: int = 48, height: int = 36):
    viewmats = torch.eye(4)[None]
    Ks = torch.tensor([[[50.0, 0.0, width / 2], [0.0, 50.0, height / 2], [0.0, 0.0, 1.0]]])
    return viewmats, Ks, width, height


def assert_same(a: Gaussians, b: Gaussians, degree: int):
    assert a.sh_degree == b.sh_degree == degree
    k = (degree + 1) ** 2
    for name in ("means", "quats", "scales", "opacities"):
        torch.testing.assert_close(getattr(a, name), getattr(b, name), rtol=1e-6, atol=1e-6, msg=name)
    torch.testing.assert_close(a.sh[:, :k], b.sh[:, :k], rtol=1e-6, atol=1e-6)


# -- the file layout -----------------------------------------------------------------------------
def test_file_has_the_3dgs_properties_in_order_binary_little_endian(tmp_path):
    # catches: another property order or name, missing normals, doubles instead of floats, text PLY
    path = write_ply(random_gaussians(), tmp_path / "g.ply")
    ply = PlyData.read(str(path))
    assert [p.name for p in ply["vertex"].properties] == THREE_DGS_DEGREE3 == ply_properties(3)
    assert not ply.text and ply.byte_order == "<"
    assert all(ply["vertex"].data.dtype[name] == np.dtype("<f4") for name in THREE_DGS_DEGREE3)
    assert path.read_bytes().startswith(b"ply\nformat binary_little_endian 1.0\n")


def test_values_are_raw_3dgs_parameters_and_rest_is_channel_major(tmp_path):
    # catches: activated opacity/scales written as is, f_rest interleaved (coefficient-major)
    # instead of all red coefficients first, normalised quaternions, f_dc from the wrong band
    g = random_gaussians(n=5)
    sh = torch.zeros(5, 16, 3)
    for k in range(16):
        for c in range(3):
            sh[:, k, c] = 100 * c + k
    g = Gaussians(g.means, g.quats, g.scales, g.opacities, sh=sh, sh_degree=3)
    v = PlyData.read(str(write_ply(g, tmp_path / "g.ply")))["vertex"].data
    rest = np.stack([v[f"f_rest_{i}"] for i in range(45)], 1)
    np.testing.assert_array_equal(rest[0], [100 * c + k for c in range(3) for k in range(1, 16)])
    np.testing.assert_array_equal(np.stack([v[f"f_dc_{i}"] for i in range(3)], 1)[0], [0, 100, 200])
    o = g.opacities.double()
    np.testing.assert_allclose(v["opacity"], torch.log(o / (1 - o)).numpy(), rtol=1e-6)
    np.testing.assert_allclose(np.stack([v[f"scale_{i}"] for i in range(3)], 1), g.scales.log().numpy(), rtol=1e-6)
    np.testing.assert_array_equal(np.stack([v[f"rot_{i}"] for i in range(4)], 1), g.quats.numpy())
    np.testing.assert_array_equal(np.stack([v["nx"], v["ny"], v["nz"]], 1), 0)


def test_reads_a_file_written_the_way_3dgs_save_ply_writes_it(tmp_path):
    # an independent writer following 3DGS save_ply: catches a reader whose f_rest layout only
    # matches our own writer, or that skips the sigmoid / exp activations
    n, g = 6, torch.Generator().manual_seed(3)
    xyz, dc, rest = torch.randn(n, 3, generator=g), torch.randn(n, 1, 3, generator=g), torch.randn(n, 3, 3, generator=g)
    opacity, scale, rot = torch.randn(n, 1, generator=g), torch.randn(n, 3, generator=g), torch.randn(n, 4, generator=g)
    attributes = torch.cat([xyz, torch.zeros(n, 3), dc.transpose(1, 2).flatten(1), rest.transpose(1, 2).flatten(1),
                            opacity, scale, rot], 1).numpy()
    elements = np.empty(n, dtype=[(a, "f4") for a in ply_properties(1)])
    elements[:] = list(map(tuple, attributes))
    PlyData([PlyElement.describe(elements, "vertex")]).write(str(tmp_path / "point_cloud.ply"))
    out = read_ply(tmp_path / "point_cloud.ply")
    assert out.sh_degree == 1 and out.sh.shape == (n, 4, 3)
    torch.testing.assert_close(out.sh, torch.cat([dc, rest], 1))
    torch.testing.assert_close(out.opacities, torch.sigmoid(opacity[:, 0]))
    torch.testing.assert_close(out.scales, scale.exp())
    torch.testing.assert_close(out.quats, rot)
    torch.testing.assert_close(out.means, xyz)


# -- round trips -------------------------------------------------------------------------------------
@pytest.mark.parametrize("degree", [0, 1, 3])
def test_round_trip_gives_the_same_gaussians_and_image(tmp_path, degree):
    # catches: a lossy conversion, bands above the active degree written (and then rendered)
    g = random_gaussians(degree=degree)
    back = read_ply(write_ply(g, tmp_path / "g.ply"))
    assert len(PlyData.read(str(tmp_path / "g.ply"))["vertex"].properties) == len(ply_properties(degree))
    assert_same(back, g, degree)
    a, b = render(g, *camera()).rgb, render(back, *camera()).rgb
    assert a.abs().max() > 0.05 and (a - b).abs().max() < 1e-5


def test_padding_to_degree_3_keeps_the_colours(tmp_path):
    # viewers that expect 45 f_rest: the extra bands must be zeros, not the unused coefficients
    g = random_gaussians(degree=1)
    back = read_ply(write_ply(g, tmp_path / "g.ply", sh_degree=3))
    assert back.sh_degree == 3 and back.sh[:, 4:].abs().max() == 0
    assert (render(g, *camera()).rgb - render(back, *camera()).rgb).abs().max() < 1e-5
    with pytest.raises(PlyError, match="sh_degree 0"):
        write_ply(g, tmp_path / "low.ply", sh_degree=0)


def test_rgb_features_become_degree_0_sh(tmp_path):
    # catches: RGB written as f_dc without the 3DGS (rgb - 0.5) / C0 mapping
    g = random_gaussians()
    rgb = torch.rand(len(g), 3, generator=torch.Generator().manual_seed(1))
    g = Gaussians(g.means, g.quats, g.scales, g.opacities, features=rgb)
    back = read_ply(write_ply(g, tmp_path / "g.ply"))
    assert back.sh_degree == 0
    torch.testing.assert_close(back.sh[:, 0] * C0 + 0.5, rgb, rtol=1e-5, atol=1e-6)
    assert (render(g, *camera()).rgb - render(back, *camera()).rgb).abs().max() < 1e-5
    learned = Gaussians(g.means, g.quats, g.scales, g.opacities, features=torch.rand(len(g), 9))
    with pytest.raises(PlyError, match="9 learned feature"):
        write_ply(learned, tmp_path / "f.ply")


def test_extreme_opacities_stay_finite(tmp_path):
    # logit(0) and logit(1) are infinite: a file with inf breaks viewers
    g = random_gaussians(n=3)
    g = g.with_opacities(torch.tensor([0.0, 1.0, 0.5]))
    path = write_ply(g, tmp_path / "g.ply")
    assert np.isfinite(PlyData.read(str(path))["vertex"].data["opacity"]).all()
    back = read_ply(path)
    assert back.opacities[1] == 1.0 and back.opacities[0] < 1e-6


def test_bad_files_name_the_file_and_property(tmp_path):
    v = PlyData.read(str(write_ply(random_gaussians(degree=1), tmp_path / "g.ply")))["vertex"].data
    names = [n for n in v.dtype.names if n != "scale_1"]
    PlyData([PlyElement.describe(repack_fields(v[names]), "vertex")]).write(str(tmp_path / "no_scale.ply"))
    with pytest.raises(PlyError, match=r"no_scale\.ply: vertex property 'scale_1' is missing"):
        read_ply(tmp_path / "no_scale.ply")
    names = [n for n in v.dtype.names if n != "f_rest_8"]
    PlyData([PlyElement.describe(repack_fields(v[names]), "vertex")]).write(str(tmp_path / "rest.ply"))
    with pytest.raises(PlyError, match="8 f_rest"):
        read_ply(tmp_path / "rest.ply")
    (tmp_path / "junk.ply").write_text("not a ply")
    with pytest.raises(PlyError, match="junk.ply"):
        read_ply(tmp_path / "junk.ply")


# -- exporting stored runs -----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def store(tiny_scene_dir, tmp_path_factory):
    """A run store with an STG and a static expert (a few steps each), VAPR over them and its
    fused model; the scene lies under RUNS/scenes, where `run` prepares synthetic scenes."""
    runs = tmp_path_factory.mktemp("export-runs")
    scene = runs / "scenes" / "synthetic" / "mixed-n3v-tiny-seed0"
    shutil.copytree(tiny_scene_dir, scene)
    result = run_experiment(Experiment(scene=str(scene), experts="stg,static", runs_dir=runs, device="cpu",
                                       overrides=("train.iterations=10", "max_init_points=400"), routers="vapr",
                                       router_overrides=("iterations=2",), analyses="fusion"))
    return runs, scene, result


def test_export_of_an_expert_renders_what_the_expert_renders(store, tmp_path):
    # catches: the wrong time for a frame (STG moves), another camera's or time's Gaussians, any
    # difference between the exported set and what evaluation renders
    runs, scene, _ = store
    data = load_scene(scene, CPU, splits=("test",))
    views = data.splits["test"]
    i = int((views.frames == 5).nonzero()[0])
    [path] = export_run("synthetic/mixed/stg/default", runs, frame=5, ply=tmp_path / "stg5.ply")
    expert = load_expert(runs / "synthetic/mixed/stg/default/seed0/checkpoints/model.pt", CPU).eval()
    with torch.no_grad():
        want = expert.gaussians_at(data.times[5])
        own = expert_view_renderer(expert, data, background=expert.config.train.background)(i)
    back = read_ply(path)
    assert_same(back, want, want.sh_degree)
    viewmats, Ks = data.camera_batch(views.cams[i:i + 1])
    bg = torch.tensor(expert.config.train.background)
    image = render(back, viewmats, Ks, data.width, data.height, background=bg).rgb[0]
    assert own.abs().max() > 0.05 and (image - own).abs().max() < 1e-5
    frame0 = read_ply(export_run("synthetic/mixed/stg/default", runs, frame=0, ply=tmp_path / "stg0.ply")[0])
    assert (frame0.means - back.means).abs().max() > 1e-4  # a time-dependent expert: frames differ


def test_export_of_the_fused_model_renders_the_fused_image(store, tmp_path):
    # catches: experts in another order than the responsibilities, opacities without R̄
    runs, scene, result = store
    fused = next(r for r in result.mixtures if r.label == "moe-fused")
    [path] = export_run(fused.run.dir, runs, frame=2, ply=tmp_path / "fused.ply")
    data = load_scene(scene, CPU, splits=("test",))
    experts = sorted(result.experts, key=lambda r: r.label)
    pool = ExpertPool([load_expert(r.run.checkpoint_path("model.pt"), CPU) for r in experts],
                      [r.label for r in experts], data)
    resp = Responsibilities.from_state(torch.load(fused.run.checkpoint_path("responsibilities.pt")), CPU)
    views = data.splits["test"]
    i = int((views.frames == 2).nonzero()[0])
    cam = int(views.cams[i])
    back = read_ply(path)
    assert_same(back, fused_gaussians(pool.view_gaussians(cam, 2), resp.values), back.sh_degree)
    own = fused_renderer(pool, resp)(i).image
    image = render(back, *data.camera_batch(views.cams[i:i + 1]), data.width, data.height,
                   background=pool.backgrounds[0]).rgb[0]
    assert (image - own).abs().max() < 1e-5


def test_export_all_frames_through_the_command_line(store, tmp_path, monkeypatch, capsys):
    # catches: missing frames, names other than frame_0000.ply ..., a file per frame that holds
    # another frame's Gaussians; the scene is found under RUNS/scenes without --scene
    runs, scene, _ = store
    monkeypatch.setattr(sys, "argv", ["moegs-bench", "export", "synthetic/mixed/stg/default", "--runs", str(runs),
                                      "--frames", "all", "--ply", str(tmp_path / "seq")])
    main()
    assert "wrote 8 files" in capsys.readouterr().out
    files = sorted(p.name for p in (tmp_path / "seq").iterdir())
    assert files == [frame_name(f) for f in range(8)] == [f"frame_{f:04d}.ply" for f in range(8)]
    run, root = resolve_run("synthetic/mixed/stg/default", runs)
    source = load_source(run, root, CPU)
    with torch.no_grad():
        want = source.gaussians_at(float(source.times[6]))
    torch.testing.assert_close(read_ply(tmp_path / "seq" / "frame_0006.ply").means, want.means)


def test_default_output_is_inside_the_run(store, monkeypatch, capsys):
    runs, _, _ = store
    monkeypatch.setattr(sys, "argv", ["moegs-bench", "export", "synthetic/mixed/static/default/seed0",
                                      "--runs", str(runs), "--frame", "1"])
    main()
    out = runs / "synthetic/mixed/static/default/seed0/ply/frame_0001.ply"
    assert out.is_file() and str(out) in capsys.readouterr().out


@pytest.mark.parametrize("args, words", [
    (["synthetic/mixed/nope/default", "--frame", "0"], ["RUN synthetic/mixed/nope/default", "no run folder"]),
    (["synthetic/mixed/moe-vapr/static+stg", "--frame", "0"], ["moe-vapr", "exportable", "stg", "moe-fused"]),
    (["synthetic/mixed/uniform-average/static+stg", "--frame", "0"], ["uniform-average", "exportable"]),
    (["synthetic/mixed/stg/default", "--frame", "8"], ["--frame 8", "0..7"]),
    (["synthetic/mixed/stg/default", "--frame", "-1"], ["--frame -1", "0..7"]),
    (["synthetic/mixed/stg/default"], ["--frame/--frames"]),
    (["synthetic/mixed/stg/default", "--frame", "1", "--frames", "all"], ["--frame/--frames"]),
    (["synthetic/mixed/stg/default", "--frames", "some"], ["--frames some"]),
])
def test_errors_are_one_line_naming_the_option(store, monkeypatch, capsys, args, words):
    runs, _, _ = store
    monkeypatch.setattr(sys, "argv", ["moegs-bench", "export", *args, "--runs", str(runs)])
    with pytest.raises(SystemExit) as exit_:
        main()
    err = capsys.readouterr().err.strip().splitlines()
    assert exit_.value.code == 2 and len(err) == 1 and err[0].startswith("error: ")
    for word in words:
        assert word in err[0], (word, err[0])


def test_a_scene_the_run_was_not_trained_on_is_refused(store, tmp_path):
    # catches: times taken from any scene of the same name (a tiny and a full `mixed` differ)
    runs, scene, _ = store
    other = tmp_path / "other"
    shutil.copytree(scene, other)
    meta = (other / "scene.json").read_text()
    (other / "scene.json").write_text(meta.replace('"name"', '"name" ', 1))  # same content, other bytes
    with pytest.raises(ConfigError, match="--scene .*not the scene"):
        export_run("synthetic/mixed/stg/default", runs, frame=0, scene=other)
    [path] = export_run("synthetic/mixed/stg/default", runs, frame=0, scene=scene, ply=tmp_path / "ok.ply")
    assert path.is_file()
    hidden = tmp_path / "elsewhere"
    shutil.copytree(runs / "synthetic", hidden / "synthetic")  # a store without its scenes folder
    with pytest.raises(ConfigError, match="--scene: .*--scene PATH"):
        export_run("synthetic/mixed/stg/default", hidden, frame=0)
