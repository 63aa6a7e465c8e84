"""The trainer's API: submits and tracks durable jobs (distillation, scores, finetuning, export)."""

from pathlib import Path

from fastapi import FastAPI

from services.jobs.routes import jobs_router
from services.trainer.models import QUEUE, recovery
from services.trainer.routes import artifacts, jobs, plans
from shared.api import stateful_service_app
from shared.settings import Settings, get_settings

MIGRATIONS = Path(__file__).parent / "migrations"
VERSION_TABLE = "alembic_version_trainer"


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()
    app = stateful_service_app(
        "unast-trainer",
        settings,
        description="Durable training jobs: layer-wise distillation, candidate scores, finetuning, export.",
        migrations=MIGRATIONS,
        version_table=VERSION_TABLE,
    )
    for router in (jobs.router, jobs_router(QUEUE, recovery), artifacts.router, plans.router):
        app.include_router(router)
    return app
