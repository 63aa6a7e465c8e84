"""Start the whole stack on localhost as child processes, wait until each answers, stop them together."""

import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass

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


def start(settings: Settings, processes=STACK, timeout_s: float = 60.0, log=None) -> list[subprocess.Popen]:
    """Start every process and return once each service's /readyz answers 200. `log`: a file their
    output goes to (default: this process's)."""
    env = {**os.environ, **settings.to_env()}
    children = [
        subprocess.Popen([sys.executable, "-m", p.module, *p.args], env=env, stdout=log, stderr=log)
        for p in processes
    ]
    deadline = time.monotonic() + timeout_s
    try:
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
    for child in children:
        if child.poll() is None:
            child.send_signal(signal.SIGTERM)
    for child in children:
        try:
            child.wait(grace_s)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()
