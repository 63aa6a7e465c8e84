"""The search's app: stateless ILP over candidate scores, costs and budgets."""

from fastapi import FastAPI

from services.search.pool import SolvePool
from services.search.routes import search
from shared.api import service_app
from shared.settings import Settings, get_settings


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()
    app = service_app(
        "unast-search",
        settings,
        description="K diverse architectures under latency/memory budgets by integer linear programming.",
    )
    app.state.solves = SolvePool(settings.search_concurrency, settings.search_queue)
    app.include_router(search.router)
    return app
