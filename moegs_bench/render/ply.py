"""`Gaussians` <-> the PLY file of the original 3DGS code (`GaussianModel.save_ply` /
`load_ply`), which 3DGS viewers open: one binary little-endian `vertex` element of float32
properties, in this order:

    x y z  nx ny nz  f_dc_0..2  f_rest_0..M-1  opacity  scale_0..2  rot_0..3

- f_dc are the degree-0 SH coefficients (R, G, B); f_rest the higher bands stored channel-major:
  3DGS writes `_features_rest.transpose(1, 2).flatten(1)`, i.e. [N,K-1,3] -> [N,3,K-1], so all
  K-1 red coefficients come first, then green, then blue. M = 3·((d+1)²−1) gives the degree d.
- opacity is the logit (3DGS applies a sigmoid), scale_* the natural log of the scales (3DGS
  applies exp), rot_* the quaternion (w, x, y, z) as stored, unnormalised (3DGS normalises).
- nx ny nz are zeros (3DGS writes them and never reads them).

`Gaussians` hold activated values, so writing applies the inverse activations (logit, log) in
float64 and reading applies sigmoid and exp: a round trip gives the same Gaussians up to float32.
"""

from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np
import torch
from plyfile import PlyData, PlyElement

from ..errors import MoegsError
from ..io import atomic_write_bytes
from .gaussians import Gaussians
from .sh import num_sh_bases, rgb_to_sh0

# logit(0) and logit(1) are infinite: opacities are kept this far inside (0, 1); sigmoid of the
# clamped logit is still exactly 1.0 in float32 at the top, and invisible (< 1/255) at the bottom
OPACITY_EPS = 1e-12
# log(0) is -inf: scales that underflowed to zero are stored as the smallest normal float32
MIN_SCALE = float(np.finfo(np.float32).tiny)
UNUSED = ("nx", "ny", "nz")  # written as zeros for 3DGS readers, not needed to read a file back


class PlyError(MoegsError):
    """A PLY file is unreadable or lacks a 3DGS property, or Gaussians cannot be stored as one."""


def ply_properties(sh_degree: int) -> list[str]:
    """The vertex property names of a 3DGS PLY with SH degree `sh_degree`, in file order."""
    rest = 3 * (num_sh_bases(sh_degree) - 1)
    return (["x", "y", "z", "nx", "ny", "nz"] + [f"f_dc_{i}" for i in range(3)]
            + [f"f_rest_{i}" for i in range(rest)] + ["opacity"] + [f"scale_{i}" for i in range(3)]
            + [f"rot_{i}" for i in range(4)])


def _sh_coefficients(g: Gaussians, degree: int | None) -> tuple[torch.Tensor, int]:
    """SH [N,(d+1)²,3] float64 of Gaussians as the renderer colours them, and d.

    RGB features become degree-0 SH (colour = C0·f_dc + 0.5, clamped at 0 by the renderer and
    by 3DGS viewers, so a negative feature renders as 0). Bands above the active degree are not
    rendered, so they are written as zeros; `degree` above it pads with zeros (same colours)."""
    if g.sh is None:
        if g.features.shape[1] != 3:
            raise PlyError(f"Gaussians splat {g.features.shape[1]} learned feature channels decoded per pixel; "
                           "a 3DGS PLY holds SH colours only")
        active, used = 0, rgb_to_sh0(g.features.double())[:, None, :]
    else:
        active, used = g.sh_degree, g.sh[:, : num_sh_bases(g.sh_degree)].double()
    d = active if degree is None else degree
    if not active <= d <= 3:
        raise PlyError(f"sh_degree {degree}: must be between the Gaussians' active degree {active} and 3 "
                       "(a lower degree would change their colours)")
    return torch.nn.functional.pad(used, (0, 0, 0, num_sh_bases(d) - used.shape[1])), d


def ply_bytes(gaussians: Gaussians, sh_degree: int | None = None) -> bytes:
    """The 3DGS PLY file of `gaussians` (any device) as bytes; sh_degree: write this many SH
    bands (default: the active degree; 3 pads with zeros for viewers that expect degree 3)."""
    g = gaussians.detach().to("cpu")
    sh, degree = _sh_coefficients(g, sh_degree)
    n = len(g)
    opacity = g.opacities.double().clamp(OPACITY_EPS, 1 - OPACITY_EPS)
    columns = [
        g.means.double(),
        torch.zeros(n, 3, dtype=torch.float64),
        sh[:, 0, :],
        sh[:, 1:, :].transpose(1, 2).reshape(n, -1),  # channel-major, as 3DGS save_ply
        torch.logit(opacity)[:, None],
        torch.log(g.scales.double().clamp_min(MIN_SCALE)),
        g.quats.double(),
    ]
    values = torch.cat(columns, 1).numpy().astype(np.float32)
    names = ply_properties(degree)
    vertices = np.empty(n, dtype=[(name, "<f4") for name in names])
    for i, name in enumerate(names):
        vertices[name] = values[:, i]
    buf = io.BytesIO()
    PlyData([PlyElement.describe(vertices, "vertex")], text=False, byte_order="<").write(buf)
    return buf.getvalue()


def write_ply(gaussians: Gaussians, path: str | os.PathLike, sh_degree: int | None = None) -> Path:
    """Write `gaussians` as a binary little-endian 3DGS PLY file (atomically); returns the path."""
    return atomic_write_bytes(path, ply_bytes(gaussians, sh_degree))


def read_ply(path: str | os.PathLike, device: str | torch.device = "cpu") -> Gaussians:
    """Gaussians [N] (activated, float32, SH colours with the file's degree) from a 3DGS PLY."""
    path = Path(path)
    try:
        ply = PlyData.read(str(path))
    except FileNotFoundError:
        raise PlyError(f"{path}: no such file") from None
    except Exception as exc:  # plyfile raises several kinds for a malformed header or body
        raise PlyError(f"{path}: not a readable PLY file ({exc})") from None
    if "vertex" not in ply:
        raise PlyError(f"{path}: no 'vertex' element")
    vertex = ply["vertex"].data
    names = set(vertex.dtype.names or ())
    rest = sorted((p for p in names if p.startswith("f_rest_")), key=lambda p: int(p.split("_")[-1]))
    degree = next((d for d in range(4) if 3 * (num_sh_bases(d) - 1) == len(rest)), None)
    if degree is None:
        raise PlyError(f"{path}: {len(rest)} f_rest_* properties; a 3DGS PLY has 0, 9, 24 or 45 (SH degree 0-3)")
    missing = [p for p in ply_properties(degree) if p not in names and p not in UNUSED]
    if missing:
        raise PlyError(f"{path}: vertex property {missing[0]!r} is missing (not a 3DGS Gaussian PLY)")

    def column(*props: str) -> torch.Tensor:
        out = torch.from_numpy(np.stack([np.asarray(vertex[p], dtype=np.float64) for p in props], 1))
        bad = ~torch.isfinite(out).all(0)
        if bad.any():
            raise PlyError(f"{path}: vertex property {props[int(bad.nonzero()[0])]} has non-finite values")
        return out

    n = len(vertex)
    f_rest = column(*rest) if rest else torch.zeros(n, 0, dtype=torch.float64)
    sh = torch.cat([column("f_dc_0", "f_dc_1", "f_dc_2")[:, None, :],
                    f_rest.reshape(n, 3, num_sh_bases(degree) - 1).transpose(1, 2)], 1)
    g = Gaussians(
        means=column("x", "y", "z"),
        quats=column("rot_0", "rot_1", "rot_2", "rot_3"),
        scales=torch.exp(column("scale_0", "scale_1", "scale_2")),
        opacities=torch.sigmoid(column("opacity")[:, 0]),
        sh=sh,
        sh_degree=degree,
    )
    return g.map(lambda t: t.to(device=device, dtype=torch.float32).contiguous())


__all__ = ["PlyError", "ply_properties", "ply_bytes", "write_ply", "read_ply", "OPACITY_EPS"]
