"""Serve a service's app with uvicorn (what each service's `serve` command does)."""

from collections.abc import Callable

from fastapi import FastAPI

from shared.settings import Settings


def serve(create_app: Callable[[Settings], FastAPI], settings: Settings, port: int) -> None:
    import uvicorn

    uvicorn.run(create_app(settings), host=settings.host, port=port, log_level=settings.log_level)
