"""Typed client of the search service."""

from shared.clients.base import ServiceClient
from shared.schemas.search import SearchRequest, SearchResponse, SweepRequest, SweepResponse


class SearchClient(ServiceClient):
    service = "search"

    def search(self, request: SearchRequest) -> SearchResponse:
        body = request.model_dump(mode="json", exclude_none=True)
        return SearchResponse.model_validate(
            self.request("POST", "/v1/search", json=body, timeout=_timeout(request))
        )

    def sweep(self, request: SweepRequest) -> SweepResponse:
        body = request.model_dump(mode="json", exclude_none=True)
        return SweepResponse.model_validate(
            self.request("POST", "/v1/search/sweep", json=body, timeout=_timeout(request))
        )


def _timeout(request: SearchRequest | SweepRequest) -> float:
    return request.time_limit_s + 30.0  # the service answers by its time limit; allow for the transfer
