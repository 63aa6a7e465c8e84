"""Eq. 3 and 4 as a PuLP model solved by CBC: the straightforward method, and the fast solver's core MIP.

`search_cbc` is the straightforward method (model built once, one overlap row per solution): the
reference the fast solver is measured against, and a second opinion in tests. `solve_core` solves the
same model restricted to some candidates, warm-started from an incumbent (solver.py).
"""

import time
from dataclasses import dataclass

import numpy as np
import pulp

from services.search.outcome import Found, Outcome
from services.search.problem import Problem


def build_model(problem: Problem, mask: np.ndarray, predecessors: list[np.ndarray]):
    """(problem, variables) for the candidates in `mask`: z[i, j] = 1 when slot i takes candidate j."""
    slots = range(problem.num_slots)
    options = {i: [int(j) for j in np.flatnonzero(mask[i])] for i in slots}
    prob = pulp.LpProblem("unast_search", pulp.LpMinimize)
    z = {(i, j): prob.add_variable(f"z_{i}_{j}", cat="Binary") for i in slots for j in options[i]}

    # Eq. 3: the summed score (loss change) of the chosen candidates
    prob += pulp.lpSum(float(problem.scores[i, j]) * z[i, j] for i, j in z)
    for i in slots:
        # one candidate per slot
        prob += pulp.lpSum(z[i, j] for j in options[i]) == 1, f"slot_{i}"
    for b, (name, limit) in enumerate(problem.budgets.items()):
        # the budget on this cost
        prob += pulp.lpSum(float(problem.costs[name][i, j]) * z[i, j] for i, j in z) <= limit, f"budget_{b}"
    for earlier in predecessors:
        add_overlap_row(problem, prob, z, earlier)
    return prob, z


def add_overlap_row(problem: Problem, prob: pulp.LpProblem, z: dict, earlier: np.ndarray) -> None:
    # Eq. 4: at most O slot choices shared with an earlier solution
    shared = [z[i, int(j)] for i, j in enumerate(earlier) if (i, int(j)) in z]
    prob += pulp.lpSum(shared) <= problem.max_overlap, f"overlap_{len(prob.constraints)}"


def read_choice(problem: Problem, z: dict) -> np.ndarray:
    choice = np.full(problem.num_slots, -1)
    for (i, j), var in z.items():
        if var.value() is not None and var.value() > 0.5:
            choice[i] = j
    return choice


@dataclass(frozen=True)
class CoreResult:
    status: str  # 'optimal' (within gap_abs), 'infeasible', 'time_limit'
    choice: np.ndarray | None
    bound: float  # proven lower bound over the candidates in the mask


def solve_core(
    problem: Problem,
    predecessors: list[np.ndarray],
    mask: np.ndarray,
    *,
    gap_abs: float,
    time_limit_s: float,
    start: np.ndarray | None = None,
) -> CoreResult:
    """The best architecture using only candidates in `mask`, within gap_abs of CBC's proven bound."""
    prob, z = build_model(problem, mask, predecessors)
    warm = start is not None and bool(mask[np.arange(problem.num_slots), start].all())
    if warm:
        for (i, j), var in z.items():
            var.setInitialValue(1 if start[i] == j else 0)
    prob.solve(
        pulp.PULP_CBC_CMD(msg=False, gapAbs=gap_abs, timeLimit=max(time_limit_s, 0.01), warmStart=warm)
    )
    if prob.status == pulp.LpStatusInfeasible:
        return CoreResult("infeasible", None, np.inf)
    # Gate on the solution status: PuLP reports status Optimal after a time limit too.
    if prob.sol_status not in (pulp.LpSolutionOptimal, pulp.LpSolutionIntegerFeasible):
        return CoreResult("time_limit", None, -np.inf)
    choice = read_choice(problem, z)
    if prob.sol_status == pulp.LpSolutionOptimal:
        # CBC stops when best - bound <= gapAbs
        return CoreResult("optimal", choice, problem.objective(choice) - gap_abs)
    return CoreResult("time_limit", choice, -np.inf)


def search_cbc(problem: Problem, *, k: int, gap: float, time_limit_s: float) -> Outcome:
    """The straightforward method: one model, re-solved by CBC after adding each solution's row."""
    prob, z = build_model(problem, problem.allowed, [])
    started = time.monotonic()
    outcome = Outcome("complete")
    while len(outcome.found) < k:
        left = time_limit_s - (time.monotonic() - started)
        if left <= 0:
            outcome.status = "time_limit"
            break
        prob.solve(pulp.PULP_CBC_CMD(msg=False, gapRel=gap, timeLimit=left))
        if prob.status == pulp.LpStatusInfeasible:
            outcome.status = "exhausted"
            break
        # Gate on the solution status: PuLP reports status Optimal after a time limit too.
        if prob.sol_status not in (pulp.LpSolutionOptimal, pulp.LpSolutionIntegerFeasible):
            outcome.status = "time_limit"
            break
        choice = read_choice(problem, z)
        objective = problem.objective(choice)
        optimal = prob.sol_status == pulp.LpSolutionOptimal
        # CBC stops when (best - bound) <= gapRel * |best|; scores are >= 0, so 0 is always a bound.
        bound = objective * (1 - gap) if optimal else 0.0
        outcome.found.append(Found(choice, objective, bound, optimal))
        if not optimal:
            outcome.status = "time_limit"
            break
        add_overlap_row(problem, prob, z, choice)
    return outcome
