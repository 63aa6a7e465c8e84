"""Every candidate of both pools inherits from every teacher head layout, and keeps each query head with
its own KV group.

A user's 10-head / 5-KV-head Llama failed in inherit (`selected index k out of range`): the pool proposed
2 KV heads, and an uneven merge left a group with fewer query heads than it had places. The scan runs
every head count from 1 to 64 with every KV count that divides it, on tiny sizes (head_dim 8, hidden 12).
"""

import pytest
import torch

from services.trainer.learning.inherit import inherit
from shared.candidates import candidates, inheritable, inheritance_problem, slot_pools
from shared.operators import Attention, Identity, build_operator
from shared.schemas.operators import AttentionOp, MLPOp, spec_name, teacher_operator
from shared.schemas.shape import ModelShape

HEAD_DIM, HIDDEN = 8, 12
LAYOUTS = [(h, kv) for h in range(1, 65) for kv in range(1, h + 1) if h % kv == 0]


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def shape_of(heads: int, kv_heads: int, family: str = "llama") -> ModelShape:
    return ModelShape(
        family=family,
        vocab_size=8,
        hidden_size=HIDDEN,
        num_layers=1,
        num_heads=heads,
        num_kv_heads=kv_heads,
        head_dim=HEAD_DIM,
        intermediate_size=24,
    )


def teacher_and_batch(shape: ModelShape, slot_type: str = "attention"):
    torch.manual_seed(shape.num_heads * 100 + shape.num_kv_heads)
    teacher = build_operator(teacher_operator(shape, slot_type), shape).eval()
    for p in teacher.parameters():  # norm weights and biases too, so that copying them is visible
        p.data.normal_(0, 0.3 if p.ndim > 1 else 1.0)
    return teacher, torch.randn(2, 5, HIDDEN)


def qk_channels(teacher_dim: int, dim: int) -> torch.Tensor:
    pairs = torch.round(torch.arange(dim // 2) * teacher_dim / dim).long().clamp(max=teacher_dim // 2 - 1)
    return torch.cat([pairs, pairs + teacher_dim // 2])


def assert_groups_kept(student: Attention, teacher: Attention) -> list[int]:
    """Each student query head is one teacher head (its q rows at the kept q/k channels, its o columns)
    of the teacher KV heads merged into the student's own KV head; each student KV head is the mean of
    those teacher KV heads. Returns the teacher head behind each student head."""
    heads, kv_heads, dim = teacher.num_heads, teacher.num_kv_heads, teacher.head_dim
    h, kv, d = student.num_heads, student.num_kv_heads, student.head_dim
    channels = qk_channels(dim, d)
    teacher_q = teacher.q_proj.weight.view(heads, dim, -1)[:, channels]
    student_q = student.q_proj.weight.view(h, d, -1)
    sources = [(teacher_q == student_q[j]).all(-1).all(-1).nonzero().flatten().tolist() for j in range(h)]
    assert all(len(s) == 1 for s in sources), "every student query head is exactly one teacher head"
    sources = [s[0] for s in sources]
    assert len(set(sources)) == h
    assert [t // (heads // kv) for t in sources] == [j // (h // kv) for j in range(h)]
    teacher_o = teacher.o_proj.weight.view(-1, heads, dim)
    student_o = student.o_proj.weight.view(-1, h, d)
    for j, t in enumerate(sources):  # o columns come from the same teacher head as the q rows
        assert (student_o[:, j, :, None] == teacher_o[:, t, None, :]).all(0).any(-1).all()
    merged_k = teacher.k_proj.weight.view(kv, kv_heads // kv, dim, -1)[:, :, channels].mean(1)
    torch.testing.assert_close(student.k_proj.weight.view(kv, d, -1), merged_k)
    return sources


@pytest.mark.parametrize(("heads", "kv_heads"), LAYOUTS, ids=[f"{h}/{kv}" for h, kv in LAYOUTS])
def test_every_pool_candidate_inherits_from_every_head_layout(heads, kv_heads):
    shape = shape_of(heads, kv_heads)
    for slot_type in ("attention", "mlp"):
        teacher, x = teacher_and_batch(shape, slot_type)
        slot = "block0.attn" if slot_type == "attention" else "block0.mlp"
        specs = dict.fromkeys(slot_pools(shape, "default")[slot] + slot_pools(shape, "small")[slot])
        with torch.no_grad():
            expected = teacher(x)
            for spec in specs:
                assert inheritable(spec, shape), spec_name(spec)
                student = inherit(spec, teacher, shape, x)
                out = student(x)
                assert out.shape == x.shape and bool(out.isfinite().all()), spec_name(spec)
                if spec == teacher_operator(shape, slot_type):
                    torch.testing.assert_close(out, expected)
                if isinstance(spec, AttentionOp):
                    assert spec.num_heads <= heads and spec.head_dim <= HEAD_DIM
                    assert kv_heads % spec.num_kv_heads == 0 and spec.num_heads % spec.num_kv_heads == 0
                    assert_groups_kept(student, teacher)
                elif isinstance(spec, MLPOp):
                    assert spec.intermediate_size <= shape.intermediate_size


@pytest.mark.parametrize(
    ("heads", "kv_heads", "kv_counts"), [(10, 5, {5, 1}), (15, 5, {5, 1}), (6, 3, {3, 1})]
)
def test_the_reported_layouts_get_kv_counts_that_divide_theirs(heads, kv_heads, kv_counts):
    """The report: 10/5 and 6/3 failed, 15/5 passed with a 4-KV candidate built from uneven merges."""
    shape = shape_of(heads, kv_heads)
    pool = [s for s in candidates(shape, "attention") if isinstance(s, AttentionOp)]
    assert {s.num_kv_heads for s in pool} == kv_counts
    # each KV count keeps a range of query heads: not only MQA below the teacher's KV count
    assert {s.num_heads for s in pool if s.num_kv_heads == kv_heads} == set(
        range(kv_heads, heads + 1, kv_heads)
    )
    teacher, x = teacher_and_batch(shape)
    with torch.no_grad():
        for spec in pool:
            assert inherit(spec, teacher, shape, x)(x).shape == x.shape


@pytest.mark.parametrize(
    ("heads", "kv_heads", "spec"),
    [
        (10, 5, AttentionOp(num_heads=10, num_kv_heads=2, head_dim=HEAD_DIM)),
        (15, 5, AttentionOp(num_heads=8, num_kv_heads=4, head_dim=4)),
        (6, 3, AttentionOp(num_heads=6, num_kv_heads=2, head_dim=HEAD_DIM)),
    ],
)
def test_an_uneven_merge_is_refused_by_name(heads, kv_heads, spec):
    shape = shape_of(heads, kv_heads)
    assert not inheritable(spec, shape)
    assert "do not divide" in inheritance_problem(spec, teacher_operator(shape, "attention"))
    teacher, x = teacher_and_batch(shape)
    with pytest.raises(ValueError, match=spec_name(spec)):
        inherit(spec, teacher, shape, x)


def test_a_larger_attention_starts_from_random_weights_whatever_its_kv_count():
    shape = shape_of(10, 5)
    spec = AttentionOp(num_heads=12, num_kv_heads=4, head_dim=HEAD_DIM)  # more query heads than the teacher
    assert inheritable(spec, shape)
    teacher, x = teacher_and_batch(shape)
    assert inherit(spec, teacher, shape, x)(x).shape == x.shape


@pytest.mark.parametrize(("heads", "kv_heads"), [(10, 5), (8, 2), (6, 6), (32, 8), (12, 3)])
def test_merging_identical_kv_heads_keeps_the_teachers_output(heads, kv_heads):
    """A teacher whose KV heads repeat in runs of m equals the candidate with KV/m heads and every query
    head: mean-pooling identical heads changes nothing, and every query head keeps its own keys."""
    shape = shape_of(heads, kv_heads)
    teacher, x = teacher_and_batch(shape)
    for spec in candidates(shape, "attention"):
        if not isinstance(spec, AttentionOp) or (spec.num_heads, spec.head_dim) != (heads, HEAD_DIM):
            continue
        runs = kv_heads // spec.num_kv_heads
        with torch.no_grad():
            for proj in (teacher.k_proj, teacher.v_proj):
                w = proj.weight.view(spec.num_kv_heads, runs, HEAD_DIM, -1)
                w.copy_(w[:, :1].expand_as(w))
            student = inherit(spec, teacher, shape, x)
            torch.testing.assert_close(student(x), teacher(x))
            assert assert_groups_kept(student, teacher) == list(range(heads))


@pytest.mark.parametrize(("heads", "kv_heads", "fewer"), [(10, 5, 5), (8, 2, 4), (8, 4, 4), (12, 3, 9)])
def test_fewer_query_heads_over_the_same_kv_heads_keep_the_teachers_keys(heads, kv_heads, fewer):
    shape = shape_of(heads, kv_heads)
    teacher, x = teacher_and_batch(shape)
    spec = AttentionOp(num_heads=fewer, num_kv_heads=kv_heads, head_dim=HEAD_DIM)
    with torch.no_grad():
        student = inherit(spec, teacher, shape, x)
    torch.testing.assert_close(student.k_proj.weight, teacher.k_proj.weight)
    torch.testing.assert_close(student.v_proj.weight, teacher.v_proj.weight)
    assert_groups_kept(student, teacher)


@pytest.mark.parametrize("family", ["qwen2", "qwen3"])
@pytest.mark.parametrize(("heads", "kv_heads"), [(10, 5), (8, 2), (6, 6)])
def test_family_traits_follow_the_kept_heads_and_channels(family, heads, kv_heads):
    """Qwen2's q/k/v biases keep the kept rows' entries (k and v averaged over the merged heads); Qwen3's
    per-head q/k norms keep the kept channels' weights; a teacher-sized candidate is the teacher."""
    shape = shape_of(heads, kv_heads, family)
    teacher, x = teacher_and_batch(shape)
    with torch.no_grad():
        expected = teacher(x)
        for spec in slot_pools(shape, "default")["block0.attn"] + slot_pools(shape, "small")["block0.attn"]:
            student = inherit(spec, teacher, shape, x)
            out = student(x)
            assert out.shape == x.shape and bool(out.isfinite().all())
            if spec == teacher_operator(shape, "attention"):
                torch.testing.assert_close(out, expected)
            if isinstance(student, Identity) or not isinstance(spec, AttentionOp):
                continue
            sources = assert_groups_kept(student, teacher)
            h, kv, d = spec.num_heads, spec.num_kv_heads, spec.head_dim
            channels = qk_channels(HEAD_DIM, d)
            if family == "qwen2":
                q_bias = teacher.q_proj.bias.view(heads, HEAD_DIM)[sources][:, channels]
                torch.testing.assert_close(student.q_proj.bias.view(h, d), q_bias, rtol=0, atol=0)
                k_bias = teacher.k_proj.bias.view(kv, kv_heads // kv, HEAD_DIM)[:, :, channels].mean(1)
                torch.testing.assert_close(student.k_proj.bias.view(kv, d), k_bias)
                v_bias = teacher.v_proj.bias.view(kv, kv_heads // kv, HEAD_DIM).mean(1)
                # each kept value channel's bias is the merged heads' mean bias at that channel
                assert ((student.v_proj.bias.view(kv, d, 1) - v_bias[:, None, :]).abs().amin(-1) < 1e-6).all()
                assert student.o_proj.bias is None
            else:
                torch.testing.assert_close(student.q_norm.weight, teacher.q_norm.weight[channels])
                torch.testing.assert_close(student.k_norm.weight, teacher.k_norm.weight[channels])
