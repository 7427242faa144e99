"""Atomic file writes: write to a temporary file beside the target, then rename.

A reader never sees a half-written file, and an interrupted write leaves the previous
version (or nothing) in place.
"""

from __future__ import annotations

import io
import json
import os
import tempfile
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from .errors import UnreadableFileError


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_UMASK = _current_umask()


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write `data` to `path` atomically; creates parent folders. Returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp creates 0600; give the usual permissions
        os.replace(tmp, path)
    except BaseException as exc:
        if os.path.exists(tmp):
            os.unlink(tmp)
        if isinstance(exc, OSError) and exc.filename is None:  # a failed write() names no file
            raise OSError(exc.errno, exc.strerror, str(path)) from exc
        raise
    return path


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | os.PathLike, obj: Any) -> Path:
    return atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")


def save_npz(path: str | os.PathLike, **arrays: np.ndarray) -> Path:
    """np.savez_compressed, atomically."""
    buf = io.BytesIO()
    np.savez_compressed(buf, **arrays)
    return atomic_write_bytes(path, buf.getvalue())


def save_png(path: str | os.PathLike, image: np.ndarray) -> Path:
    """Save an [H,W,3] or [H,W] uint8 array as PNG, atomically."""
    from PIL import Image

    if image.dtype != np.uint8:
        raise TypeError(f"save_png expects uint8, got {image.dtype}")
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="PNG", compress_level=1)
    return atomic_write_bytes(path, buf.getvalue())


def save_torch(path: str | os.PathLike, obj: Any) -> Path:
    """torch.save, atomically."""
    import torch

    buf = io.BytesIO()
    torch.save(obj, buf)
    return atomic_write_bytes(path, buf.getvalue())


def torch_file_problem(path: str | os.PathLike) -> str | None:
    """Why `path` is not an intact file written by `save_torch` (missing, not a torch archive,
    a record failing its checksum, unpicklable), or None. Reads the whole file once; tensors
    are memory-mapped, not loaded."""
    import torch

    path = Path(path)
    if not path.is_file():
        return "file is missing"
    try:
        with zipfile.ZipFile(path) as archive:
            bad = archive.testzip()
        if bad is not None:
            return f"damaged (record {bad} fails its checksum)"
        torch.load(path, map_location="cpu", weights_only=False, mmap=True)
    except OSError:
        raise  # permissions, I/O errors: the command line names the path and the cause
    except Exception as exc:  # noqa: BLE001 - whatever unpickling raises, the file is unreadable
        return f"unreadable ({_first_line(exc)})"
    return None


def load_torch(path: str | os.PathLike, verify: bool = False) -> Any:
    """torch.load of a file written by `save_torch`, on the CPU. verify: first check every
    record's checksum (`torch_file_problem`), which catches damage unpickling alone would not.
    UnreadableFileError naming the file when it is missing, truncated or damaged."""
    import torch

    path = Path(path)
    problem = torch_file_problem(path) if verify else None
    if problem is not None:
        raise UnreadableFileError(path, problem)
    try:
        return torch.load(path, map_location="cpu", weights_only=False)
    except FileNotFoundError:
        raise UnreadableFileError(path, "file is missing") from None
    except OSError:
        raise
    except Exception as exc:  # noqa: BLE001 - whatever unpickling raises, the file is unreadable
        raise UnreadableFileError(path, f"unreadable ({_first_line(exc)})") from None


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__
