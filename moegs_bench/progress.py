"""The one progress protocol of the toolkit, and its rich progress bar.

Long work reports `progress(done, total, info)`: `done` units of `total` finished, `info` a
few named numbers to show (loss, Gaussians). Code that runs several tasks takes a
`ProgressFactory`, `factory(task name) -> Progress`. Nothing here is required: every function
that reports progress accepts None.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

# progress(done, total, info): `info` maps a label to a number or text, or is None
Progress = Callable[..., None]
ProgressFactory = Callable[[str], Progress]

REFRESH_SECONDS = 0.2  # rich's own refresh thread slows CPU-bound torch work several-fold


def task(factory: ProgressFactory | None, name: str) -> Progress | None:
    """factory(name), or None without a factory."""
    return factory(name) if factory is not None else None


class Tally:
    """Turns increments from several threads into `progress(done, total)` calls.

    progress: where to report (None: count only); total: the number of units.
    """

    def __init__(self, progress: Progress | None, total: int):
        self.progress, self.total, self.done = progress, total, 0
        self._lock = threading.Lock()
        if progress is not None:
            progress(0, total)

    def advance(self, n: int = 1) -> None:
        with self._lock:
            self.done += n
            if self.progress is not None:
                self.progress(self.done, self.total)


def _info_text(info: dict | None) -> str:
    return " ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in (info or {}).items())


@contextmanager
def rich_progress() -> Iterator[ProgressFactory]:
    """A rich progress display (one bar per task) for the command line; yields a
    ProgressFactory. Redrawn by the reporting calls, at most every REFRESH_SECONDS."""
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )
    from rich.progress import (
        Progress as RichProgress,
    )

    with RichProgress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                      TimeElapsedColumn(), TimeRemainingColumn(), TextColumn("{task.fields[info]}"),
                      auto_refresh=False) as bar:
        lock = threading.Lock()
        last = [0.0]

        def factory(name: str) -> Progress:
            ids: list[int] = []

            def update(done: int, total: int, info: dict | None = None) -> None:
                with lock:
                    if not ids:
                        ids.append(bar.add_task(name, total=total, info=""))
                    bar.update(ids[0], completed=done, total=total, info=_info_text(info))
                    now = time.monotonic()
                    if now - last[0] > REFRESH_SECONDS or done >= total:
                        last[0] = now
                        bar.refresh()

            return update

        yield factory


__all__ = ["Progress", "ProgressFactory", "Tally", "task", "rich_progress"]
