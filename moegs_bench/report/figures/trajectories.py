"""Motion trajectories of each expert's Gaussians (MoE-GS Fig. 11): the tracks the trajectory
analysis stored (analysis/trajectories.npz), projected into a test view over the expert's
render of it, and in 3D in that camera's frame, beside the true motion where it is known."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from ...data.scene import read_scene
from ...errors import MoegsError
from .common import first_seed_runs, image_panel
from .registry import register_figure
from .source import StoreView, read_png, renders_of, view_stem
from .style import PAGE_WIDTH, method_color, new_figure

TRACKS_FILE = "trajectories.npz"
PER_GROUP = 120  # tracks drawn per motion regime and expert: enough to see the motion, few enough to read
TRUTH_COLOR = "#b0b0b0"


@dataclass(frozen=True)
class TrackCamera:
    """The camera the tracks are drawn in: name, K [3,3], w2c [4,4] (OpenCV), size (W, H)."""

    name: str
    K: np.ndarray
    w2c: np.ndarray
    size: tuple[int, int]


def stored_camera(tracks: dict, store: StoreView, scene: str) -> TrackCamera | None:
    """The test camera stored with the tracks, else the first test camera of the prepared scene
    when the store keeps it (see StoreView.scene_root); None otherwise."""
    if "view_K" in tracks:
        w, h = (int(v) for v in tracks["view_size"])
        return TrackCamera(str(tracks["view_camera"]), np.asarray(tracks["view_K"], np.float64),
                           np.asarray(tracks["view_w2c"], np.float64), (w, h))
    root = store.scene_root(scene)
    if root is None:
        return None
    try:
        prepared = read_scene(root, check_files=False)
        cam = prepared.camera(prepared.test_cameras[0])
    except (MoegsError, IndexError, KeyError):
        return None
    return TrackCamera(cam.name, np.asarray(cam.K, np.float64), np.asarray(cam.w2c, np.float64),
                       (int(cam.width), int(cam.height)))


def to_camera(points: np.ndarray, w2c: np.ndarray) -> np.ndarray:
    """World points [...,3] in camera coordinates (x right, y down, z forward): [...,3]."""
    return points @ w2c[:3, :3].T + w2c[:3, 3]


def project(points: np.ndarray, K: np.ndarray, w2c: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Pixel coordinates [...,2] (pixel centres at +0.5, as the renderer) and camera z [...]."""
    cam = to_camera(points, w2c)
    z = cam[..., 2]
    uvw = cam @ K.T
    return uvw[..., :2] / np.where(np.abs(z) > 1e-9, z, 1e-9)[..., None], z


def pick_tracks(regime_ids: np.ndarray, per_group: int = PER_GROUP) -> np.ndarray:
    """Indices of at most `per_group` tracks of each motion regime (regime_ids [N]; -1 is a
    group too), evenly spaced through the stored sample, in increasing order."""
    picked = []
    for r in np.unique(regime_ids):
        idx = np.flatnonzero(regime_ids == r)
        picked.append(idx[np.linspace(0, len(idx) - 1, min(per_group, len(idx))).round().astype(int)])
    return np.unique(np.concatenate(picked)) if picked else np.zeros(0, dtype=int)


def _load(path: Path) -> dict:
    with np.load(path) as data:
        return {k: data[k] for k in data.files}


@register_figure(
    "trajectories",
    "Tracks of each expert's Gaussians over the clip, projected into a test view over the "
    "expert's render and in 3D in that camera's frame, with the true motion on synthetic scenes "
    "(paper Fig. 11); needs the trajectory analysis (--analysis trajectories)",
)
def trajectories_figure(store: StoreView) -> Figure:
    """Per scene two rows, one column per expert with stored tracks (lowest seed): the tracks in
    the test view (over the expert's render at the first frame), and in 3D (camera axes: x right,
    z forward, y up; Gaussians in moving objects when the regimes are known). At most PER_GROUP
    tracks per motion regime are drawn; grey lines in 3D are the true motion of the same
    Gaussians when the scene knows it."""
    runs = first_seed_runs(store.runs)
    runs = runs[[store.is_expert(m) and store.analysis_file(d, TRACKS_FILE).is_file()
                 for m, d in zip(runs["method"], runs["run_dir"], strict=True)]]
    if len(runs) == 0:
        raise store.missing("no stored expert trajectories (analysis/trajectories.npz)",
                            "--experts 2 --analysis trajectories")
    scenes = list(dict.fromkeys(runs["scene"]))
    ncols = int(runs.groupby("scene").size().max())
    panel = PAGE_WIDTH / max(ncols, 3)
    aspect = 0.75  # height / width of the 2D panels (the camera's, once known)
    fig = new_figure(panel * ncols, len(scenes) * (panel * (aspect + 0.75) + 0.4) + 0.2)
    grid = fig.add_gridspec(2 * len(scenes), ncols, height_ratios=[aspect, 0.75] * len(scenes))
    handles, truth = {}, False
    for s, scene in enumerate(scenes):
        for c, r in enumerate(runs[runs["scene"] == scene].sort_values("label").itertuples(index=False)):
            tracks = _load(store.analysis_file(r.run_dir, TRACKS_FILE))
            pick = pick_tracks(np.asarray(tracks["regime_ids"]))
            camera = stored_camera(tracks, store, scene)
            color = method_color(r.label)
            ax2d = fig.add_subplot(grid[2 * s, c])
            _draw_view(ax2d, tracks, pick, camera, Path(r.run_dir), color, f"{r.label} ({scene})")
            ax3d = fig.add_subplot(grid[2 * s + 1, c], projection="3d")
            _draw_3d(ax3d, tracks, pick, camera, color)
            handles.setdefault(r.label, Line2D([], [], color=color, label=r.label))
            truth = truth or "truth" in tracks
    if truth:
        handles["true motion"] = Line2D([], [], color=TRUTH_COLOR, label="true motion")
    fig.legend(handles=list(handles.values()), loc="outside lower center", ncol=len(handles))
    return fig


def _draw_view(ax, tracks: dict, pick: np.ndarray, camera: TrackCamera | None, run_dir: Path,
               color: str, title: str) -> None:
    """The picked tracks projected into `camera`, over the run's render of it at frame 0."""
    if camera is None:
        image_panel(ax, None, title, color, missing="no test camera stored\nwith the tracks")
        return
    path = renders_of(run_dir, view_stem(camera.name, 0))
    background = read_png(path) / 255.0 if path is not None else np.ones((camera.size[1], camera.size[0], 3))
    image_panel(ax, 0.45 + 0.55 * background, f"{title}\n{camera.name}", color)  # faded: tracks on top
    uv, z = project(np.asarray(tracks["tracks"], np.float64)[pick], camera.K, camera.w2c)
    for track, depth in zip(uv, z, strict=True):
        if (depth > 0).all():  # a track crossing behind the camera has no image
            ax.plot(track[:, 0] - 0.5, track[:, 1] - 0.5, color=color, linewidth=0.5, alpha=0.7)
    ax.set_xlim(-0.5, camera.size[0] - 0.5)
    ax.set_ylim(camera.size[1] - 0.5, -0.5)


def _axes3d(points: np.ndarray, camera: TrackCamera | None) -> np.ndarray:
    """Points [...,3] as plotted: in the camera's frame (x right, z forward, -y up), else world."""
    if camera is None:
        return points
    p = to_camera(points, camera.w2c)
    return np.stack([p[..., 0], p[..., 2], -p[..., 1]], axis=-1)


def moving_picks(tracks: dict, pick: np.ndarray) -> np.ndarray:
    """Of the picked tracks, those of Gaussians in moving objects (regime other than static)
    when the store knows the regimes; all of them otherwise (or when none moves)."""
    regimes = [str(r) for r in tracks.get("regimes", [])]
    ids = np.asarray(tracks["regime_ids"])[pick]
    if not regimes:
        return pick
    static = regimes.index("static") if "static" in regimes else -2
    moving = pick[(ids >= 0) & (ids != static)]
    return moving if len(moving) else pick


def _draw_3d(ax, tracks: dict, pick: np.ndarray, camera: TrackCamera | None, color: str) -> None:
    """The picked tracks in 3D: only those in moving objects when regimes are known (the
    background would set the scale and hide the motion), the true motion in grey beneath."""
    pick = moving_picks(tracks, pick)
    if "truth" in tracks:
        for track in _axes3d(np.asarray(tracks["truth"], np.float64)[pick], camera):
            ax.plot(*track.T, color=TRUTH_COLOR, linewidth=0.4, alpha=0.6)
    drawn = _axes3d(np.asarray(tracks["tracks"], np.float64)[pick], camera)
    for track in drawn:
        ax.plot(*track.T, color=color, linewidth=0.5, alpha=0.8)
    span = np.ptp(drawn.reshape(-1, 3), axis=0) if drawn.size else np.ones(3)
    ax.set_box_aspect(np.maximum(span, 1e-3 * max(span.max(), 1e-9)))
    labels = ("x", "z (depth)", "up") if camera is not None else ("x", "y", "z")
    ax.set_xlabel(labels[0], labelpad=-8)
    ax.set_ylabel(labels[1], labelpad=-8)
    ax.set_zlabel(labels[2], labelpad=-8)
    ax.tick_params(labelsize=0, length=0)
    ax.set_xticklabels([])
    ax.set_yticklabels([])
    ax.set_zticklabels([])


__all__ = ["trajectories_figure", "project", "to_camera", "pick_tracks", "moving_picks", "stored_camera", "TrackCamera"]
