"""Eq. 3 and 4 as a PuLP model solved by CBC: the straightforward method.

`search_cbc` builds the model once and adds one overlap row per solution: the reference the fast
solver (solver.py) is measured against, and a second opinion in tests.

PULP_CBC_CMD (the CBC binary bundled with PuLP) is deprecated in PuLP 3.3 in favour of `pulp[cbc]`
(the `cbcbox` package, a 190 MB wheel that is not on our local index) with COIN_CMD; it still works,
so pyproject.toml filters that one warning until PuLP 4 removes it.
"""

import time

import numpy as np
import pulp

from services.search.outcome import Found, Outcome
from services.search.problem import Problem


def build_model(problem: Problem):
    """(problem, variables) for the allowed candidates: z[i, j] = 1 when slot i takes candidate j."""
    slots = range(problem.num_slots)
    options = {i: [int(j) for j in np.flatnonzero(problem.allowed[i])] for i in slots}
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
    return prob, z


def add_overlap_row(
    problem: Problem, prob: pulp.LpProblem, z: dict, earlier: np.ndarray, number: int
) -> None:
    # Eq. 4: at most O slot choices shared with earlier solution `number`
    shared = [z[i, int(j)] for i, j in enumerate(earlier) if (i, int(j)) in z]
    prob += pulp.lpSum(shared) <= problem.max_overlap, f"overlap_{number}"


def read_choice(problem: Problem, z: dict) -> np.ndarray:
    choice = np.full(problem.num_slots, -1)
    for (i, j), var in z.items():
        if var.value() is not None and var.value() > 0.5:
            choice[i] = j
    return choice


def search_cbc(problem: Problem, *, k: int, gap: float, time_limit_s: float) -> Outcome:
    """The straightforward method: one model, re-solved by CBC after adding each solution's row."""
    prob, z = build_model(problem)
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
        add_overlap_row(problem, prob, z, choice, len(outcome.found) - 1)
    return outcome
