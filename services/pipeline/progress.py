"""Progress of the stages: a bar per stage on a terminal (rich), plain lines when output is not one
(a log file, CI), at most one line per stage every few seconds."""

import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager

from rich.console import Console
from rich.progress import (
    BarColumn,
    Progress,
    TaskProgressColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

PLAIN_EVERY_S = 10.0


class Reporter:
    """One per run. `stage(name)` gives a handle whose update(fraction, message) moves that stage."""

    def __init__(self, stream=None):
        self.stream = stream or sys.stdout
        self.terminal = self.stream.isatty()
        self.console = Console(file=self.stream, highlight=False)
        self.progress = None
        if self.terminal:
            self.progress = Progress(
                TextColumn("[bold]{task.description:<10}"),
                BarColumn(),
                TaskProgressColumn(),
                TimeElapsedColumn(),
                TimeRemainingColumn(),
                TextColumn("{task.fields[message]}"),
                console=self.console,
            )

    def __enter__(self) -> "Reporter":
        if self.progress is not None:
            self.progress.start()
        return self

    def __exit__(self, *_exc) -> None:
        if self.progress is not None:
            self.progress.stop()

    def line(self, text: str) -> None:
        self.console.print(text, markup=False, highlight=False, soft_wrap=True)

    @contextmanager
    def stage(self, name: str) -> Iterator["StageProgress"]:
        handle = StageProgress(self, name)
        try:
            yield handle
        finally:
            handle.close()


class StageProgress:
    def __init__(self, reporter: Reporter, name: str):
        self.reporter, self.name = reporter, name
        self.task = None
        self.said_at = 0.0
        if reporter.progress is not None:
            self.task = reporter.progress.add_task(name, total=1.0, message="")

    def update(self, fraction: float, message: str = "", eta_s: float | None = None) -> None:
        fraction = min(1.0, max(0.0, fraction))
        if self.task is not None:
            self.reporter.progress.update(self.task, completed=fraction, message=message[:60])
            return
        if time.monotonic() - self.said_at >= PLAIN_EVERY_S or fraction >= 1.0:
            eta = f", about {eta_s:.0f} s left" if eta_s else ""
            self.reporter.line(f"[{self.name}] {fraction:4.0%} {message}{eta}")
            self.said_at = time.monotonic()

    def done(self, message: str) -> None:
        if self.task is not None:
            self.reporter.progress.update(self.task, completed=1.0, message=message[:60])
        self.reporter.line(f"[{self.name}] {message}")
        self.said_at = time.monotonic()

    def close(self) -> None:
        if self.task is not None:
            self.reporter.progress.stop_task(self.task)
