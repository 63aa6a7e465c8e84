import pytest
import torch

from services.trainer.learning.distill import capture, nmse
from services.trainer.learning.inherit import inherit
from shared.model import Decoder
from shared.schemas.operators import AttentionOp, LinearOp, MLPOp, teacher_operator
from shared.schemas.shape import PRESETS

TINY = PRESETS["tiny"]  # 4 heads, 2 KV heads, head_dim 16, intermediate 176


@pytest.fixture(scope="module")
def teacher_and_activations():
    torch.manual_seed(0)
    teacher = Decoder(TINY).eval()
    idx = torch.randint(0, TINY.vocab_size, (2, 32), generator=torch.Generator().manual_seed(0))
    return teacher, capture(teacher, idx)


@pytest.mark.parametrize(("slot", "slot_type"), [("block0.attn", "attention"), ("block1.mlp", "mlp")])
def test_teacher_sized_candidates_inherit_the_teacher_exactly(teacher_and_activations, slot, slot_type):
    teacher, acts = teacher_and_activations
    x, t = acts[slot]
    student = inherit(teacher_operator(TINY, slot_type), teacher.operator(slot), TINY, x)
    with torch.no_grad():
        torch.testing.assert_close(student(x), t)


@pytest.mark.parametrize(
    ("slot", "spec"),
    [
        ("block0.attn", AttentionOp(num_heads=2, num_kv_heads=2, head_dim=16)),
        ("block0.attn", AttentionOp(num_heads=4, num_kv_heads=1, head_dim=16)),
        ("block0.attn", AttentionOp(num_heads=4, num_kv_heads=2, head_dim=8)),
        ("block1.attn", AttentionOp(num_heads=2, num_kv_heads=1, head_dim=8)),
        ("block0.mlp", MLPOp(intermediate_size=88)),
        ("block1.mlp", MLPOp(intermediate_size=24)),
        ("block0.mlp", LinearOp()),
        ("block1.attn", LinearOp()),
    ],
)
def test_smaller_candidates_start_closer_than_skipping_or_random(teacher_and_activations, slot, spec):
    teacher, acts = teacher_and_activations
    x, t = acts[slot]
    with torch.no_grad():
        inherited = nmse(t, inherit(spec, teacher.operator(slot), TINY, x)(x)).item()
        torch.manual_seed(1)
        from shared.operators import build_operator

        random_init = nmse(t, build_operator(spec, TINY)(x)).item()
    assert inherited < 1.0  # better than the identity, whose nMSE is exactly 1
    assert inherited < random_init


def test_head_dim_halving_keeps_matching_rope_frequencies(teacher_and_activations):
    teacher, acts = teacher_and_activations
    x, _ = acts["block0.attn"]
    student = inherit(
        AttentionOp(num_heads=4, num_kv_heads=2, head_dim=8), teacher.operator("block0.attn"), TINY, x
    )
    # pairs 0, 2, 4, 6 of the teacher's 8 rotate at the candidate's 4 frequencies
    torch.testing.assert_close(student.inv_freq, teacher.operator("block0.attn").inv_freq[::2])
    teacher_q = teacher.operator("block0.attn").q_proj.weight.view(4, 16, -1)
    torch.testing.assert_close(student.q_proj.weight.view(4, 8, -1)[:, :4], teacher_q[:, 0:8:2])
