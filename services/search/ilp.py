"""The straightforward method: Eq. 3 and 4 as one PuLP model, solved by CBC, one overlap row per solution.

This is the reference the fast solver (solver.py) is measured against, and a second opinion in tests.
"""

import time

import numpy as np
import pulp

from services.search.outcome import Found, Outcome
from services.search.problem import Problem


def search_cbc(problem: Problem, *, k: int, gap: float, time_limit_s: float) -> Outcome:
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
        choice = np.array([max(options[i], key=lambda j, i=i: z[i, j].value()) for i in slots])
        objective = problem.objective(choice)
        optimal = prob.sol_status == pulp.LpSolutionOptimal
        # CBC stops when (best - bound) <= gapRel * |best|; scores are >= 0, so 0 is always a bound.
        bound = objective * (1 - gap) if optimal else 0.0
        outcome.found.append(Found(choice, objective, bound, optimal))
        if not optimal:
            outcome.status = "time_limit"
            break
        # Eq. 4: later solutions share at most O slot choices with this one
        prob += (
            pulp.lpSum(z[i, int(choice[i])] for i in slots) <= problem.max_overlap,
            f"overlap_{len(outcome.found)}",
        )
    return outcome
