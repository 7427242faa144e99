"""Fingerprints of what a prepared scene is made from (docs/datasets.md, "Re-running prepare").

    file_fingerprint(path, exact)   {"kind", "size", "mtime_ns", "hash"} of one file
    changed_inputs(old, new)        which recorded inputs differ, one short reason each
    digest(value)                   16 hex characters of sha256 over canonical JSON
    files_digest(root, rels)        digest over the full content of output files

Two kinds of file fingerprints:
- "content" (camera files: poses_bounds.npy, cameras_parameters.txt, HyperNeRF's jsons): sha256
  of the whole file. Compared on size and hash; a new mtime alone is no change.
- "media" (videos, images): blake2b of the size, the first and the last MiB (cheap on
  multi-GB videos; exact for files up to 2 MiB). Compared on size, hash and mtime, since the
  hash does not see the middle of a large file.
A non-file input (a digest of converted cameras, of a step's outputs) is {"digest": ...} and
compared as a whole.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

MIB = 1 << 20
MEDIA_EDGE = MIB  # bytes hashed at each end of a media file


def _sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(4 * MIB), b""):
            h.update(block)
    return h.hexdigest()


def _edges_hash(path: Path, size: int) -> str:
    """blake2b of the size, the first MEDIA_EDGE bytes and the last MEDIA_EDGE bytes."""
    h = hashlib.blake2b(str(size).encode(), digest_size=16)
    with open(path, "rb") as f:
        h.update(f.read(MEDIA_EDGE))
        if size > MEDIA_EDGE:
            f.seek(max(MEDIA_EDGE, size - MEDIA_EDGE))
            h.update(f.read(MEDIA_EDGE))
    return h.hexdigest()


def file_fingerprint(path: str | Path, exact: bool) -> dict[str, Any]:
    """Fingerprint of one file: exact=True hashes all of it ("content"), False its size and
    both ends ("media"). Raises OSError if the file cannot be read."""
    path = Path(path)
    st = path.stat()
    if exact:
        return {"kind": "content", "size": st.st_size, "mtime_ns": st.st_mtime_ns, "hash": _sha256_file(path)}
    return {"kind": "media", "size": st.st_size, "mtime_ns": st.st_mtime_ns, "hash": _edges_hash(path, st.st_size)}


def _differs(old: dict, new: dict) -> str | None:
    """Why one recorded input differs from its current fingerprint, or None if it does not."""
    if old.get("kind") != new.get("kind"):
        return "read differently"
    if "digest" in new:
        return None if old.get("digest") == new["digest"] else "changed"
    if old.get("size") != new.get("size"):
        return f"changed (size {old.get('size')} -> {new.get('size')} bytes)"
    if old.get("hash") != new.get("hash"):
        return "changed (content)"
    if new.get("kind") == "media" and old.get("mtime_ns") != new.get("mtime_ns"):
        return "changed (modification time)"
    return None


def changed_inputs(old: dict[str, dict] | None, new: dict[str, dict]) -> list[str]:
    """One reason per input of `new` that differs from `old` (name -> fingerprint), in name
    order; [] when all are as recorded."""
    old = old or {}
    out = []
    for name in sorted(set(old) | set(new)):
        if name not in old:
            out.append(f"{name} is new")
        elif name not in new:
            out.append(f"{name} is no longer read")
        else:
            why = _differs(old[name], new[name])
            if why:
                out.append(f"{name} {why}")
    return out


def digest(value: Any) -> str:
    """16 hex characters of sha256 over `value` as canonical JSON (sorted keys)."""
    text = json.dumps(value, sort_keys=True, separators=(",", ":"), default=float)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def value_input(value: Any, kind: str = "value") -> dict[str, str]:
    """A non-file input: {"kind", "digest"} of a JSON-able value."""
    return {"kind": kind, "digest": digest(value)}


def files_digest(root: Path, rels: Iterable[str]) -> str:
    """16 hex characters over (relative path, sha256 of the whole file) of each output file."""
    h = hashlib.sha256()
    for rel in sorted(rels):
        h.update(rel.encode() + b"\0" + _sha256_file(Path(root) / rel).encode() + b"\n")
    return h.hexdigest()[:16]


__all__ = ["file_fingerprint", "changed_inputs", "digest", "value_input", "files_digest"]
