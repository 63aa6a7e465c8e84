"""The search contract as Python functions: SearchRequest -> SearchResponse, SweepRequest -> SweepResponse.

Any Python caller can call `search` and `sweep` (no HTTP, no state); the routes call them in the
service's solve pool, once it has admitted the request. Each has two halves: `prepare_*` checks the
request and builds its whole model (every 4xx), `run_*` solves it. `cancel`, when set by the caller,
stops the solve early (status `cancelled`, with what was found by then).
"""

import threading
import time

from services.search.formats import restrict
from services.search.levels import search_model
from services.search.outcome import Found, relative_gap
from services.search.problem import BUDGET_RTOL
from services.search.request import build_whole_model, fraction_limit
from services.search.whole_model import WholeModel, infeasible
from shared.errors import invalid
from shared.schemas.search import (
    SearchRequest,
    SearchResponse,
    Solution,
    SweepPoint,
    SweepRequest,
    SweepResponse,
)
from shared.settings import Settings


def search(
    request: SearchRequest, settings: Settings, cancel: threading.Event | None = None
) -> SearchResponse:
    return run_search(request, prepare_search(request, settings), cancel)


def prepare_search(request: SearchRequest, settings: Settings) -> WholeModel:
    if request.k > settings.search_max_k:
        raise invalid("body.k", f"at most {settings.search_max_k} (UNAST_SEARCH_MAX_K)")
    _check_time_limit(request.time_limit_s, settings)
    return whole_model(request, request.max_overlap, settings)


def run_search(request: SearchRequest, model: WholeModel, cancel: threading.Event | None) -> SearchResponse:
    started = time.monotonic()
    outcome = search_model(
        model, k=request.k, gap=request.gap, time_limit_s=request.time_limit_s, cancel=cancel
    )
    if outcome.status == "exhausted" and not outcome.found:
        raise infeasible(model)
    solutions = [solution(model, f, rank) for rank, f in enumerate(outcome.found, 1)]
    unproven = sum(not s.optimal for s in solutions)
    message = {
        "complete": f"found the {request.k} architecture(s) asked for",
        "exhausted": f"only {len(solutions)} architecture(s) meet the budgets while sharing at most "
        f"{model.max_overlap} of {model.num_slots} slot choices with each other; asked for {request.k}",
        "time_limit": f"time limit of {request.time_limit_s} s reached after {len(solutions)} of "
        f"{request.k} architecture(s)",
        "cancelled": f"cancelled after {len(solutions)} of {request.k} architecture(s)",
    }[outcome.status]
    if unproven:
        message += f"; {unproven} not proven within gap {request.gap} (see each bound)"
    return SearchResponse(
        status=outcome.status,
        solutions=solutions,
        solve_time_s=time.monotonic() - started,
        message=message,
    )


Points = list[tuple[float, float | None]]  # (the swept cost's max, as a fraction of the reference)


def sweep(request: SweepRequest, settings: Settings, cancel: threading.Event | None = None) -> SweepResponse:
    return run_sweep(request, *prepare_sweep(request, settings), cancel)


def prepare_sweep(request: SweepRequest, settings: Settings) -> tuple[WholeModel, Points]:
    values = request.values if request.values is not None else request.fractions
    field = "body.values" if request.values is not None else "body.fractions"
    if len(values) > settings.search_max_sweep_points:
        raise invalid(
            field, f"at most {settings.search_max_sweep_points} values (UNAST_SEARCH_MAX_SWEEP_POINTS)"
        )
    _check_time_limit(request.time_limit_s, settings)
    if request.cost in [b.cost for b in request.budgets]:
        raise invalid("body.cost", f"cost {request.cost!r} is swept; it cannot also be in budgets")
    model = whole_model(request, 1.0, settings)
    if request.cost not in model.costs and request.cost not in model.derived:
        raise invalid("body.cost", f"not every candidate has cost {request.cost!r}")
    if request.fractions is None:
        return model, [(value, None) for value in request.values]
    return model, [
        (fraction_limit(model, request.slots, request.cost, fraction, f"body.fractions.{f}"), fraction)
        for f, fraction in enumerate(request.fractions)
    ]


def run_sweep(
    request: SweepRequest, model: WholeModel, points: Points, cancel: threading.Event | None
) -> SweepResponse:
    started = time.monotonic()
    answered = []
    for limit, fraction in points:
        left = request.time_limit_s - (time.monotonic() - started)
        point = SweepPoint(max=limit, fraction=fraction, status="time_limit")
        if cancel is not None and cancel.is_set():
            point.status = "cancelled"
        elif left > 0:
            outcome = search_model(
                model.with_budget(request.cost, limit), k=1, gap=request.gap, time_limit_s=left, cancel=cancel
            )
            if outcome.found:
                found = outcome.found[0]
                point.status = "optimal" if found.optimal else "feasible"
                point.solution = solution(model, found, 1)
            elif outcome.status in ("exhausted", "cancelled"):
                point.status = "infeasible" if outcome.status == "exhausted" else "cancelled"
        answered.append(point)
    return SweepResponse(cost=request.cost, points=answered, solve_time_s=time.monotonic() - started)


def whole_model(request: SearchRequest | SweepRequest, max_overlap: float, settings: Settings) -> WholeModel:
    return build_whole_model(
        restrict(request.slots, request.format),
        request.budgets,
        fixed=request.fixed,
        peak_costs=request.peak_costs,
        derived_costs=request.derived_costs,
        max_overlap=max_overlap,
        settings=settings,
    )


def solution(model: WholeModel, found: Found, rank: int) -> Solution:
    choice = found.choice
    # the slot rows and the whole-model sums add in different orders: twice the slack absorbs that
    if not model.within_budgets(choice, rtol=2 * BUDGET_RTOL):
        raise RuntimeError("a solver returned an architecture over a whole-model budget")  # never silent
    return Solution(
        rank=rank,
        choices={sid: model.candidate_ids[i][choice[i]] for i, sid in enumerate(model.slot_ids)},
        objective=found.objective,
        costs=model.costs_of(choice),
        optimal=found.optimal,
        bound=found.bound,
        gap=relative_gap(found.objective, found.bound),
    )


def _check_time_limit(time_limit_s: float, settings: Settings) -> None:
    if time_limit_s > settings.search_max_time_limit_s:
        limit = settings.search_max_time_limit_s
        raise invalid("body.time_limit_s", f"at most {limit} (UNAST_SEARCH_MAX_TIME_LIMIT_S)")
