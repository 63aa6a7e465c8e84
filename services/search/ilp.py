"""Eq. 3 and 4 as a PuLP model solved by CBC: the straightforward method.

`search_cbc` builds the model once and adds one overlap row per solution: the reference the fast
solver (solver.py) is measured against, and a second opinion in tests. It states the whole-model
budgets directly: fixed parts as constants, a budget on a peak cost as excluded candidates, and the peak
part of a derived cost as one continuous variable at least the fixed part's and each slot's chosen
candidate's -- exact for integer z, where the fast solver searches peak levels instead (levels.py).

PULP_CBC_CMD (the CBC binary bundled with PuLP) is deprecated in PuLP 3.3 in favour of `pulp[cbc]`
(the `cbcbox` package, a 190 MB wheel that is not on our local index) with COIN_CMD; it still works,
so pyproject.toml filters that one warning until PuLP 4 removes it.
"""

import time

import numpy as np
import pulp

from services.search.outcome import Found, Outcome
from services.search.whole_model import WholeModel


def build_model(model: WholeModel):
    """(problem, variables): z[i, j] = 1 when slot i takes candidate j; None when the budgets on peak
    costs leave no architecture."""
    # data: the candidates a solution may use; a budget on a peak cost is a cap that excludes every
    # candidate above it
    slots = range(model.num_slots)
    allowed = model.allowed.copy()
    for name, limit in model.budgets.items():
        if name in model.peaks:
            if model.fixed.get(name, 0.0) > limit:
                return None
            allowed &= model.costs[name] <= limit
    options = {i: [int(j) for j in np.flatnonzero(allowed[i])] for i in slots}
    if not all(options.values()):
        return None

    # problem and variables
    prob = pulp.LpProblem("unast_search", pulp.LpMinimize)
    z = {(i, j): prob.add_variable(f"z_{i}_{j}", cat="Binary") for i in slots for j in options[i]}

    # Eq. 3: the summed score (loss change) of the chosen candidates
    prob += pulp.lpSum(float(model.scores[i, j]) * z[i, j] for i, j in z)
    for i in slots:
        # one candidate per slot
        prob += pulp.lpSum(z[i, j] for j in options[i]) == 1, f"slot_{i}"
    for b, (name, limit) in enumerate(model.budgets.items()):
        if name in model.peaks:
            continue  # a cap: applied to the candidates above
        parts = model.derived.get(name, (name,))
        summed = [p for p in parts if p not in model.peaks]
        whole = pulp.lpSum(float(model.costs[p][i, j]) * z[i, j] for p in summed for i, j in z)
        whole += sum(model.fixed.get(p, 0.0) for p in summed)
        peaks = [p for p in parts if p in model.peaks]  # at most one
        if peaks:
            # the peak part of a derived cost, at least the fixed part's (its lower bound)
            p = peaks[0]
            peak = prob.add_variable(f"peak_{b}", lowBound=model.fixed.get(p, 0.0))
            for i in slots:
                # the peak is at least slot i's chosen candidate's
                prob += (
                    peak >= pulp.lpSum(float(model.costs[p][i, j]) * z[i, j] for j in options[i]),
                    (f"peak_{b}_slot_{i}"),
                )
            whole += peak
        # the budget on this cost's whole-model value
        prob += whole <= limit, f"budget_{b}"
    return prob, z


def add_overlap_row(
    model: WholeModel, prob: pulp.LpProblem, z: dict, earlier: np.ndarray, number: int
) -> None:
    # Eq. 4: at most O slot choices shared with earlier solution `number`
    shared = [z[i, int(j)] for i, j in enumerate(earlier) if (i, int(j)) in z]
    prob += pulp.lpSum(shared) <= model.max_overlap, f"overlap_{number}"


def read_choice(model: WholeModel, z: dict) -> np.ndarray:
    choice = np.full(model.num_slots, -1)
    for (i, j), var in z.items():
        if var.value() is not None and var.value() > 0.5:
            choice[i] = j
    return choice


def search_cbc(model: WholeModel, *, k: int, gap: float, time_limit_s: float) -> Outcome:
    """The straightforward method: one model, re-solved by CBC after adding each solution's row."""
    built = build_model(model)
    if built is None:
        return Outcome("exhausted")
    prob, z = built
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
        choice = read_choice(model, z)
        objective = model.objective(choice)
        optimal = prob.sol_status == pulp.LpSolutionOptimal
        # CBC stops when (best - bound) <= gapRel * |best|; scores are >= 0, so 0 is always a bound.
        bound = objective * (1 - gap) if optimal else 0.0
        outcome.found.append(Found(choice, objective, bound, optimal))
        if not optimal:
            outcome.status = "time_limit"
            break
        add_overlap_row(model, prob, z, choice, len(outcome.found) - 1)
    return outcome
