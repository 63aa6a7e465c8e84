import pytest

from shared.schemas.lut import CostCandidate, CostSlot, CostTable
from shared.schemas.operators import IdentityOp, MLPOp, spec_name
from shared.schemas.scores import ScoredCandidate, ScoredSlot, ScoreTable
from shared.search_input import search_slots

TEACHER = MLPOp(intermediate_size=176)


def cost_table(*operators) -> CostTable:
    candidates = [
        CostCandidate(
            id=f"c{i}", costs={"latency_ms": 1.0 + i, "params": 10 * i}, reference=op == TEACHER, operator=op
        )
        for i, op in enumerate(operators)
    ]
    return CostTable(
        lut_id=1,
        device_id=1,
        fixed={"latency_ms": 0.5},
        peak_costs=[],
        derived_costs={},
        slots=[CostSlot(id="block0.mlp", candidates=candidates)],
    )


def score_slots(*pairs) -> ScoreTable:
    candidates = [
        ScoredCandidate(id=spec_name(op), operator=op, score=s, stderr=0.01, reference=op == TEACHER)
        for op, s in pairs
    ]
    return ScoreTable(
        teacher_loss=3.0,
        tokens=1024,
        batches=4,
        rank_stability=None,
        slots=[ScoredSlot(id="block0.mlp", candidates=candidates)],
    )


def test_scores_and_costs_join_on_the_operator():
    (slot,) = search_slots(
        score_slots((IdentityOp(), 0.3), (TEACHER, 0.0)), cost_table(TEACHER, IdentityOp())
    )
    by_id = {c.id: c for c in slot.candidates}
    assert by_id["c0"].reference and by_id["c0"].score == 0.0 and by_id["c0"].costs["latency_ms"] == 1.0
    assert by_id["c1"].score == 0.3 and not by_id["c1"].reference


def test_a_score_below_zero_counts_as_zero():
    (slot,) = search_slots(
        score_slots((IdentityOp(), -0.01), (TEACHER, 0.0)), cost_table(TEACHER, IdentityOp())
    )
    assert min(c.score for c in slot.candidates) == 0.0


def test_a_scored_candidate_without_a_cost_is_named():
    with pytest.raises(ValueError, match=r"block0\.mlp: identity"):
        search_slots(score_slots((TEACHER, 0.0), (IdentityOp(), 0.1)), cost_table(TEACHER))


def test_a_costed_candidate_that_was_not_distilled_is_left_out():
    (slot,) = search_slots(score_slots((TEACHER, 0.0)), cost_table(TEACHER, IdentityOp()))
    assert [c.id for c in slot.candidates] == ["c0"]
