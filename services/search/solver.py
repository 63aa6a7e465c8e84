"""Solve a search problem: K diverse architectures, each proven within the gap given those before it."""

from services.search.ilp import search_cbc
from services.search.outcome import Outcome
from services.search.problem import Problem


def search_problem(problem: Problem, *, k: int, gap: float, time_limit_s: float) -> Outcome:
    return search_cbc(problem, k=k, gap=gap, time_limit_s=time_limit_s)
