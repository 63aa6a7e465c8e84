"""Serve a service's app with uvicorn (what each service's `serve` command does).

A stateful service first waits for its database (UNAST_DATABASE_STARTUP_WAIT_S, one log line per
attempt) and, if it never answers, exits with one line saying so rather than a traceback.
"""

import logging
import sys
from collections.abc import Callable

from fastapi import FastAPI

from shared.db import DatabaseUnavailable, wait_for_database
from shared.settings import Settings

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s %(message)s"


def serve(create_app: Callable[[Settings], FastAPI], settings: Settings, port: int) -> None:
    import uvicorn

    logging.basicConfig(level=settings.log_level.upper(), format=LOG_FORMAT)
    app = create_app(settings)
    engine = getattr(app.state, "engine", None)
    if engine is not None:
        try:
            wait_for_database(engine, settings.database_startup_wait_s)
        except DatabaseUnavailable as exc:
            sys.exit(f"{app.title}: {exc}; giving up")
    uvicorn.run(app, host=settings.host, port=port, log_level=settings.log_level)
