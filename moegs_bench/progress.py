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
LINE_SECONDS = 30.0  # without a terminal: one plain line per task at most this often


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


def line_progress(write: Callable[[str], None], every_s: float = LINE_SECONDS,
                  clock: Callable[[], float] = time.monotonic) -> ProgressFactory:
    """A ProgressFactory for logs and pipes: each task writes `name: done/total (pct),
    elapsed, info` through `write` when it starts, at most every `every_s` seconds, and when
    it finishes, so a long run in a log shows that it is alive and how far it is."""
    lock = threading.Lock()

    def factory(name: str) -> Progress:
        state = {"start": None, "last": None}

        def update(done: int, total: int, info: dict | None = None) -> None:
            now = clock()
            with lock:
                if state["start"] is None:
                    state["start"] = now
                first = state["last"] is None
                finished = total > 0 and done >= total
                if not (first or finished or now - state["last"] >= every_s):
                    return
                state["last"] = now
            pct = f" ({100.0 * done / total:.0f}%)" if total > 0 else ""
            extra = _info_text(info)
            write(f"{name}: {done}/{total}{pct}, {now - state['start']:.0f} s" + (f", {extra}" if extra else ""))

        return update

    return factory


@contextmanager
def rich_progress() -> Iterator[ProgressFactory]:
    """A rich progress display (one bar per task) for the command line; yields a
    ProgressFactory. Redrawn by the reporting calls, at most every REFRESH_SECONDS. Where
    the output is not a terminal (a log, a pipe), plain lines instead (`line_progress`)."""
    from rich.console import Console
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

    console = Console()
    if not console.is_terminal:
        yield line_progress(lambda text: print(text, flush=True))
        return
    with RichProgress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                      TimeElapsedColumn(), TimeRemainingColumn(), TextColumn("{task.fields[info]}"),
                      auto_refresh=False, console=console) as bar:
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


__all__ = ["Progress", "ProgressFactory", "Tally", "task", "line_progress", "rich_progress"]
