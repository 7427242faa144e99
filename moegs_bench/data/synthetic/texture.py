"""Procedural solid textures, evaluated on texture coordinates attached to each object.

A texture is value-noise fBm driving a colour ramp, high-contrast colour patches, a 3D
checker and fine grain: several spatial frequencies and colours, so that images have the
corners and blobs that SIFT matching and multi-view reconstruction need.
"""

from __future__ import annotations

import colorsys
from dataclasses import dataclass

import numpy as np
import torch

LATTICE = 32  # value-noise lattice side; the noise repeats every 32 texture units


@dataclass(frozen=True)
class TextureSpec:
    """One object's texture. palette [4,3]: ramp colours c0, c1, c2 and the patch colour c3;
    offset [3]: where in the noise field the object samples; freq: texture units per local
    (world) unit; checker: checker cells per texture unit."""

    palette: np.ndarray
    offset: np.ndarray
    freq: float
    checker: float


def random_texture(rng: np.random.Generator, freq: float, checker: float,
                   saturation: tuple[float, float] = (0.45, 0.95)) -> TextureSpec:
    """A texture with a random palette: three ramp colours of spread hues and a patch colour of
    the opposite hue, so neighbouring regions differ in both hue and brightness."""
    hue = rng.uniform()
    colours = []
    for k, dh in enumerate((0.0, rng.uniform(0.12, 0.3), rng.uniform(0.3, 0.45), 0.5)):
        sat = rng.uniform(*saturation)
        val = rng.uniform(0.35, 0.6) if k == 1 else rng.uniform(0.7, 1.0)
        colours.append(colorsys.hsv_to_rgb((hue + dh) % 1.0, sat, val))
    return TextureSpec(np.asarray(colours), rng.uniform(0, LATTICE, size=3), freq, checker)


def make_lattice(rng: np.random.Generator) -> np.ndarray:
    """Random lattice values [LATTICE^3, 3] float32 in [0, 1): three independent noise fields,
    flat index x * LATTICE^2 + y * LATTICE + z."""
    return rng.random((LATTICE**3, 3), dtype=np.float32)


def noise_volume(lattice: torch.Tensor) -> torch.Tensor:
    """The lattice [G^3,C] as a grid_sample volume [1,C,G+1,G+1,G+1] (axes z, y, x), with the
    first plane repeated at the end of each axis so that interpolation wraps around."""
    vol = lattice.view(LATTICE, LATTICE, LATTICE, -1).permute(3, 0, 1, 2)  # [C, x, y, z]
    vol = torch.cat([vol, vol[:, :1]], 1)
    vol = torch.cat([vol, vol[:, :, :1]], 2)
    vol = torch.cat([vol, vol[:, :, :, :1]], 3)
    return vol.permute(0, 3, 2, 1).contiguous()[None]


def value_noise(p: torch.Tensor, volume: torch.Tensor) -> torch.Tensor:
    """Periodic value noise with smoothstep fade: p [N,3] -> [N,C] in [0, 1] (C = volume
    channels, independent fields). Warping each cell's coordinate by the smoothstep turns
    grid_sample's trilinear interpolation into the faded one."""
    base = torch.floor(p)
    u = p - base
    q = torch.remainder(base, LATTICE) + u * u * (3.0 - 2.0 * u)
    grid = (q * (2.0 / LATTICE) - 1.0).view(1, 1, 1, -1, 3)
    out = torch.nn.functional.grid_sample(volume, grid, mode="bilinear", padding_mode="border",
                                          align_corners=True)
    return out.view(volume.shape[1], -1).T


def fbm(p: torch.Tensor, volume: torch.Tensor, octaves: int) -> torch.Tensor:
    """Fractal sum of value noise (each octave about twice the frequency, half the weight):
    p [N,3] -> [N,C] in [0, 1]."""
    total = None
    amp, norm, freq = 1.0, 0.0, 1.0
    for k in range(octaves):
        layer = amp * value_noise(p * freq + 5.17 * k, volume)  # shift decorrelates octaves
        total = layer if total is None else total + layer
        norm += amp
        amp *= 0.5
        freq *= 2.03
    return total / norm


def _contrast(v: torch.Tensor, gain: float) -> torch.Tensor:
    """Stretch values around 0.5 (fBm concentrates near 0.5) and clamp to [0, 1]."""
    return ((v - 0.5) * gain + 0.5).clamp(0.0, 1.0)


def albedo(coords: torch.Tensor, spec: TextureSpec, volume: torch.Tensor) -> torch.Tensor:
    """Surface colour [N,3] in [0, 1] at texture-space coordinates [N,3] (local units).

    Field 0 of a 4-octave fBm drives a three-colour ramp and field 1 cuts sharp-edged patches
    of the fourth colour; a finer noise adds dark speckles (small blobs) and grain; a checker
    modulates the brightness (straight edges and corners)."""
    q = coords * spec.freq + torch.as_tensor(spec.offset, dtype=coords.dtype, device=coords.device)
    pal = torch.as_tensor(spec.palette, dtype=coords.dtype, device=coords.device)
    fields = fbm(q, volume, 4)
    a = _contrast(fields[:, 0:1], 2.6)
    ramp = torch.where(a < 0.5, torch.lerp(pal[0], pal[1], 2 * a), torch.lerp(pal[1], pal[2], 2 * a - 1))
    patch = ((fields[:, 1:2] - 0.56) / 0.04).clamp(0.0, 1.0)
    colour = torch.lerp(ramp, pal[3].expand_as(ramp), patch)
    fine = value_noise(q * 7.0 + 3.7, volume)
    speckle = ((fine[:, 1:2] - 0.8) / 0.05).clamp(0.0, 1.0)
    colour = colour * (1.0 - 0.75 * speckle)
    cells = torch.floor(q * spec.checker).sum(-1, keepdim=True).remainder(2.0)
    grain = 0.7 + 0.6 * fine[:, 2:3]
    return (colour * (0.72 + 0.28 * cells) * grain).clamp(0.0, 1.0)
