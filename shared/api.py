"""What every service's FastAPI app has in common: settings on app.state, health, auth, errors.

A service's main.py builds its app with `service_app(...)`, then includes its own routers (made with
`route_class=CheckedRoute`, so that FastAPI takes a body as the guard checked it). Requests pass
shared/guard.py's checks (token, NUL, size, time, content type, strict JSON) before their route; every
error, unexpected ones and a failing database included, answers in shared/errors.py's shape. A path is
one resource: `/v1/jobs/` is a 404, not a redirect.
"""

import logging
from collections.abc import Callable, Iterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path
from typing import Annotated, Any

import anyio
from fastapi import APIRouter, Depends, FastAPI, Request, Response
from fastapi import Path as PathParam
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from shared.db import engine_from_settings, is_at_head, make_sessionmaker, ping, upgrade
from shared.errors import RETRY_AFTER_S, CatchUnexpected, error_body, install_error_handlers, reason
from shared.guard import CHECKED, RequestGuard, check_parameters, require_token
from shared.openapi import document_errors
from shared.settings import Settings

VERSION = "0.1.0"

log = logging.getLogger("unast.api")


def get_settings_from_app(request: Request) -> Settings:
    return request.app.state.settings


SettingsDep = Annotated[Settings, Depends(get_settings_from_app)]

TokenDep = Depends(require_token)

# the largest value an INTEGER column holds (PostgreSQL's): ids and paging stop there, not in the database
DB_INT_MAX = 2**31 - 1
RowId = Annotated[int, PathParam(ge=1, le=DB_INT_MAX, description="A stored row's id.")]


class _CheckedRequest(Request):
    async def json(self) -> Any:
        await self.body()  # the guard checks the body as it is read
        return self.scope[CHECKED] if CHECKED in self.scope else await super().json()


class CheckedRoute(APIRoute):
    """A route that takes its body as the guard checked it (out of the service's process when it is
    large): FastAPI would parse and validate it again, on the event loop, where a 16 MB body holds
    every other request, /healthz included, for seconds. The value is the same: JSON's types taken
    strictly are valid taken leniently, and a validated model passes FastAPI's validation as it is."""

    def get_route_handler(self) -> Callable[[Request], Any]:
        handle = super().get_route_handler()

        async def checked(request: Request) -> Response:
            return await handle(_CheckedRequest(request.scope, request.receive))

        return checked


class NotReady(Exception):
    """A readiness check failed for a reason safe to show anyone (other exceptions are only logged)."""


health = APIRouter(tags=["health"])


@health.get("/healthz", summary="The process is up")
async def healthz(request: Request) -> dict:
    # answered on the event loop: no thread, no database, whatever those are doing
    return {"status": "ok", "service": request.app.title, "version": VERSION}


@health.get(
    "/readyz", summary="The service's dependencies answer", responses={503: {"description": "Not ready"}}
)
async def readyz(request: Request):
    state = request.app.state
    if getattr(state, "ready_limiter", None) is None:  # its own threads: never queued behind requests
        state.ready_limiter = anyio.CapacityLimiter(2)
    try:
        with anyio.fail_after(state.ready_timeout_s):
            await anyio.to_thread.run_sync(
                state.ready_check, abandon_on_cancel=True, limiter=state.ready_limiter
            )
    except TimeoutError:
        message = f"not ready: no answer within {state.ready_timeout_s:g} s"
    except NotReady as exc:
        message = f"not ready: {exc}"
    except SQLAlchemyError as exc:
        log.warning("not ready: the database failed (%s)", reason(exc))
        message = "not ready: the database does not answer"
    except Exception as exc:
        log.warning("not ready: %s", reason(exc))
        message = "not ready: a dependency failed (the service's log says why)"
    else:
        return {"status": "ready", "service": request.app.title}
    return JSONResponse(error_body(503, message), 503, headers={"Retry-After": str(RETRY_AFTER_S)})


def service_app(
    name: str,
    settings: Settings,
    *,
    description: str,
    ready_check: Callable[[], None] = lambda: None,
    ready_timeout_s: float = 5.0,
    lifespan: Callable[[FastAPI], AbstractAsyncContextManager] | None = None,
    database: bool = False,
) -> FastAPI:
    app = FastAPI(
        title=name,
        version=VERSION,
        description=description,
        lifespan=lifespan,
        dependencies=[Depends(check_parameters)],
        # a path is one resource: a 307 to it has an empty body, and many clients do not follow one
        redirect_slashes=False,
    )
    app.add_middleware(RequestGuard, settings=settings)
    app.add_middleware(CatchUnexpected)  # the outermost of ours: it sees what the others raise
    app.state.settings = settings
    app.state.ready_check = ready_check
    app.state.ready_timeout_s = ready_timeout_s
    install_error_handlers(app, database=database)
    app.include_router(health)
    document_errors(app, database=database)
    return app


def get_session(request: Request) -> Iterator[Session]:
    with request.app.state.sessionmaker() as session:
        yield session


SessionDep = Annotated[Session, Depends(get_session)]


def stateful_service_app(
    name: str, settings: Settings, *, description: str, migrations: Path, version_table: str
) -> FastAPI:
    """A service app with a database: migrations applied at start-up, /readyz checks the store, and a
    database that is down or hung is a 503 within the configured timeouts."""
    engine = engine_from_settings(settings)

    @asynccontextmanager
    async def lifespan(_app: FastAPI):
        await run_in_threadpool(upgrade, engine, migrations, version_table)
        yield
        engine.dispose()

    def ready() -> None:
        ping(engine)
        if not is_at_head(engine, migrations, version_table):
            raise NotReady("the database schema is not at the latest migration")

    app = service_app(
        name,
        settings,
        description=description,
        ready_check=ready,
        # a new connection, or a wait for a pooled one, then the two statements
        ready_timeout_s=settings.database_connect_timeout_s + settings.database_pool_timeout_s + 1,
        lifespan=lifespan,
        database=True,
    )
    app.state.engine = engine
    app.state.sessionmaker = make_sessionmaker(engine)
    return app
