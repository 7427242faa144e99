"""Reading image files: one place for the decoding and its errors (SceneFormatError naming
the file)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import SceneFormatError


def read_image(path: str | Path, mode: str | None = "RGB") -> np.ndarray:
    """An image file as an array: [H,W,3] uint8 with mode "RGB", or as stored with None
    (e.g. [H,W] label maps)."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            return np.array(im.convert(mode) if mode is not None else im)
    except FileNotFoundError:
        raise SceneFormatError(path, None, "image file is missing") from None
    except Exception as exc:
        raise SceneFormatError(path, None, f"unreadable image ({exc})") from None


def image_size(path: str | Path) -> tuple[int, int]:
    """(width, height) of an image file, read from its header."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            return im.size
    except FileNotFoundError:
        raise SceneFormatError(path, None, "image file is missing") from None
    except Exception as exc:
        raise SceneFormatError(path, None, f"unreadable image ({exc})") from None


__all__ = ["read_image", "image_size"]
