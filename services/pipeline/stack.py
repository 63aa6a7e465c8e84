"""The services a run drives: the stack that answers at the configured URLs, or, when none does, the
embedded local stack (the three services and their workers on localhost, on the configured database)
started for this run and stopped after it."""

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

from services import stack
from shared.clients.profiler import ProfilerClient
from shared.clients.search import SearchClient
from shared.clients.trainer import TrainerClient
from shared.settings import Settings

SERVICES = ("profiler", "search", "trainer")


class StackError(RuntimeError):
    pass


@dataclass
class Services:
    profiler: ProfilerClient
    search: SearchClient
    trainer: TrainerClient
    embedded: bool
    urls: dict[str, str]


def _answers(url: str) -> bool:
    try:
        return httpx.get(f"{url}/readyz", timeout=3).status_code == 200
    except httpx.TransportError:
        return False


@contextmanager
def services(settings: Settings, log_file: Path) -> Iterator[Services]:
    urls = {name: settings.service_url(name) for name in SERVICES}
    answering = {name: _answers(url) for name, url in urls.items()}
    children = []
    if not any(answering.values()):
        log_file.parent.mkdir(parents=True, exist_ok=True)
        with open(log_file, "ab") as log:
            try:
                children = stack.start(settings, log=log, timeout_s=180.0)
            except (stack.PortTaken, RuntimeError, TimeoutError) as exc:
                raise StackError(f"no stack answers and the embedded one did not start: {exc}") from None
    elif not all(answering.values()):
        missing = ", ".join(f"{n} ({urls[n]})" for n, ok in answering.items() if not ok)
        raise StackError(f"a stack answers, but not all of it: no answer from {missing}")
    clients = [ProfilerClient, SearchClient, TrainerClient]
    made = [c.from_settings(settings, timeout_s=600.0) for c in clients]
    try:
        yield Services(*made, embedded=bool(children), urls=urls)
    finally:
        for client in made:
            client.close()
        if children:
            stack.stop(children)
