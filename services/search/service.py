"""The search contract as Python functions: SearchRequest -> SearchResponse, SweepRequest -> SweepResponse.

The routes call these; so can any Python caller (no HTTP, no state).
"""

import time

from services.search.outcome import Found, relative_gap
from services.search.problem import Problem, build_problem, infeasible, reference_cost
from services.search.solver import search_problem
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


def search(request: SearchRequest, settings: Settings) -> SearchResponse:
    if request.k > settings.search_max_k:
        raise invalid("body.k", f"at most {settings.search_max_k} (UNAST_SEARCH_MAX_K)")
    _check_time_limit(request.time_limit_s, settings)
    problem = build_problem(
        request.slots, request.budgets, max_overlap=request.max_overlap, settings=settings
    )
    started = time.monotonic()
    outcome = search_problem(problem, k=request.k, gap=request.gap, time_limit_s=request.time_limit_s)
    if outcome.status == "exhausted" and not outcome.found:
        raise infeasible(problem)
    solutions = [solution(problem, f, rank) for rank, f in enumerate(outcome.found, 1)]
    unproven = sum(not s.optimal for s in solutions)
    message = {
        "complete": f"found the {request.k} architecture(s) asked for",
        "exhausted": f"only {len(solutions)} architecture(s) meet the budgets while sharing at most "
        f"{problem.max_overlap} of {problem.num_slots} slot choices with each other; asked for {request.k}",
        "time_limit": f"time limit of {request.time_limit_s} s reached after {len(solutions)} of "
        f"{request.k} architecture(s)",
    }[outcome.status]
    if unproven:
        message += f"; {unproven} not proven within gap {request.gap} (see each bound)"
    return SearchResponse(
        status=outcome.status,
        solutions=solutions,
        solve_time_s=time.monotonic() - started,
        message=message,
    )


def sweep(request: SweepRequest, settings: Settings) -> SweepResponse:
    values = request.values if request.values is not None else request.fractions
    field = "body.values" if request.values is not None else "body.fractions"
    if len(values) > settings.search_max_sweep_points:
        raise invalid(
            field, f"at most {settings.search_max_sweep_points} values (UNAST_SEARCH_MAX_SWEEP_POINTS)"
        )
    _check_time_limit(request.time_limit_s, settings)
    if request.cost in [b.cost for b in request.budgets]:
        raise invalid("body.cost", f"cost {request.cost!r} is swept; it cannot also be in budgets")
    problem = build_problem(request.slots, request.budgets, max_overlap=1.0, settings=settings)
    if request.cost not in problem.costs:
        raise invalid("body.cost", f"not every candidate has cost {request.cost!r}")
    if request.fractions is not None:
        reference = reference_cost(request.slots, request.cost, "body")
        points = [(fraction * reference, fraction) for fraction in request.fractions]
    else:
        points = [(value, None) for value in request.values]

    started = time.monotonic()
    answered = []
    for limit, fraction in points:
        left = request.time_limit_s - (time.monotonic() - started)
        point = SweepPoint(max=limit, fraction=fraction, status="time_limit")
        if left > 0:
            outcome = search_problem(
                problem.with_budget(request.cost, limit), k=1, gap=request.gap, time_limit_s=left
            )
            if outcome.found:
                found = outcome.found[0]
                point.status = "optimal" if found.optimal else "feasible"
                point.solution = solution(problem, found, 1)
            elif outcome.status == "exhausted":
                point.status = "infeasible"
        answered.append(point)
    return SweepResponse(cost=request.cost, points=answered, solve_time_s=time.monotonic() - started)


def solution(problem: Problem, found: Found, rank: int) -> Solution:
    choice = found.choice
    return Solution(
        rank=rank,
        choices={sid: problem.candidate_ids[i][choice[i]] for i, sid in enumerate(problem.slot_ids)},
        objective=found.objective,
        costs={name: problem.cost(name, choice) for name in problem.costs},
        optimal=found.optimal,
        bound=found.bound,
        gap=relative_gap(found.objective, found.bound),
    )


def _check_time_limit(time_limit_s: float, settings: Settings) -> None:
    if time_limit_s > settings.search_max_time_limit_s:
        limit = settings.search_max_time_limit_s
        raise invalid("body.time_limit_s", f"at most {limit} (UNAST_SEARCH_MAX_TIME_LIMIT_S)")
