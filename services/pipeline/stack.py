"""The services a run drives: the stack that answers at the configured URLs, or, when none does, the
embedded local stack (the three services and their workers on localhost, on the configured database)
started for this run and stopped after it (a process of it that exits is started again by
stack.Supervisor; one that keeps exiting fails the run: Services.check); and the profilers of other
devices a run is budgeted for (`--target NAME=URL`), which must answer."""

import contextlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
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
    devices: dict[str, ProfilerClient] = field(default_factory=dict)  # other devices' profilers, by name
    supervisor: stack.Supervisor | None = None  # the embedded stack's

    def check(self) -> None:
        """StackError when a process of the embedded stack keeps exiting."""
        if self.supervisor is not None and self.supervisor.failure is not None:
            raise StackError(f"the embedded stack failed: {self.supervisor.failure}")


def _answers(url: str) -> bool:
    try:
        return httpx.get(f"{url}/readyz", timeout=3).status_code == 200
    except httpx.TransportError:
        return False


@contextmanager
def services(settings: Settings, log_file: Path, devices: dict[str, str] | None = None) -> Iterator[Services]:
    devices = devices or {}
    silent = [f"{name} ({url})" for name, url in devices.items() if not _answers(url.rstrip("/"))]
    if silent:
        raise StackError(f"no profiler answers for --target {', '.join(silent)}")
    urls = {name: settings.service_url(name) for name in SERVICES}
    answering = {name: _answers(url) for name, url in urls.items()}
    with contextlib.ExitStack() as cleanup:
        supervisor = None
        if not any(answering.values()):
            supervisor = cleanup.enter_context(_embedded(settings, log_file))
        elif not all(answering.values()):
            missing = ", ".join(f"{n} ({urls[n]})" for n, ok in answering.items() if not ok)
            raise StackError(f"a stack answers, but not all of it: no answer from {missing}")
        clients = [ProfilerClient, SearchClient, TrainerClient]
        made = [cleanup.enter_context(c.from_settings(settings, timeout_s=600.0)) for c in clients]
        token = settings.api_token.get_secret_value() if settings.api_token else None
        others = {
            name: cleanup.enter_context(
                ProfilerClient(
                    httpx.Client(base_url=url.rstrip("/"), timeout=600.0),
                    token=token,
                    retry_s=settings.client_retry_s,
                )
            )
            for name, url in devices.items()
        }
        embedded = supervisor is not None
        yield Services(*made, embedded=embedded, urls=urls, devices=others, supervisor=supervisor)


@contextmanager
def _embedded(settings: Settings, log_file: Path) -> Iterator[stack.Supervisor]:
    """The local stack, started and supervised for the run, its output in `log_file`."""
    log_file.parent.mkdir(parents=True, exist_ok=True)
    with open(log_file, "ab") as log:
        try:
            children = stack.start(settings, log=log, timeout_s=180.0)
        except (stack.PortTaken, RuntimeError, TimeoutError) as exc:
            raise StackError(f"no stack answers and the embedded one did not start: {exc}") from None
        supervisor = stack.Supervisor(settings, children, log=log)
        supervisor.start()
        try:
            yield supervisor
        finally:
            supervisor.stop()
            stack.stop(children)
