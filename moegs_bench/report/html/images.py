"""Images of the report: a few test views of each run (renders and gate maps) and the figures,
re-encoded small (thumbnails at most `width` pixels wide, no metadata) into the report folder."""

from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ...errors import ConfigError
from ...eval.evaluate import RENDERS

GATES = "gates"  # folder of a router's (and the per-pixel oracle's) gate maps, as colours
IMAGE_KINDS = (RENDERS, GATES)
PNG_MAX_PIXELS = 160 * 120  # small renders stay lossless (scaled up pixelated on the page)


@dataclass(frozen=True)
class Thumb:
    """A written image: its path relative to the report folder and its pixel size."""

    rel: str
    width: int
    height: int


def chosen_views(run_dirs: Sequence[Path], count: int) -> list[str]:
    """File names of `count` test views spread evenly over the rendered views of the runs
    (those of the first run that has renders; [] if none has)."""
    for run_dir in run_dirs:
        names = sorted(p.name for p in (Path(run_dir) / RENDERS).glob("*.png"))
        if names:
            if len(names) <= count:
                return names
            step = (len(names) - 1) / max(count - 1, 1)
            return [names[round(i * step)] for i in range(count)] if count > 1 else names[:1]
    return []


def write_thumbnail(src: Path | np.ndarray, root: Path, rel: str, width: int, lossless: bool = False,
                    palette: bool = False) -> Thumb:
    """Write `src` (an image file, or uint8 [H,W,3]) at most `width` pixels wide to `root/rel`
    with the suffix its encoding gets: PNG for gate maps (`lossless`) and small images, JPEG
    otherwise (no metadata either way); `palette`: PNG of 256 colours (charts). Returns it."""
    from PIL import Image, UnidentifiedImageError

    if isinstance(src, np.ndarray):
        image = Image.fromarray(src).convert("RGB")
    else:
        try:
            with Image.open(src) as im:
                image = im.convert("RGB")
        except (OSError, UnidentifiedImageError) as exc:
            raise ConfigError(f"{src}: unreadable image ({exc})") from None
    if image.width > width:
        image = image.resize((width, max(1, round(image.height * width / image.width))), Image.LANCZOS)
    png = lossless or palette or image.width * image.height <= PNG_MAX_PIXELS
    if palette:  # a chart's few colours and their anti-aliasing: about a third of the bytes
        image = image.quantize(256, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE)
    path = (root / rel).with_suffix(".png" if png else ".jpg")
    path.parent.mkdir(parents=True, exist_ok=True)
    buf = io.BytesIO()
    if png:
        image.save(buf, format="PNG", optimize=True)
    else:
        image.save(buf, format="JPEG", quality=85, optimize=True)
    # the report folder is built whole and swapped in at once, so plain writes suffice here
    path.write_bytes(buf.getvalue())
    return Thumb(path.relative_to(root).as_posix(), image.width, image.height)
