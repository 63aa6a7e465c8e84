"""What a request must pass before its route runs, in the order a client should hear about it.

FastAPI parses a body before it runs the route's dependencies (a request without its token but with
malformed JSON would hear about the JSON), reads a body of any content type, and takes JSON leniently
("10" and true are numbers to it). Two hooks put the checks in order:

- `RequestGuard`, a middleware, wraps the body's reading. When a route with a body asks for it
  (FastAPI has routed the request by then), it checks, in order: the bearer token, on routes that take
  one (401 with `WWW-Authenticate: Bearer`); a declared Content-Length over `max_body_bytes` (413,
  before a byte is read); the body received within `body_timeout_s` (408) and `max_body_bytes` (413,
  counted on the bytes received, chunked bodies too); sent as JSON (415); no NUL or unpaired surrogate
  in its strings (422: PostgreSQL stores neither); JSON's types taken strictly, a string or a boolean
  is not a number (422 naming the field; an integer still is a number where a float is expected).
  The value it checked is left in the scope, for the route (shared/api.py's `CheckedRoute`).
- `check_parameters`, a dependency of every route (run before the route's own), checks the token on
  routes that take one, then that no path or query parameter the route reads holds a NUL (422).

Their errors are ApiErrors, which FastAPI lets through from a body read (they are HTTPExceptions).

A body over `SMALL_BODY` is parsed and validated in a checker process, not in the service's: JSON
parsing and pydantic hold the GIL for their whole run (a 16 MB body takes seconds), so a thread would
hold the event loop, and /healthz, just as long.
"""

import asyncio
import gc
import hmac
import json
import multiprocessing
import os
import pickle
import threading
import time
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from functools import lru_cache
from typing import Annotated, Any

import anyio
from fastapi import Depends, Request
from fastapi.dependencies.models import Dependant
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from fastapi.security.utils import get_authorization_scheme_param
from pydantic import TypeAdapter, ValidationError
from starlette.datastructures import Headers
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from shared.errors import RETRY_AFTER_S, ApiError, invalid, invalid_input, unauthorized
from shared.settings import Settings

JSON_TYPE = "application/json"
CHECKED = "unast.checked_body"  # the scope's key for the body's checked value
FROZEN = "unast.frozen_body"  # set when the checked value's objects are frozen (`_unpickled`)

SMALL_BODY = 256 * 1024  # checked where it arrives: milliseconds of the event loop
CHECKERS = 2  # checker processes per service process, started at the first larger body

_bearer = HTTPBearer(
    auto_error=False, description="Required on mutating endpoints when UNAST_API_TOKEN is set."
)


def token_ok(settings: Settings, authorization: str | None) -> bool:
    """Whether an Authorization header carries the configured token (any does when none is set)."""
    if settings.api_token is None:
        return True
    scheme, given = get_authorization_scheme_param(authorization)
    expected = settings.api_token.get_secret_value().encode()
    return scheme.lower() == "bearer" and hmac.compare_digest(given.encode(), expected)


def require_token(
    request: Request, _credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]
) -> None:
    """Dependency of mutating endpoints. It marks the route for the guard, which checks the token
    before anything else, and documents the scheme in the OpenAPI."""
    if not token_ok(request.app.state.settings, request.headers.get("authorization")):
        raise unauthorized()


# -- what a route takes (FastAPI's route objects, as they are once routed) -----------------------------


def routed(scope: Scope) -> Any:
    """The API route FastAPI chose for this request (as included: prefix and router dependencies),
    or None before routing or for other routes (docs, 404)."""
    context = (scope.get("fastapi") or {}).get("effective_route_context")
    route = context if context is not None else scope.get("route")
    return route if getattr(route, "dependant", None) is not None else None


def params(dependant: Dependant, kind: str) -> list:
    """The route's parameters of one kind ("path_params", "query_params", ...), its dependencies' too."""
    return [*getattr(dependant, kind), *(p for d in dependant.dependencies for p in params(d, kind))]


def depends_on_token(dependant: Dependant) -> bool:
    return any(d.call is require_token or depends_on_token(d) for d in dependant.dependencies)


def body_annotation(route: Any) -> Any:
    """The type the route's body is validated as, with what its Body(...) declares."""
    field = route.body_field
    return Annotated[field.field_info.annotation, field.field_info]


class _PerRoute:
    """What the checks need of a route, worked out once and kept on the route itself (routes are not
    hashable, and an id outlives its route: a later app's route could inherit a dead one's answers)."""

    def _get(self, route: Any, what: str, make) -> Any:
        cache = route.__dict__.setdefault("_unast_guard", {})
        if what not in cache:
            cache[what] = make()
        return cache[what]

    def takes_token(self, route: Any) -> bool:
        return self._get(route, "token", lambda: depends_on_token(route.dependant))

    def query_names(self, route: Any) -> set[str]:
        return self._get(route, "query", lambda: {p.alias for p in params(route.dependant, "query_params")})

    def body_type(self, route: Any) -> TypeAdapter:
        return self._get(route, "body", lambda: TypeAdapter(body_annotation(route)))

    def body_key(self, route: Any) -> bytes:
        """The body's type as a checker process receives it (classes travel by their import path)."""
        return self._get(route, "key", lambda: pickle.dumps(body_annotation(route)))


_ROUTES = _PerRoute()


# -- the path and the query ----------------------------------------------------------------------------


def check_parameters(request: Request) -> None:
    """App-wide dependency: the token first, then no NUL in a path or query parameter the route reads."""
    route = routed(request.scope)
    if route is None:
        return
    if _ROUTES.takes_token(route) and not token_ok(
        request.app.state.settings, request.headers.get("authorization")
    ):
        raise unauthorized()
    for name, value in request.path_params.items():
        if "\x00" in str(value):
            raise invalid(f"path.{name}", "NUL characters are not allowed")
    names = _ROUTES.query_names(route)
    for name, value in request.query_params.multi_items():
        if name in names and "\x00" in value:
            raise invalid(f"query.{name}", "NUL characters are not allowed")


# -- the body ------------------------------------------------------------------------------------------


class RequestGuard:
    def __init__(self, app: ASGIApp, settings: Settings) -> None:
        self.app = app
        self.settings = settings

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        try:
            await self.app(scope, self._guarded(scope, receive), send)
        finally:
            if scope.pop(FROZEN, False):
                scope.pop(CHECKED, None)  # freed by reference counting, frozen or not
                _thaw()

    def _too_large(self) -> ApiError:
        return ApiError(
            413, f"request body exceeds {self.settings.max_body_bytes} bytes", headers={"Connection": "close"}
        )

    def _guarded(self, scope: Scope, receive: Receive) -> Receive:
        first, received = True, 0

        async def guarded_receive() -> Message:
            nonlocal first, received
            if first:
                first = False
                route = routed(scope)
                if route is not None and route.body_field is not None:  # the route reads its body now
                    headers = Headers(scope=scope)
                    if _ROUTES.takes_token(route) and not token_ok(
                        self.settings, headers.get("authorization")
                    ):
                        raise unauthorized()
                    # the declared size after the token: neither reads a byte of the body, so every
                    # client hears the one order the README gives (401, then 413), at no cost
                    declared = headers.get("content-length", "")
                    if declared.isdigit() and int(declared) > self.settings.max_body_bytes:
                        raise self._too_large()
                    body = await self._receive_body(receive)
                    if body is None:
                        return {"type": "http.disconnect"}
                    if body:  # an empty one: FastAPI says what is missing
                        scope[CHECKED] = await self._check_body(scope, headers, route, body)
                    return {"type": "http.request", "body": body, "more_body": False}
            message = await receive()  # a route without a body, or a disconnect listener afterwards
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.settings.max_body_bytes:
                    raise self._too_large()
            return message

        return guarded_receive

    async def _receive_body(self, receive: Receive) -> bytes | None:
        """The whole body; None if the client went away."""
        chunks: list[bytes] = []
        size = 0
        with anyio.move_on_after(self.settings.body_timeout_s):
            while True:
                message = await receive()
                if message["type"] == "http.disconnect":
                    return None
                chunk = message.get("body", b"")
                size += len(chunk)
                if size > self.settings.max_body_bytes:
                    raise self._too_large()
                chunks.append(chunk)
                if not message.get("more_body", False):
                    return b"".join(chunks)
        raise ApiError(
            408,
            f"the request body did not arrive within {self.settings.body_timeout_s:g} s",
            headers={"Connection": "close"},
        )

    async def _check_body(self, scope: Scope, headers: Headers, route: Any, body: bytes) -> Any:
        """The body's value, checked where it arrived if it is small, else in a checker process."""
        content_type = headers.get("content-type")
        if not _is_json(content_type):
            raise ApiError(
                415,
                f"send the body as JSON, with Content-Type: {JSON_TYPE} "
                f"(got {content_type or 'no Content-Type'})",
                details={"header": "Content-Type", "expected": JSON_TYPE},
            )
        if len(body) <= SMALL_BODY:
            return check_json(_ROUTES.body_type(route), body)
        checkers = _checkers()
        try:
            # submitted from a thread: the first submit starts the checker processes (a fork of this
            # process, its whole memory mapped again), which held the event loop for up to 100 ms
            checked = await anyio.to_thread.run_sync(
                checkers.submit, _check_apart, _ROUTES.body_key(route), body
            )
            value, refusal = await asyncio.wrap_future(checked)
        except BrokenProcessPool:  # a checker died (out of memory?): the next body gets new ones
            _forget(checkers)
            raise ApiError(
                503, "the body could not be checked; try again", headers={"Retry-After": str(RETRY_AFTER_S)}
            ) from None
        if refusal is not None:
            status, message, details = refusal
            raise ApiError(status, message, details=details)
        _hold_frozen()  # matched by the _thaw when the request ends, whatever happens in between
        scope[FROZEN] = True
        return await anyio.to_thread.run_sync(_unpickled, value)


def _is_json(content_type: str | None) -> bool:
    media = (content_type or "").split(";", 1)[0].strip().lower()
    return media == JSON_TYPE or (media.startswith("application/") and media.endswith("+json"))


def check_json(adapter: TypeAdapter, body: bytes) -> Any:
    """The body's value, JSON's types taken strictly; a 422 naming the field otherwise."""
    if b"\\u" in body:  # NUL and unpaired surrogates can only be written as \u escapes
        try:
            problem = _bad_text(json.loads(body), ("body",))
        except (ValueError, RecursionError):
            # not JSON, or nested deeper than Python recurses: the validation below says so (422)
            problem = None
        if problem is not None:
            raise invalid(*problem)
    try:
        return adapter.validate_json(body, strict=True)
    except ValidationError as exc:
        errors = exc.errors(include_url=False, include_context=False, include_input=False)
        raise invalid_input(errors, prefix=("body",)) from None


def _bad_text(value: Any, loc: tuple) -> tuple[str, str] | None:
    """(field, problem) of the first string a database could not store, or None."""
    if isinstance(value, str):
        if "\x00" in value:
            return ".".join(map(str, loc)), "NUL characters are not allowed"
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return ".".join(map(str, loc)), "unpaired surrogates are not allowed"
        return None
    items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
    for key, item in items:
        if isinstance(key, str) and (problem := _bad_text(key, (*loc, "<key>"))):
            return problem
        if problem := _bad_text(item, (*loc, key)):
            return problem
    return None


# -- the checker processes -----------------------------------------------------------------------------

_pool: ProcessPoolExecutor | None = None
_pool_lock = threading.Lock()  # apps on several event loops (tests) share the process's checkers


def _checkers() -> ProcessPoolExecutor:
    global _pool
    with _pool_lock:
        if _pool is None:
            # spawned, not forked: a fork would copy locks the service's other threads hold
            spawn = multiprocessing.get_context("spawn")
            _pool = ProcessPoolExecutor(CHECKERS, spawn, _start_checker, (os.getpid(),))
        return _pool


def _forget(checkers: ProcessPoolExecutor) -> None:
    global _pool
    with _pool_lock:
        if _pool is checkers:
            _pool = None
    checkers.shutdown(wait=False, cancel_futures=True)


def _start_checker(service: int) -> None:
    # without the cyclic collector, which would walk a big body's million objects again and again
    gc.disable()
    threading.Thread(target=_exit_with, args=(service,), daemon=True).start()


def _exit_with(service: int) -> None:
    """A service that dies by a signal runs no exit handler to stop its checkers: they see it gone."""
    while os.getppid() == service:
        time.sleep(1)
    os._exit(0)


@lru_cache(maxsize=64)
def _adapter(key: bytes) -> TypeAdapter:
    return TypeAdapter(pickle.loads(key))


def _check_apart(key: bytes, body: bytes) -> tuple[bytes | None, tuple | None]:
    """In a checker process: (the body's value pickled, None), or (None, the refusal's status, message,
    details). Pickled here, so that the service's process unpickles it where `_unpickled` says."""
    gc.collect()  # what cycles the last check left (the collector is off here)
    try:
        return pickle.dumps(check_json(_adapter(key), body), pickle.HIGHEST_PROTOCOL), None
    except ApiError as exc:
        return None, (exc.status, exc.message, exc.details)


# A valid 16 MB body is about two million objects. Built with the cyclic collector on, they trigger
# full collections, and one full collection walks every object in one step, holding the GIL (and
# /healthz) for half a second. So they are built with the collector paused and then frozen (gc.freeze:
# no collection walks them); reference counting still frees them when the request ends, and the heap
# is thawed once no frozen body is held.
_frozen_bodies = 0  # requests whose body may be frozen; the heap is thawed when none is left
_freezing = threading.Lock()


def _hold_frozen() -> None:
    global _frozen_bodies
    with _freezing:
        _frozen_bodies += 1


def _unpickled(data: bytes) -> Any:
    """In a thread of the service's process: a checked body's value, its objects frozen."""
    with _freezing:  # one at a time: each pauses the collector for the whole process
        collecting = gc.isenabled()
        gc.disable()
        try:
            value = pickle.loads(data)
        finally:
            gc.freeze()
            if collecting:
                gc.enable()
    return value


def _thaw() -> None:
    """A request that held a frozen body is over: when it was the last, the heap is walked again."""
    global _frozen_bodies
    with _freezing:
        _frozen_bodies -= 1
        if _frozen_bodies == 0:
            gc.unfreeze()
