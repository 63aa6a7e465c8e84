"""The profiler's app: builds per-device cost LUTs and answers latency/memory questions."""

from pathlib import Path

from fastapi import FastAPI

from services.jobs.routes import jobs_router
from services.profiler.models import QUEUE, recovery
from services.profiler.routes import devices, luts, queries, validations
from shared.api import stateful_service_app
from shared.settings import Settings, get_settings

MIGRATIONS = Path(__file__).parent / "migrations"
VERSION_TABLE = "alembic_version_profiler"


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()
    app = stateful_service_app(
        "unast-profiler",
        settings,
        description="Per-device latency and memory lookup tables (LUTs) of candidate operators.",
        migrations=MIGRATIONS,
        version_table=VERSION_TABLE,
    )
    for module in (devices, luts, validations, queries):
        app.include_router(module.router)
    app.include_router(jobs_router(QUEUE, recovery))
    app.include_router(devices.this)
    return app
