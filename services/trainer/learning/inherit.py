"""Candidates start from the teacher's weights where shapes allow, keeping what matters most.

Criteria, measured on a calibration batch of the slot's own inputs:
- MLP with a smaller intermediate size: keep the channels c with the largest E|a_c| * ||W_down[:, c]||
  (a = silu(gate) * up, the activation entering the down projection).
- Attention with fewer query heads: keep, per KV group, the heads h with the largest mean
  ||W_o[:, h] y_h|| (each head's contribution to the output).
- Fewer KV heads: merge runs of KV/kv neighbouring KV heads by averaging their key and value
  projections (the mean-pooling of GQA conversion); the query heads of the merged heads compete for
  the new group's h/kv places, so every kept query head stays with (the merge of) its own KV head.
  The runs must be whole: kv must divide the teacher's KV count (shared/candidates.py builds its pools
  so; `inherit` refuses any other attention no larger than the teacher with a ValueError).
- Smaller head dimension: queries and keys keep the RoPE channel pairs whose rotation frequency is
  nearest the candidate's own (exactly equal when the ratio is an integer), so positions still rotate
  as the teacher's did; values keep the channels with the largest E|y_c| * ||W_o[:, c]||.
- Family traits follow their weights: q/k/v biases (Qwen2) keep the kept rows' entries (k and v
  averaged over the merged heads, like their weights); per-head q/k RMSNorms (Qwen3) keep the weights
  of the kept query/key channels.
- Linear: the least-squares (ridge) fit of the teacher's output on its normalised input.
Larger-than-teacher sizes (in any of heads, KV heads, head_dim, intermediate size) have nothing to
inherit and keep Llama's random initialisation.
"""

import torch
from torch import nn

from shared.candidates import inheritance_problem
from shared.operators import Attention, Identity, Linear, build_operator
from shared.schemas.operators import AttentionOp, LinearOp, MLPOp, OperatorSpec, spec_name
from shared.schemas.shape import ModelShape


def inherit(
    spec: OperatorSpec, teacher_op: nn.Module, shape: ModelShape, calibration: torch.Tensor
) -> nn.Module:
    """A candidate module for `spec` initialised from the teacher's operator of the same slot;
    ValueError naming the spec for one that cannot be (shared.candidates.inheritable says which)."""
    if isinstance(teacher_op, Attention):  # its own sizes: a heterogeneous teacher's may differ by block
        sizes = AttentionOp(
            num_heads=teacher_op.num_heads, num_kv_heads=teacher_op.num_kv_heads, head_dim=teacher_op.head_dim
        )
        if (problem := inheritance_problem(spec, sizes)) is not None:
            raise ValueError(f"{spec_name(spec)}: {problem}")
    student = build_operator(spec, shape).to(calibration.device, calibration.dtype)
    if isinstance(student, Identity):
        return student
    with torch.no_grad():
        student.norm.weight.copy_(teacher_op.norm.weight)
        match spec:
            case LinearOp():
                _fit_linear(student, teacher_op, calibration)
            case MLPOp() if spec.intermediate_size <= teacher_op.down_proj.in_features:
                _shrink_mlp(student, teacher_op, calibration)
            case AttentionOp() if _attention_fits(spec, teacher_op):
                _shrink_attention(student, teacher_op, calibration)
    return student


def _capture_input(module: nn.Module, owner: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The input `module` receives when `owner` runs on x (flattened over batch and tokens)."""
    seen = []
    handle = module.register_forward_pre_hook(lambda _m, args: seen.append(args[0]))
    try:
        owner(x)
    finally:
        handle.remove()
    return seen[0].flatten(0, -2)


def _fit_linear(student: Linear, teacher_op: nn.Module, x: torch.Tensor) -> None:
    h = teacher_op.norm(x).flatten(0, -2).double()
    target = teacher_op(x).flatten(0, -2).double()
    gram = h.T @ h
    ridge = 1e-2 * gram.diagonal().mean() * torch.eye(gram.shape[0], dtype=gram.dtype, device=gram.device)
    weight_t = torch.linalg.solve(gram + ridge, h.T @ target)
    student.proj.weight.copy_(weight_t.T)


def _shrink_mlp(student: nn.Module, teacher_op: nn.Module, x: torch.Tensor) -> None:
    activation = _capture_input(teacher_op.down_proj, teacher_op, x)
    importance = activation.abs().mean(0) * teacher_op.down_proj.weight.norm(dim=0)
    keep = _top(importance, student.down_proj.in_features)
    student.gate_proj.weight.copy_(teacher_op.gate_proj.weight[keep])
    student.up_proj.weight.copy_(teacher_op.up_proj.weight[keep])
    student.down_proj.weight.copy_(teacher_op.down_proj.weight[:, keep])


def _attention_fits(spec: AttentionOp, teacher_op: Attention) -> bool:
    return (
        spec.num_heads <= teacher_op.num_heads
        and spec.num_kv_heads <= teacher_op.num_kv_heads
        and spec.head_dim <= teacher_op.head_dim
    )


def _shrink_attention(student: Attention, teacher: Attention, x: torch.Tensor) -> None:
    heads, kv_heads, dim = teacher.num_heads, teacher.num_kv_heads, teacher.head_dim
    new_kv, new_dim = student.num_kv_heads, student.head_dim
    # each new KV head merges `merged` whole teacher groups (inherit checked that new_kv divides
    # kv_heads), whose `pooled` query heads compete for its `per_group` places
    merged, pooled, per_group = kv_heads // new_kv, heads // new_kv, student.num_heads // new_kv
    y = _capture_input(teacher.o_proj, teacher, x).view(-1, heads, dim)  # per-head outputs
    w_o = teacher.o_proj.weight.view(-1, heads, dim)
    head_importance = torch.einsum("nhd,ohd->nho", y, w_o).norm(dim=-1).mean(0)
    channel_importance = y.abs().mean(0) * w_o.norm(dim=0)  # (heads, dim), for value channels

    # RoPE pairs (j, j + dim/2) nearest in frequency to the candidate's pairs i: j = round(i * dim / new_dim)
    pairs = torch.round(torch.arange(new_dim // 2) * dim / new_dim).long().clamp(max=dim // 2 - 1)
    qk_channels = torch.cat([pairs, pairs + dim // 2])

    q_rows, o_cols, k_rows, v_rows = [], [], [], []  # (head, channel) indices into the teacher's
    for group in range(new_kv):
        members = torch.arange(group * merged, (group + 1) * merged)  # the teacher KV heads it merges
        queries = torch.arange(group * pooled, (group + 1) * pooled)
        kept = queries[_top(head_importance[queries], per_group)]
        v_channels = _top(channel_importance[queries].sum(0), new_dim)
        k_rows.append(members[:, None] * dim + qk_channels)
        v_rows.append(members[:, None] * dim + v_channels)
        q_rows += [h * dim + qk_channels for h in kept]
        o_cols += [h * dim + v_channels for h in kept]
    q_rows, o_cols = torch.cat(q_rows), torch.cat(o_cols)
    k_rows, v_rows = torch.stack(k_rows), torch.stack(v_rows)  # (new_kv, merged, new_dim)
    student.q_proj.weight.copy_(teacher.q_proj.weight[q_rows])
    student.k_proj.weight.copy_(teacher.k_proj.weight[k_rows].mean(1).flatten(0, 1))
    student.v_proj.weight.copy_(teacher.v_proj.weight[v_rows].mean(1).flatten(0, 1))
    student.o_proj.weight.copy_(teacher.o_proj.weight[:, o_cols])
    if student.shape.attention_bias:  # Qwen2: biases on q, k and v follow their weights' rows
        student.q_proj.bias.copy_(teacher.q_proj.bias[q_rows])
        student.k_proj.bias.copy_(teacher.k_proj.bias[k_rows].mean(1).flatten())
        student.v_proj.bias.copy_(teacher.v_proj.bias[v_rows].mean(1).flatten())
    if student.shape.qk_norm:  # Qwen3: one RMSNorm weight per head channel, shared by all heads
        student.q_norm.weight.copy_(teacher.q_norm.weight[qk_channels])
        student.k_norm.weight.copy_(teacher.k_norm.weight[qk_channels])


def _top(importance: torch.Tensor, k: int) -> torch.Tensor:
    """Indices of the k largest values, in their original order (so keeping all is the identity map)."""
    return importance.topk(k).indices.sort().values
