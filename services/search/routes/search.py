"""POST /v1/search and POST /v1/search/sweep.

A request is admitted to the service's solve pool (pool.py) first: a bounded number at once, a bounded
queue, a 429 beyond it before any work on the request. Then, in the pool's worker thread, it is checked
and its whole model built (every 4xx but the body's own checks comes from there), and solved; the solve
is cancelled if the client disconnects. The event loop only waits, so /healthz answers during any
solve. The bearer token is required when UNAST_API_TOKEN is set (a solve costs the machine seconds of
every core it is given).
"""

from fastapi import APIRouter, Request

from services.search import service
from shared.api import CheckedRoute, SettingsDep, TokenDep
from shared.errors import ErrorBody
from shared.schemas.search import SearchRequest, SearchResponse, SweepRequest, SweepResponse

router = APIRouter(prefix="/v1/search", tags=["search"], dependencies=[TokenDep], route_class=CheckedRoute)

ERRORS = {
    401: {"model": ErrorBody, "description": "Missing or wrong bearer token (when UNAST_API_TOKEN is set)"},
    413: {"model": ErrorBody, "description": "Request body larger than UNAST_MAX_BODY_BYTES"},
    422: {
        "model": ErrorBody,
        "description": "Invalid input (details name the field), or no architecture meets the budgets "
        "(code `infeasible`; details give each budgeted cost's `min_achievable`)",
    },
    429: {
        "model": ErrorBody,
        "description": "UNAST_SEARCH_CONCURRENCY searches are running and UNAST_SEARCH_QUEUE waiting",
        "headers": {"Retry-After": {"description": "Seconds to wait", "schema": {"type": "integer"}}},
    },
    503: {
        "model": ErrorBody,
        "description": "A large body's checker process died; try again after Retry-After",
        "headers": {"Retry-After": {"description": "Seconds to wait", "schema": {"type": "integer"}}},
    },
}


@router.post("", summary="K diverse architectures under the budgets", responses=ERRORS)
async def search(body: SearchRequest, request: Request, settings: SettingsDep) -> SearchResponse:
    return await request.app.state.solves.run(request, lambda cancel: service.search(body, settings, cancel))


@router.post("/sweep", summary="The best architecture at each value of one budget", responses=ERRORS)
async def sweep(body: SweepRequest, request: Request, settings: SettingsDep) -> SweepResponse:
    return await request.app.state.solves.run(request, lambda cancel: service.sweep(body, settings, cancel))
