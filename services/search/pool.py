"""The solves a search service runs at once: at most `concurrency` (UNAST_SEARCH_CONCURRENCY), at most
`queue` more waiting for one of them (UNAST_SEARCH_QUEUE); beyond that a request is a 429 with
Retry-After, so a burst of long requests cannot pile up solves that share the cores and all finish late.

A solve runs in a worker thread while its request's task watches the client: a client that disconnects
has its solve cancelled (the solver stops at its next step and interrupts a running MIP), so no solve
runs on to its time limit for nobody.
"""

import threading
from collections.abc import Callable
from typing import TypeVar

import anyio
from fastapi import Request
from starlette.exceptions import HTTPException

T = TypeVar("T")

RETRY_AFTER_S = 1  # a hint: the solves the service is sized for take seconds, not minutes
DISCONNECT_POLL_S = 0.1


class SolvePool:
    def __init__(self, concurrency: int, queue: int):
        self.limiter = anyio.CapacityLimiter(concurrency)
        self.capacity = concurrency + queue
        self.admitted = 0  # solves running or waiting; changed on the event loop only, so no lock

    async def run(self, request: Request, solve: Callable[[threading.Event], T]) -> T:
        """solve(cancel) in a worker thread, once one of the `concurrency` slots is free."""
        if self.admitted >= self.capacity:
            raise HTTPException(
                429,
                f"{self.admitted} searches are running or waiting; retry later",
                headers={"Retry-After": str(RETRY_AFTER_S)},
            )
        self.admitted += 1
        cancel = threading.Event()
        result: dict = {}

        def work() -> None:
            # run in the thread, and the error carried out of the task group as it is
            try:
                result["value"] = solve(cancel)
            except Exception as exc:
                result["error"] = exc

        try:
            async with anyio.create_task_group() as watch:
                watch.start_soon(_watch, request, cancel)
                await anyio.to_thread.run_sync(work, limiter=self.limiter)
                watch.cancel_scope.cancel()
        finally:
            self.admitted -= 1
        if "error" in result:
            raise result["error"]
        return result["value"]


async def _watch(request: Request, cancel: threading.Event) -> None:
    while not await request.is_disconnected():
        await anyio.sleep(DISCONNECT_POLL_S)
    cancel.set()
