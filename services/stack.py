"""Start the whole stack on localhost as child processes, wait until each answers, stop them together.

The launcher owns its children: SIGTERM or SIGINT stops every one (each gets SIGTERM, then SIGKILL
after a grace period), and on Linux a child also gets SIGTERM if the launcher itself dies without
warning (SIGKILL), so none is left serving. It refuses to start when one of its ports is taken: a
service left from an earlier run would otherwise answer in place of the new one. While it runs, a
Supervisor starts again a child that exited (a killed worker, a crashed service): the new worker finds
the old one's job at once (its process is gone) and resumes it; a child that keeps exiting is given up
on, and the launcher stops.
"""

import ctypes
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from typing import IO

import httpx

from shared.settings import Settings


@dataclass(frozen=True)
class Process:
    name: str
    module: str
    args: tuple[str, ...]
    service: str | None  # the service whose /readyz to wait for, None for background workers


STACK = (
    Process("profiler", "services.profiler.cli", ("serve",), "profiler"),
    Process("profiler-worker", "services.profiler.cli", ("worker",), None),
    Process("search", "services.search.cli", ("serve",), "search"),
    Process("trainer", "services.trainer.cli", ("serve",), "trainer"),
    Process("trainer-worker", "services.trainer.cli", ("worker",), None),
)


class PortTaken(RuntimeError):
    pass


class Stopped(BaseException):
    """SIGTERM reached the launcher (SIGINT raises KeyboardInterrupt): stop the stack."""


def raise_stopped(_signum, _frame) -> None:
    raise Stopped


def check_ports(settings: Settings, processes=STACK) -> None:
    """PortTaken naming each service whose port something already listens on."""
    taken = []
    for proc in processes:
        if proc.service is None:
            continue
        port = getattr(settings, f"{proc.service}_port")
        with socket.socket() as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn binds: TIME_WAIT is no owner
            try:
                s.bind((settings.host, port))
            except OSError:
                taken.append(f"{proc.name} ({settings.host}:{port})")
    if taken:
        raise PortTaken(f"port(s) already in use: {', '.join(taken)}; is another stack running?")


def _die_with_parent() -> None:  # in the child, before exec
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG: SIGTERM when the launcher dies


def spawn(settings: Settings, process: Process, log: IO | None = None) -> subprocess.Popen:
    """One process of the stack, its output to `log` (default: this process's)."""
    return subprocess.Popen(
        [sys.executable, "-m", process.module, *process.args],
        env={**os.environ, **settings.to_env()},
        stdout=log,
        stderr=log,
        preexec_fn=_die_with_parent if sys.platform == "linux" else None,
    )


def start(settings: Settings, processes=STACK, timeout_s: float = 60.0, log=None) -> list[subprocess.Popen]:
    """Start every process and return once each service's /readyz answers 200. `log`: a file their
    output goes to (default: this process's)."""
    check_ports(settings, processes)
    children: list[subprocess.Popen] = []
    try:
        for p in processes:
            children.append(spawn(settings, p, log))
        deadline = time.monotonic() + timeout_s
        for proc, child in zip(processes, children, strict=True):
            if proc.service is not None:
                _wait_ready(settings.service_url(proc.service), child, deadline)
    except BaseException:
        stop(children)
        raise
    return children


def _wait_ready(url: str, child: subprocess.Popen, deadline: float) -> None:
    while time.monotonic() < deadline:
        if child.poll() is not None:
            raise RuntimeError(f"{url}: the process exited with code {child.returncode}")
        try:
            if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    raise TimeoutError(f"{url} did not become ready in time")


def stop(children: list[subprocess.Popen], grace_s: float = 10.0) -> None:
    """SIGTERM every child, then SIGKILL those still running after `grace_s`; reaps them all."""
    for child in children:
        if child.poll() is None:
            child.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    for child in children:
        try:
            child.wait(max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()


class Supervisor(threading.Thread):
    """Starts again each child of `start` that exits, at most `max_restarts` times per process; past
    that, `failure` says which one keeps exiting and the thread ends. Stop it before `stop`."""

    def __init__(
        self,
        settings: Settings,
        children: list[subprocess.Popen],
        processes=STACK,
        log: IO | None = None,
        max_restarts: int = 3,  # a process that keeps dying is broken, not unlucky
        poll_s: float = 0.5,
    ):
        super().__init__(name="stack-supervisor", daemon=True)
        self.settings, self.children, self.processes, self.log = settings, children, processes, log
        self.max_restarts, self.poll_s = max_restarts, poll_s
        self.restarts = dict.fromkeys((p.name for p in processes), 0)
        self.failure: str | None = None
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.wait(self.poll_s):
            for i, (process, child) in enumerate(zip(self.processes, self.children, strict=True)):
                if child.poll() is None:  # poll() also reaps it, so its pid reads as gone at once
                    continue
                why = f"{process.name} exited with code {child.returncode}"
                if self.restarts[process.name] >= self.max_restarts:
                    self.failure = f"{why} after {self.max_restarts} restarts (see the stack's log)"
                    self.note(self.failure)
                    return
                self.restarts[process.name] += 1
                self.note(f"{why}; starting it again ({self.restarts[process.name]}/{self.max_restarts})")
                self.children[i] = spawn(self.settings, process, self.log)

    def note(self, line: str) -> None:
        if self.log is None:
            print(f"stack: {line}", file=sys.stderr, flush=True)
        else:
            self.log.write(f"stack: {line}\n".encode())
            self.log.flush()

    def stop(self) -> None:
        self.done.set()
        self.join()
