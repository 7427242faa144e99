"""Ray casting the synthetic world: analytic primitives, procedural textures, Lambert shading.

Rays are vectorised over pixels (batches of rows bound the memory); only the handful of
surfaces is looped over. A ray direction has camera-z component 1, so the ray parameter of a
hit is the camera z-depth. RGB averages s x s samples per pixel; depth and labels come from
the pixel-centre ray (pixel (i, j) centre at (j + 0.5, i + 0.5), as OpenCV and gsplat).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ...device import resolve_device
from ..scene import Camera
from .motion import quat_to_matrix
from .texture import TextureSpec, albedo, noise_volume
from .world import FLOOR_Y, ROOM_HI, ROOM_LO, SyntheticWorld, bounding_radius

_EPS = 1e-4  # smallest hit distance (camera z units): ignores hits behind the ray origin
_TINY = 1e-12  # replaces zero direction components in slab tests (avoids 0 * inf)


@dataclass(frozen=True)
class ViewRender:
    """One rendered view. rgb [H,W,3] float32 in [0,1]; depth [H,W] float32 camera z-depth;
    labels [H,W] uint8 regime id (0 = static, background included); object_ids [H,W] int64
    (index into world.objects, -1 for the room and the floor). All on the render device."""

    rgb: torch.Tensor
    depth: torch.Tensor
    labels: torch.Tensor
    object_ids: torch.Tensor


# -- row-vector transforms written out: elementwise, so results are bit-identical run to run ---
def _mul(v: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
    """v @ m for v [N,3], m [3,3]."""
    return v[:, 0:1] * m[0] + v[:, 1:2] * m[1] + v[:, 2:3] * m[2]


def _dot(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Dot products over the last axis of size 3 ([N,3] or [3], broadcast): faster than a
    reduction over a 3-long axis on CPU."""
    return a[..., 0] * b[..., 0] + a[..., 1] * b[..., 1] + a[..., 2] * b[..., 2]


def _normalise(v: torch.Tensor) -> torch.Tensor:
    return v / v.norm(dim=-1, keepdim=True).clamp_min(1e-12)


# -- shapes: intersect(o [N,3], d [N,3]) -> t [N] (inf: miss); surface(x [M,3]) -> normals, coords --
@dataclass(frozen=True)
class _Ellipsoid:
    centre: torch.Tensor  # [3]
    rot: torch.Tensor  # [3,3] columns = local axes in world
    scale: torch.Tensor  # [3] half-axes now
    base: torch.Tensor  # [3] half-axes the texture is laid out at

    def _local(self, x: torch.Tensor) -> torch.Tensor:
        return _mul(x - self.centre, self.rot) / self.scale

    def intersect(self, o: torch.Tensor, d: torch.Tensor) -> torch.Tensor:
        ol = self._local(o)
        dl = _mul(d, self.rot) / self.scale
        a = _dot(dl, dl)
        b = _dot(ol, dl)
        c = _dot(ol, ol) - 1.0
        disc = b * b - a * c
        root = disc.clamp_min(0.0).sqrt()
        near, far = (-b - root) / a, (-b + root) / a
        t = torch.where(near > _EPS, near, far)
        return torch.where((disc >= 0) & (t > _EPS), t, torch.full_like(t, float("inf")))

    def surface(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        pl = self._local(x)
        normal = _normalise(_mul(pl / self.scale, self.rot.T))  # gradient of |pl|^2
        return normal, pl * self.base


@dataclass(frozen=True)
class _Box:
    centre: torch.Tensor
    rot: torch.Tensor
    scale: torch.Tensor
    base: torch.Tensor

    def _local(self, x: torch.Tensor) -> torch.Tensor:
        return _mul(x - self.centre, self.rot) / self.scale

    def intersect(self, o: torch.Tensor, d: torch.Tensor) -> torch.Tensor:
        ol = self._local(o)
        dl = _mul(d, self.rot) / self.scale
        dl = torch.where(dl.abs() < _TINY, torch.full_like(dl, _TINY), dl)
        t1, t2 = (-1.0 - ol) / dl, (1.0 - ol) / dl
        t_in = torch.minimum(t1, t2).amax(-1)
        t_out = torch.maximum(t1, t2).amin(-1)
        t = torch.where(t_in > _EPS, t_in, t_out)
        return torch.where((t_out >= t_in) & (t > _EPS), t, torch.full_like(t, float("inf")))

    def surface(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        pl = self._local(x)
        axis = pl.abs().argmax(-1, keepdim=True)
        n_local = torch.zeros_like(pl).scatter(-1, axis, torch.sign(pl.gather(-1, axis)))
        normal = _normalise(_mul(n_local / self.scale, self.rot.T))
        return normal, pl * self.base


@dataclass(frozen=True)
class _Plane:
    point: torch.Tensor  # [3]
    normal: torch.Tensor  # [3] unit, facing the cameras

    def intersect(self, o: torch.Tensor, d: torch.Tensor) -> torch.Tensor:
        denom = _dot(d, self.normal)
        t = _dot(self.point - o, self.normal) / torch.where(denom.abs() < _TINY, _TINY, denom)
        return torch.where(t > _EPS, t, torch.full_like(t, float("inf")))

    def surface(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.normal.expand_as(x), x


@dataclass(frozen=True)
class _Room:
    """An axis-aligned box seen from inside: every ray from inside exits through a wall."""

    lo: torch.Tensor
    hi: torch.Tensor

    def intersect(self, o: torch.Tensor, d: torch.Tensor) -> torch.Tensor:
        d = torch.where(d.abs() < _TINY, torch.full_like(d, _TINY), d)
        t_exit = torch.where(d > 0, (self.hi - o) / d, (self.lo - o) / d)
        return t_exit.amin(-1)

    def surface(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        gaps = torch.cat([x - self.lo, self.hi - x], -1)  # [M,6]: distance to each wall
        face = gaps.argmin(-1)
        normal = torch.zeros_like(x)
        normal.scatter_(-1, (face % 3)[:, None], torch.where(face < 3, 1.0, -1.0)[:, None].to(x.dtype))
        return normal, x


@dataclass(frozen=True)
class _Surface:
    shape: _Ellipsoid | _Box | _Plane | _Room
    texture: TextureSpec
    regime: int
    object_id: int
    bound: tuple[torch.Tensor, float] | None = None  # bounding sphere (centre [3], radius)


def _surfaces_at(world: SyntheticWorld, t: float, device: torch.device) -> list[_Surface]:
    """Background and objects posed at time t, as tensors on `device`."""
    f32 = {"dtype": torch.float32, "device": device}
    out = [
        _Surface(_Room(torch.tensor(ROOM_LO, **f32), torch.tensor(ROOM_HI, **f32)),
                 world.room_texture, 0, -1),
        _Surface(_Plane(torch.tensor([0.0, FLOOR_Y, 0.0], **f32), torch.tensor([0.0, -1.0, 0.0], **f32)),
                 world.floor_texture, 0, -1),
    ]
    centres, quats, scales = world.poses(np.array([t]))
    rots = quat_to_matrix(quats)
    for i, obj in enumerate(world.objects):
        cls = _Ellipsoid if obj.kind == "sphere" else _Box
        centre = torch.tensor(centres[i, 0], **f32)
        shape = cls(centre, torch.tensor(rots[i, 0], **f32), torch.tensor(scales[i, 0], **f32),
                    torch.tensor(obj.base_scale, **f32))
        radius = float(bounding_radius(obj.kind)(scales[i, :1])[0]) * 1.01 + 1e-3
        out.append(_Surface(shape, obj.texture, obj.regime_id, i, (centre, radius)))
    return out


def _cone_candidates(o: torch.Tensor, d: torch.Tensor, bound: tuple[torch.Tensor, float]) -> torch.Tensor:
    """Indices of the rays (o, d [N,3]) that can hit a bounding sphere: only those are
    intersected exactly, since an object covers a small part of the image."""
    centre, radius = bound
    v = centre - o
    vv = _dot(v, v) - radius * radius  # < 0: the ray starts inside the sphere
    dv = _dot(d, v)
    hit = (vv <= 0) | ((dv > 0) & (dv * dv >= _dot(d, d) * vv))
    return hit.nonzero().squeeze(1)


def _cast(surfaces: list[_Surface], o: torch.Tensor, d: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Nearest hit of rays (o, d [N,3]): depth t [N] and surface index [N]."""
    t_best = torch.full(d.shape[:1], float("inf"), dtype=d.dtype, device=d.device)
    index = torch.zeros(d.shape[:1], dtype=torch.int64, device=d.device)
    for k, s in enumerate(surfaces):
        if s.bound is None:
            t = s.shape.intersect(o, d)
            closer = t < t_best
            t_best = torch.where(closer, t, t_best)
            index = index.masked_fill(closer, k)
            continue
        rays = _cone_candidates(o, d, s.bound)
        if rays.numel() == 0:
            continue
        t = s.shape.intersect(o[rays], d[rays])
        closer = t < t_best[rays]
        t_best[rays] = torch.where(closer, t, t_best[rays])
        index[rays] = torch.where(closer, k, index[rays])
    return t_best, index


def _shade(world: SyntheticWorld, surfaces: list[_Surface], volume: torch.Tensor, o: torch.Tensor,
           d: torch.Tensor, t: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """Colour [N,3] of the hits: albedo x (ambient + diffuse x max(0, n.l)), view-independent."""
    x = o + t[:, None] * d
    light = torch.as_tensor(world.light_dir, dtype=d.dtype, device=d.device)
    rgb = torch.zeros_like(d)
    for k, s in enumerate(surfaces):
        rows = (index == k).nonzero().squeeze(1)
        if rows.numel() == 0:
            continue
        normal, coords = s.shape.surface(x[rows])
        lambert = _dot(normal, light).clamp_min(0.0)
        colour = albedo(coords, s.texture, volume) * (world.ambient + world.diffuse * lambert)[:, None]
        rgb[rows] = colour.clamp(0.0, 1.0)
    return rgb


def _ray_dirs(camera: Camera, rows: range, samples: int) -> torch.Tensor:
    """World directions [R*s*W*s,3] float64 (camera z = 1) of s x s samples per pixel of image
    rows, ordered (row, sub-row, column, sub-column)."""
    K = camera.K
    sub = (torch.arange(samples, dtype=torch.float64) + 0.5) / samples
    v = (torch.tensor(list(rows), dtype=torch.float64)[:, None] + sub[None]).reshape(-1)
    u = (torch.arange(camera.width, dtype=torch.float64)[:, None] + sub[None]).reshape(-1)
    y = ((v - K[1, 2]) / K[1, 1])[:, None].expand(-1, len(u))
    x = ((u - K[0, 2]) / K[0, 0])[None, :].expand(len(v), -1)
    cam = torch.stack([x, y, torch.ones_like(x)], -1).reshape(-1, 3)
    return _mul(cam, torch.as_tensor(camera.w2c[:3, :3], dtype=torch.float64))  # world = R^T cam


def _block_rays(cameras: list[Camera], rows: range, samples: int,
                device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Origins and directions [N,3] of image rows of every camera: first the s x s samples of
    each camera (for colour), then the pixel-centre rays of each camera (depth and labels)."""
    dirs, origins = [], []
    for s in (samples, 1):
        for cam in cameras:
            d = _ray_dirs(cam, rows, s)
            dirs.append(d)
            origins.append(torch.as_tensor(cam.center, dtype=torch.float64).expand(len(d), 3))
    f32 = {"dtype": torch.float32, "device": device}
    return torch.cat(origins).to(**f32), torch.cat(dirs).to(**f32)


def render_views(world: SyntheticWorld, cameras: list[Camera], t: float, supersample: int = 2,
                 device: str | torch.device | None = None, chunk_rays: int = 1 << 20) -> list[ViewRender]:
    """Render cameras of one image size at normalised time t in [0, 1) in shared ray batches
    (fewer, larger tensor operations than one view at a time). See render_view."""
    if len({(c.width, c.height) for c in cameras}) > 1:
        return [render_view(world, c, t, supersample, device, chunk_rays) for c in cameras]
    dev = resolve_device(None if device is None else str(device))
    surfaces = _surfaces_at(world, float(t), dev)
    volume = noise_volume(torch.from_numpy(world.lattice).to(dev))
    regimes = torch.tensor([s.regime for s in surfaces], dtype=torch.uint8, device=dev)
    ids = torch.tensor([s.object_id for s in surfaces], dtype=torch.int64, device=dev)
    V, H, W, s = len(cameras), cameras[0].height, cameras[0].width, int(supersample)
    rgb = torch.empty(V, H, W, 3, dtype=torch.float32, device=dev)
    depth = torch.empty(V, H, W, dtype=torch.float32, device=dev)
    index = torch.empty(V, H, W, dtype=torch.int64, device=dev)
    step = max(1, chunk_rays // (V * W * (s * s + 1)))
    for r0 in range(0, H, step):
        rows = range(r0, min(H, r0 + step))
        o, d = _block_rays(cameras, rows, s, dev)
        hit_t, hit = _cast(surfaces, o, d)
        n_colour = V * len(rows) * s * W * s
        colour = _shade(world, surfaces, volume, o[:n_colour], d[:n_colour], hit_t[:n_colour], hit[:n_colour])
        rgb[:, r0:rows.stop] = colour.view(V, len(rows), s, W, s, 3).mean((2, 4))
        depth[:, r0:rows.stop] = hit_t[n_colour:].view(V, len(rows), W)
        index[:, r0:rows.stop] = hit[n_colour:].view(V, len(rows), W)
    labels, object_ids = regimes[index], ids[index]
    return [ViewRender(rgb[v], depth[v], labels[v], object_ids[v]) for v in range(V)]


def render_view(world: SyntheticWorld, camera: Camera, t: float, supersample: int = 2,
                device: str | torch.device | None = None, chunk_rays: int = 1 << 20) -> ViewRender:
    """Render `camera` at normalised time t in [0, 1): RGB with supersample^2 samples per
    pixel, depth/labels/object ids from the pixel-centre rays. See ViewRender for shapes."""
    return render_views(world, [camera], t, supersample, device, chunk_rays)[0]
