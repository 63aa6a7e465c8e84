"""What every service's FastAPI app has in common: settings on app.state, health, auth, errors.

A service's main.py builds its app with `service_app(...)`, then includes its own routers.
"""

import hmac
from collections.abc import Callable, Iterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path
from typing import Annotated

from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.orm import Session
from starlette.datastructures import Headers
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from shared.db import is_at_head, make_engine, make_sessionmaker, ping, upgrade
from shared.errors import ApiError, error_body, install_error_handlers
from shared.settings import Settings

VERSION = "0.1.0"


class BodyLimit:
    """413 for request bodies over the limit, counted on the bytes received (chunked bodies too).

    Starlette's own limiter answers 413 in plain text; this one keeps the JSON error shape.
    """

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        message = f"request body exceeds {self.max_bytes} bytes"
        declared = Headers(scope=scope).get("content-length", "")
        if declared.isdigit() and int(declared) > self.max_bytes:
            return await JSONResponse(error_body(413, message), 413)(scope, receive, send)
        received = 0

        async def counting_receive() -> Message:
            nonlocal received
            msg = await receive()
            if msg["type"] == "http.request":
                received += len(msg.get("body", b""))
                if received > self.max_bytes:  # raised into the body read: the route answers 413
                    raise HTTPException(413, message)
            return msg

        await self.app(scope, counting_receive, send)


def get_settings_from_app(request: Request) -> Settings:
    return request.app.state.settings


SettingsDep = Annotated[Settings, Depends(get_settings_from_app)]

_bearer = HTTPBearer(
    auto_error=False, description="Required on mutating endpoints when UNAST_API_TOKEN is set."
)


def require_token(
    settings: SettingsDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> None:
    """Dependency for mutating endpoints: checks the bearer token when one is configured."""
    if settings.api_token is None:
        return
    expected = settings.api_token.get_secret_value().encode()
    given = credentials.credentials.encode() if credentials else b""
    if not hmac.compare_digest(given, expected):
        raise ApiError(401, "missing or wrong bearer token", details={"header": "Authorization"})


TokenDep = Depends(require_token)

health = APIRouter(tags=["health"])


@health.get("/healthz", summary="The process is up")
def healthz(request: Request) -> dict:
    return {"status": "ok", "service": request.app.title, "version": VERSION}


@health.get(
    "/readyz", summary="The service's dependencies answer", responses={503: {"description": "Not ready"}}
)
async def readyz(request: Request):
    try:
        await run_in_threadpool(request.app.state.ready_check)
    except Exception as exc:
        return JSONResponse(error_body(503, f"not ready: {exc}"), 503)
    return {"status": "ready", "service": request.app.title}


def service_app(
    name: str,
    settings: Settings,
    *,
    description: str,
    ready_check: Callable[[], None] = lambda: None,
    lifespan: Callable[[FastAPI], AbstractAsyncContextManager] | None = None,
) -> FastAPI:
    app = FastAPI(
        title=name,
        version=VERSION,
        description=description,
        lifespan=lifespan,
    )
    app.add_middleware(BodyLimit, max_bytes=settings.max_body_bytes)
    app.state.settings = settings
    app.state.ready_check = ready_check
    install_error_handlers(app)
    app.include_router(health)
    return app


def get_session(request: Request) -> Iterator[Session]:
    with request.app.state.sessionmaker() as session:
        yield session


SessionDep = Annotated[Session, Depends(get_session)]


def stateful_service_app(
    name: str, settings: Settings, *, description: str, migrations: Path, version_table: str
) -> FastAPI:
    """A service app with a database: migrations applied at start-up, /readyz checks the store."""
    engine = make_engine(settings.database_url)

    @asynccontextmanager
    async def lifespan(_app: FastAPI):
        await run_in_threadpool(upgrade, engine, migrations, version_table)
        yield
        engine.dispose()

    def ready() -> None:
        ping(engine)
        if not is_at_head(engine, migrations, version_table):
            raise RuntimeError("database schema is not at the latest migration")

    app = service_app(name, settings, description=description, ready_check=ready, lifespan=lifespan)
    app.state.engine = engine
    app.state.sessionmaker = make_sessionmaker(engine)
    return app
