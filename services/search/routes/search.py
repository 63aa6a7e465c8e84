"""POST /v1/search and POST /v1/search/sweep.

Plain `def` routes: FastAPI runs them in its threadpool, so a long solve never blocks the event loop
(and /healthz). Open to every caller: they read nothing stored and change nothing.
"""

from fastapi import APIRouter

from services.search import service
from shared.api import SettingsDep
from shared.schemas.search import SearchRequest, SearchResponse, SweepRequest, SweepResponse

router = APIRouter(prefix="/v1/search", tags=["search"])

ERRORS = {
    413: {"description": "Request body larger than UNAST_MAX_BODY_BYTES"},
    422: {"description": "Invalid input (naming the field), or no architecture meets the budgets"},
}


@router.post("", summary="K diverse architectures under the budgets", responses=ERRORS)
def search(request: SearchRequest, settings: SettingsDep) -> SearchResponse:
    return service.search(request, settings)


@router.post("/sweep", summary="The best architecture at each value of one budget", responses=ERRORS)
def sweep(request: SweepRequest, settings: SettingsDep) -> SweepResponse:
    return service.sweep(request, settings)
