import pytest
import torch

from services.trainer.learning.distill import build_students, capture
from services.trainer.learning.scores import score_table
from shared.model import Decoder
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
    trainable, fixed = build_students(teacher, cands, capture(teacher, heldout()[0][0]))
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
