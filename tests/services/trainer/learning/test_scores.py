import warnings

import numpy as np
import pytest
import torch

from services.trainer.kinds.score import table_from_sums
from services.trainer.learning.distill import build_students, capture
from services.trainer.learning.scores import score_table
from shared.model import Decoder
from shared.plan import owners
from shared.schemas.operators import IdentityOp, LinearOp, MLPOp, teacher_operator
from shared.schemas.shape import PRESETS

TINY = PRESETS["tiny"]


def heldout(n: int = 2):
    g = torch.Generator().manual_seed(3)
    out = []
    for _ in range(n):
        seq = torch.randint(0, TINY.vocab_size, (2, 17), generator=g)
        out.append((seq[:, :-1], seq[:, 1:]))
    return out


def test_scores_equal_full_recomputation_with_the_slot_replaced():
    torch.manual_seed(0)
    teacher = Decoder(TINY).eval()
    specs = [teacher_operator(TINY, "mlp"), IdentityOp(), LinearOp(), MLPOp(intermediate_size=40)]
    cands = {"block0.mlp": specs, "block1.mlp": specs}
    trainable, fixed = build_students(teacher, cands, capture(teacher, heldout()[0][0]), seed=0)
    students = {slot: {**fixed.get(slot, {}), **trainable.get(slot, {})} for slot in cands}
    teacher_loss, scores = score_table(teacher, students, heldout())

    with torch.no_grad():
        losses = [teacher.loss(idx, tgt).item() for idx, tgt in heldout()]
    assert teacher_loss == pytest.approx(sum(losses) / len(losses), rel=1e-6)
    for slot, by_candidate in scores.items():
        assert by_candidate["mlp_i176"] == 0.0  # the teacher's own operator changes nothing
        for cid, score in by_candidate.items():
            if cid == "mlp_i176":
                continue
            replaced = Decoder(TINY).eval()
            replaced.load_state_dict(teacher.state_dict())
            spec = next(
                s for s in specs if s.kind == {"identity": "identity", "linear": "linear"}.get(cid, "mlp")
            )
            replaced.set_operator(slot, students[slot][cid], spec)
            with torch.no_grad():
                full = sum(replaced.loss(idx, tgt).item() for idx, tgt in heldout()) / len(heldout())
            assert score == pytest.approx(full - teacher_loss, abs=1e-5), (slot, cid)


def test_work_is_shared_out_by_cost_the_same_way_on_every_rank():
    costs = [4, 3, 3, 2, 2, 2]
    owner = owners(costs, 2)
    assert [sum(c for c, r in zip(costs, owner, strict=True) if r == rank) for rank in (0, 1)] == [8, 8]
    assert owners(costs, 2) == owner and owners(costs, 1) == [0] * 6
    assert sorted(set(owners([1.0] * 7, 3))) == [0, 1, 2] and owners([], 4) == []
    # a slot near the input runs through the whole model: the first pairs cost the most
    many = list(range(40, 0, -1))
    loads = [sum(c for c, r in zip(many, owners(many, 3), strict=True) if r == rank) for rank in range(3)]
    assert max(loads) - min(loads) <= 1


def test_one_held_out_batch_gives_scores_and_no_stability_without_a_warning():
    teacher = Decoder(TINY)
    operators = {
        "block0.mlp": {c: op.model_dump(mode="json") for c, op in (("id", IdentityOp()), ("lin", LinearOp()))}
    }
    sums = np.array([[10.0, 12.0, 11.0]])  # one batch of 4 tokens: the teacher, then each pair
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the half-split needs two batches: no mean of an empty half
        table = table_from_sums(sums, [("block0.mlp", "id"), ("block0.mlp", "lin")], 4, teacher, operators)
    assert table.batches == 1 and table.rank_stability is None and table.teacher_loss == 2.5
    assert [(c.id, c.score, c.stderr) for c in table.slots[0].candidates] == [
        ("id", 0.5, 0.0),
        ("lin", 0.25, 0.0),
    ]
