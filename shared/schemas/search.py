"""The search contract (paper Eq. 3 and 4): slots of candidates with scores and costs, budgets, K solutions.

Budgets and reported costs are whole-model values: the slots' candidates plus the model's `fixed` part
(embedding, head, norms). A cost aggregates by sum over the parts, or, when named in `peak_costs`, by
maximum (peak activation memory: the parts run one after another); a derived cost is the sum of named
costs' whole-model values (memory_bytes = weight_bytes + kv_cache_bytes + activation_bytes).

Field-level checks live here; checks that need the whole request (duplicate ids, budgets naming a cost
some candidate lacks, references, the service's size limits) are in services/search/request.py.
"""

from typing import Annotated, Literal

from pydantic import BaseModel, Field, model_validator

from shared.decilm import Format

Id = Annotated[str, Field(min_length=1, max_length=256)]
NonNegative = Annotated[float, Field(ge=0, allow_inf_nan=False)]


class Candidate(BaseModel):
    id: Id
    score: NonNegative = Field(
        description="Loss change when this operator replaces the slot (lower is better)."
    )
    costs: dict[Id, NonNegative] = Field(
        default_factory=dict, description="Named costs, e.g. latency_ms, params, memory_bytes."
    )
    reference: bool = Field(False, description="Part of the reference architecture (the teacher).")


class Slot(BaseModel):
    id: Id
    candidates: list[Candidate] = Field(min_length=1)
    pin: Id | None = Field(None, description="Force this candidate in every solution.")
    exclude: list[Id] = Field(default_factory=list, description="Candidates no solution may use.")


class Budget(BaseModel):
    cost: Id = Field(description="A summed, peak or derived cost.")
    max: NonNegative | None = Field(
        None, description="Absolute budget on the whole-model value; on a peak cost, a cap on every part."
    )
    fraction: float | None = Field(
        None,
        gt=0,
        allow_inf_nan=False,
        description="Budget as a fraction of the reference architecture's whole-model value.",
    )

    @model_validator(mode="after")
    def _one_of_max_or_fraction(self) -> "Budget":
        if (self.max is None) == (self.fraction is None):
            raise ValueError("give exactly one of max or fraction")
        return self

    def limit(self, reference: float) -> float:
        """The budget's whole-model value, given the reference architecture's (the teacher's)."""
        return self.max if self.max is not None else self.fraction * reference


Gap = Annotated[
    float,
    Field(
        ge=0, le=1, allow_inf_nan=False, description="Relative optimality gap proven per solution; 0 = exact."
    ),
]
TimeLimit = Annotated[float, Field(gt=0, allow_inf_nan=False, description="Wall-clock limit of the request.")]
Fixed = Annotated[
    dict[Id, NonNegative],
    Field(description="The model's costs outside the slots (embedding, head, norms), by cost name."),
]
PeakCosts = Annotated[
    list[Id],
    Field(description="Costs that aggregate by maximum over the parts (e.g. activation_bytes), not by sum."),
]
DerivedCosts = Annotated[
    dict[Id, Annotated[list[Id], Field(min_length=1)]],
    Field(
        description="Costs defined as the sum of named costs' whole-model values, e.g. "
        '{"memory_bytes": ["weight_bytes", "kv_cache_bytes", "activation_bytes"]}; '
        "at most one peak cost each."
    ),
]
SearchFormat = Annotated[
    Format,
    Field(
        description="unast: any candidate; nemotron-nas: only candidates the DeciLM / Nemotron-NAS "
        "block_configs form expresses (shared/decilm.py), so that every solution opens in the engines "
        "that read that form. Slot ids are then block<N>.attn / block<N>.mlp and candidate ids operator "
        "names (attn_h<heads>_kv<kv heads>_d<head dim>, mlp_i<size>, identity, linear); an attention "
        "candidate must keep the query heads and head size of its slot's reference candidate, an MLP's "
        "width be a multiple of 256. The others are excluded (a reference still counts for fraction "
        "budgets); a slot left with none, or a pin on one, is a 422 naming it."
    ),
]


class SearchRequest(BaseModel):
    slots: list[Slot] = Field(min_length=1)
    budgets: list[Budget] = Field(default_factory=list)
    fixed: Fixed = {}
    peak_costs: PeakCosts = []
    derived_costs: DerivedCosts = {}
    k: int = Field(1, ge=1, description="Number of diverse architectures wanted.")
    max_overlap: float = Field(
        0.7, ge=0, le=1, description="Solutions share at most floor(max_overlap * slots) choices pairwise."
    )
    gap: Gap = 1e-3
    time_limit_s: TimeLimit = 30.0
    format: SearchFormat = "unast"


class Solution(BaseModel):
    rank: int
    choices: dict[str, str] = Field(description="Slot id to the chosen candidate id.")
    objective: float = Field(description="Sum of the chosen candidates' scores.")
    costs: dict[str, float] = Field(
        description="Whole-model costs (fixed part included; peak costs as maxima), for every cost all "
        "candidates have and every derived cost."
    )
    optimal: bool = Field(description="Proven optimal within `gap`, given the solutions ranked before it.")
    bound: float = Field(description="Proven lower bound on the objective, given the solutions before it.")
    gap: float = Field(description="(objective - bound) / objective; 0 when the objective is 0.")


class SearchResponse(BaseModel):
    status: Literal["complete", "exhausted", "time_limit", "cancelled"] = Field(
        description="cancelled: the caller stopped the search (an HTTP client that disconnected)."
    )
    solutions: list[Solution]
    solve_time_s: float
    message: str


class Unreachable(BaseModel):
    """One entry of an `infeasible` error's details: a budgeted cost no architecture brings within it."""

    cost: str
    max: float = Field(description="The budget on its whole-model value.")
    min_achievable: float = Field(description="The smallest whole-model value any architecture reaches.")


class SweepRequest(BaseModel):
    slots: list[Slot] = Field(min_length=1)
    cost: Id = Field(description="The cost whose budget is swept.")
    values: list[NonNegative] | None = Field(None, min_length=1, description="Absolute budget values.")
    fractions: list[Annotated[float, Field(gt=0, allow_inf_nan=False)]] | None = Field(
        None, min_length=1, description="Budget values as fractions of the reference architecture."
    )
    budgets: list[Budget] = Field(default_factory=list, description="Other budgets, held at every point.")
    fixed: Fixed = {}
    peak_costs: PeakCosts = []
    derived_costs: DerivedCosts = {}
    gap: Gap = 1e-3
    time_limit_s: TimeLimit = 30.0
    format: SearchFormat = "unast"

    @model_validator(mode="after")
    def _one_of_values_or_fractions(self) -> "SweepRequest":
        if (self.values is None) == (self.fractions is None):
            raise ValueError("give exactly one of values or fractions")
        return self


class SweepPoint(BaseModel):
    max: float = Field(description="The budget on the swept cost's whole-model value at this point.")
    fraction: float | None = Field(None, description="The same, as a fraction of the reference.")
    status: Literal["optimal", "feasible", "infeasible", "time_limit", "cancelled"]
    solution: Solution | None = None


class SweepResponse(BaseModel):
    cost: str
    points: list[SweepPoint]
    solve_time_s: float
