"""The trainer's score table: per slot, every candidate's score (the paper's e_ij) with its operator.

It is the scores half of a search request; shared/search_input.py joins it with a profiler LUT's cost
table (shared/schemas/lut.py, CostTable) by operator spec.
"""

from pydantic import BaseModel, ConfigDict, Field

from shared.schemas.operators import OperatorSpec


class _Schema(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ScoredCandidate(_Schema):
    id: str = Field(description="spec_name of the operator: the candidate id in LUTs and searches.")
    operator: OperatorSpec
    score: float = Field(
        description="Held-out LM loss with only this slot replaced by this candidate, minus the teacher's; "
        "negative when the candidate happened to do better on the held-out batches."
    )
    stderr: float = Field(
        ge=0, description="Standard error of the score, paired over the same held-out batches as the teacher."
    )
    reference: bool = Field(description="True on the teacher's own operator (score 0 by definition).")


class ScoredSlot(_Schema):
    id: str = Field(description="Slot id: block<N>.attn or block<N>.mlp.")
    candidates: list[ScoredCandidate]


class ScoreTable(_Schema):
    teacher_loss: float = Field(description="The teacher's mean held-out LM loss (nats per token).")
    tokens: int = Field(description="Held-out tokens the scores average over.")
    batches: int = Field(description="Held-out batches (the units of the paired standard errors).")
    rank_stability: float | None = Field(
        description="Spearman correlation of the candidates' scores between the first and the second half "
        "of the held-out batches, within each slot, averaged over slots: how stable the ranking is."
    )
    slots: list[ScoredSlot]
    peak_memory_bytes: list[int] = Field(
        default_factory=list,
        description="Each process's peak memory while scoring (services/trainer/learning/peak.py).",
    )
