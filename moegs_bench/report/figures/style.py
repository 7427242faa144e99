"""The publication style every figure shares: fonts and sizes, one fixed colour per method,
and saving (PNG and PDF, atomically, without a display: figures are drawn on matplotlib's Agg
canvas and never through pyplot)."""

from __future__ import annotations

import colorsys
import hashlib
import io
from collections.abc import Sequence
from pathlib import Path

from matplotlib import colors as mcolors
from matplotlib import rc_context
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from ...io import atomic_write_bytes

# page widths in inches of a two-column paper (single column, full width)
COLUMN_WIDTH = 3.35
PAGE_WIDTH = 6.9
PNG_DPI = 300
FORMATS = ("png", "pdf")

STYLE = {
    "font.family": "DejaVu Sans",  # shipped with matplotlib: the same glyphs on every machine
    "font.size": 7.5,
    "axes.titlesize": 7.5,
    "axes.labelsize": 7.5,
    "xtick.labelsize": 6.5,
    "ytick.labelsize": 6.5,
    "legend.fontsize": 6.5,
    "legend.frameon": False,
    "figure.titlesize": 8.5,
    "axes.linewidth": 0.6,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.grid": True,
    "grid.linewidth": 0.4,
    "grid.alpha": 0.35,
    "lines.linewidth": 1.2,
    "lines.markersize": 4,
    "xtick.major.width": 0.6,
    "ytick.major.width": 0.6,
    "xtick.major.size": 2.5,
    "ytick.major.size": 2.5,
    "pdf.fonttype": 42,  # TrueType in the PDF: editable text, accepted by publishers
    "savefig.bbox": "tight",
    "savefig.pad_inches": 0.02,
    "image.interpolation": "nearest",  # renders are small: show their pixels, do not smear them
}

# one colour per method, the same in every figure. The experts follow the paper's Fig. 1 where
# it can (4DGaussians green, STG purple, E-D3DGS pink); Ex4DGS, black there, is orange here
# because gate maps mix expert colours and black would read as "no expert". Experts differ in
# hue, since gate maps blend them; mixtures are reds and blues, baselines greys.
EXPERT_COLORS = {
    "static": "#8c564b",
    "stg": "#9467bd",
    "ex4dgs": "#ff7f0e",
    "ed3dgs": "#e377c2",
    "4dgs": "#2ca02c",
}
MIXTURE_COLORS = {
    "moe-vapr": "#d62728",
    "moe-pixel": "#1f77b4",
    "moe-volume": "#17becf",
    "moe-fused": "#7f0000",
    "uniform-average": "#7f7f7f",
    "oracle-pixel": "#000000",
    "oracle-image": "#b0b0b0",
}
# names not above get one of these, chosen by a hash of the name (stable across runs)
FALLBACK_COLORS = ("#393b79", "#637939", "#8c6d31", "#843c39", "#7b4173", "#bcbd22",
                   "#6b6ecf", "#e7969c", "#9c9ede", "#cedb9c")
# lightness shift of an expert label `name@preset`: the expert's hue, one shade per preset
# (the experts' presets fixed; any other preset one of the others, by a hash of its name)
PRESET_SHADES = {"tiny": 0.22, "small": -0.16, "fast": 0.1, "paper": -0.28}
_OTHER_SHADES = (0.3, -0.08, 0.16, -0.22)


def _stable_index(text: str, n: int) -> int:
    return int(hashlib.sha256(text.encode()).hexdigest()[:8], 16) % n


def _shade(color: str, shift: float) -> str:
    """`color` with its HLS lightness moved by `shift` (clamped to [0.1, 0.85])."""
    h, lightness, s = colorsys.rgb_to_hls(*mcolors.to_rgb(color))
    return mcolors.to_hex(colorsys.hls_to_rgb(h, min(0.85, max(0.1, lightness + shift)), s))


def method_color(name: str) -> str:
    """The colour (hex) of a method in every figure: an expert (`stg`), an expert label
    (`stg@tiny`: the expert's hue, a shade per preset), a mixture or baseline (`moe-vapr`,
    `oracle-pixel`), or a table label `method (variant)` (the method's colour). Unknown names
    get a fallback colour chosen by a hash of the name, so it never changes between figures."""
    name = name.split(" (")[0].strip()
    if name in EXPERT_COLORS:
        return EXPERT_COLORS[name]
    if name in MIXTURE_COLORS:
        return MIXTURE_COLORS[name]
    base, _, preset = name.partition("@")
    if preset and base in EXPERT_COLORS:
        shift = PRESET_SHADES.get(preset, _OTHER_SHADES[_stable_index(preset, len(_OTHER_SHADES))])
        return _shade(EXPERT_COLORS[base], shift)
    return FALLBACK_COLORS[_stable_index(name, len(FALLBACK_COLORS))]


def method_rgb(name: str) -> tuple[float, float, float]:
    """method_color as an RGB triple in [0,1]."""
    return mcolors.to_rgb(method_color(name))


def new_figure(width: float, height: float) -> Figure:
    """A figure on the Agg canvas (no display, no pyplot state), `width` x `height` inches.
    Call inside `rc_context(STYLE)` (as `draw_figure` does) so the style applies."""
    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def styled():
    """Context manager applying STYLE to figures made and saved inside it."""
    return rc_context(STYLE)


def save_figure(fig: Figure, out_dir: Path, stem: str, formats: Sequence[str] = FORMATS) -> list[Path]:
    """Write `fig` as <out_dir>/<stem>.<fmt> for each format (png, pdf), each atomically;
    returns the paths. ValueError for another format."""
    bad = [f for f in formats if f not in FORMATS]
    if bad:
        raise ValueError(f"figure formats {bad}: expected any of {', '.join(FORMATS)}")
    paths = []
    for fmt in formats:
        buf = io.BytesIO()
        # no creation date in the PDF: the same figure gives the same bytes
        metadata = {"CreationDate": None} if fmt == "pdf" else None
        with styled():
            fig.savefig(buf, format=fmt, dpi=PNG_DPI, metadata=metadata)
        paths.append(atomic_write_bytes(Path(out_dir) / f"{stem}.{fmt}", buf.getvalue()))
    return paths


__all__ = ["COLUMN_WIDTH", "PAGE_WIDTH", "STYLE", "FORMATS", "EXPERT_COLORS", "MIXTURE_COLORS",
           "method_color", "method_rgb", "new_figure", "styled", "save_figure"]
