"""Claims: which worker runs a run, so that workers sharing a store never train one twice
(docs/results.md, "Many workers").

A claim is a file created with O_CREAT|O_EXCL (one creator wins, on a local or NFSv3+ file
system) holding its holder: host, pid, start time, the key being run, the time-to-live and a
heartbeat that a daemon thread rewrites (atomically) every ttl/3. A claim is stale, and taken
over, when its holder's pid is dead on this host or its heartbeat is older than its ttl (a
worker killed on another machine); hosts sharing a store need clocks within a fraction of ttl.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import platform
import threading
import time
import uuid
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import ConfigError, MoegsError, StateWarning
from ..io import atomic_write_json

DEFAULT_TTL_S = 120.0  # a killed worker's run is free again within 2 min; heartbeat every 40 s
POLL_S = 1.0  # how often a waiting worker looks again


class RunClaimed(MoegsError):
    """A run is being run by another worker and waiting for it timed out."""

    def __init__(self, what: str, holder: dict[str, Any], waited_s: float):
        self.what, self.holder, self.waited_s = what, holder, waited_s
        super().__init__(f"{what} is being run by {describe(holder)}; gave up after waiting "
                         f"{waited_s:.0f} s (wait longer, or run it when that worker has finished)")


def describe(holder: dict[str, Any]) -> str:
    """`pid 123 on host h since <iso time>` (what is known of a holder)."""
    return (f"pid {holder.get('pid', '?')} on host {holder.get('host', '?')} "
            f"since {holder.get('since', '?')}")


def _now_iso() -> str:
    return _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds")


def pid_alive(pid: int) -> bool:
    """Whether process `pid` exists on this host (a process of another user counts)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    except (OSError, OverflowError):
        return False
    return True


def read_holder(path: Path) -> dict[str, Any] | None:
    """The holder recorded in claim file `path`; None when there is no claim. A claim being
    created (still empty) or damaged reads as {"heartbeat": <file mtime>}."""
    try:
        text = path.read_text()
        mtime = path.stat().st_mtime
    except FileNotFoundError:
        return None
    try:
        holder = json.loads(text)
        if isinstance(holder, dict) and isinstance(holder.get("heartbeat"), (int, float)):
            return holder
    except json.JSONDecodeError:
        pass
    return {"heartbeat": mtime}


def stale_reason(holder: dict[str, Any], ttl_s: float, now: float | None = None) -> str | None:
    """Why a claim is stale (its pid is dead on this host; its heartbeat is older than its ttl),
    or None while it is live."""
    now = time.time() if now is None else now
    pid = holder.get("pid")
    if holder.get("host") == platform.node() and isinstance(pid, int) and not pid_alive(pid):
        return f"pid {pid} is dead"
    ttl = float(holder.get("ttl_s") or ttl_s)
    age = now - float(holder["heartbeat"])
    if age > ttl:
        return f"no heartbeat for {age:.0f} s (ttl {ttl:.0f} s)"
    return None


@dataclass
class Claim:
    """A held claim: its file, the holder record, the heartbeat thread (stopped by release)."""

    path: Path
    holder: dict[str, Any]
    ttl_s: float
    waited_s: float = 0.0
    remove_empty_folder: bool = False
    _stop: threading.Event = field(default_factory=threading.Event, repr=False)
    _thread: threading.Thread | None = field(default=None, repr=False)

    @property
    def token(self) -> str:
        return self.holder["token"]

    def owned(self) -> bool:
        """Whether the claim file is still this claim (not taken over as stale)."""
        current = read_holder(self.path)
        return current is not None and current.get("token") == self.token

    def beat(self) -> None:
        """Refresh the heartbeat (atomic rewrite); a StateWarning if the claim was lost."""
        if not self.owned():
            warnings.warn(StateWarning(f"{self.path}: claim lost to another worker (heartbeat older "
                                       f"than {self.ttl_s:.0f} s?); this run may be trained twice"),
                          stacklevel=2)
            self._stop.set()
            return
        self.holder["heartbeat"] = time.time()
        atomic_write_json(self.path, self.holder)

    def _beat_loop(self) -> None:
        while not self._stop.wait(self.ttl_s / 3):
            try:
                self.beat()
            except OSError as exc:  # a passing file-system error: the next beat tries again
                warnings.warn(StateWarning(f"{self.path}: heartbeat not written ({exc})"), stacklevel=2)

    def start(self) -> None:
        self._thread = threading.Thread(target=self._beat_loop, name=f"claim {self.path}", daemon=True)
        self._thread.start()

    def release(self) -> None:
        """Stop the heartbeat and remove the claim file if it is still ours (and its folder
        when the claim was all it held)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        if self.owned():
            self.path.unlink(missing_ok=True)
        if self.remove_empty_folder:
            try:
                self.path.parent.rmdir()  # only when empty: a run never begun leaves no folder
            except OSError:
                pass


def _try_create(path: Path, holder: dict[str, Any]) -> bool:
    """Create claim file `path` holding `holder`; False when it exists."""
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    except FileExistsError:
        return False
    with os.fdopen(fd, "w") as f:
        f.write(json.dumps(holder, indent=2) + "\n")
        f.flush()
        os.fsync(f.fileno())
    return True


def _take_over(path: Path, judged: dict[str, Any]) -> None:
    """Remove the stale claim `judged` from `path`, unless another worker replaced it since:
    renamed aside first (atomic), then checked; a claim renamed by mistake is put back."""
    aside = path.with_name(f".{path.name}.{uuid.uuid4().hex}.stale")
    try:
        os.rename(path, aside)
    except FileNotFoundError:
        return
    taken = read_holder(aside)
    if taken is not None and taken.get("token") != judged.get("token"):
        try:
            os.link(aside, path)  # a live claim: back in place (fails if a third one exists)
        except FileExistsError:
            pass
    aside.unlink(missing_ok=True)


@contextmanager
def hold(path: str | Path, what: str, *, key: str | None = None, ttl_s: float = DEFAULT_TTL_S,
         wait_s: float | None = None, poll_s: float = POLL_S,
         remove_empty_folder: bool = False) -> Iterator[Claim]:
    """Hold the claim file `path` for the body of the `with` (`what` names the claimed thing
    in messages): created at once when free or stale, else waited for (polling every poll_s)
    up to wait_s seconds (None: as long as it takes), then RunClaimed naming the holder.
    remove_empty_folder: on release, remove the claim's folder if nothing else is in it."""
    if not ttl_s > 0:
        raise ConfigError(f"claim ttl must be a positive number of seconds, got {ttl_s}")
    path = Path(path)
    start = time.monotonic()
    holder = {"host": platform.node(), "pid": os.getpid(), "since": _now_iso(), "key": key,
              "ttl_s": float(ttl_s), "token": uuid.uuid4().hex}
    while True:
        holder["heartbeat"] = time.time()
        if _try_create(path, holder):
            break
        current = read_holder(path)
        if current is None:
            continue  # released meanwhile: try again at once
        if stale_reason(current, ttl_s) is not None:
            _take_over(path, current)
            continue
        waited = time.monotonic() - start
        if wait_s is not None and waited >= wait_s:
            raise RunClaimed(what, current, waited)
        time.sleep(poll_s if wait_s is None else max(0.0, min(poll_s, wait_s - waited)))
    claim = Claim(path, holder, float(ttl_s), time.monotonic() - start, remove_empty_folder)
    claim.start()
    try:
        yield claim
    finally:
        claim.release()


__all__ = ["DEFAULT_TTL_S", "POLL_S", "Claim", "RunClaimed", "describe", "hold", "pid_alive", "read_holder",
           "stale_reason"]
