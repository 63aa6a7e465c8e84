"""Candidates start from the teacher's weights where shapes allow, keeping what matters most.

Criteria, measured on a calibration batch of the slot's own inputs:
- MLP with a smaller intermediate size: keep the channels c with the largest E|a_c| * ||W_down[:, c]||
  (a = silu(gate) * up, the activation entering the down projection).
- Attention with fewer query heads: keep, per KV group, the heads h with the largest mean
  ||W_o[:, h] y_h|| (each head's contribution to the output).
- Fewer KV heads: merge neighbouring KV heads by averaging their key and value projections (the
  mean-pooling of GQA conversion); the query heads of merged heads compete for the group's places.
- Smaller head dimension: queries and keys keep the RoPE channel pairs whose rotation frequency is
  nearest the candidate's own (exactly equal when the ratio is an integer), so positions still rotate
  as the teacher's did; values keep the channels with the largest E|y_c| * ||W_o[:, c]||.
- Linear: the least-squares (ridge) fit of the teacher's output on its normalised input.
Larger-than-teacher sizes have nothing to inherit and keep Llama's random initialisation.
"""

import torch
from torch import nn

from shared.operators import Attention, Identity, Linear, build_operator
from shared.schemas.operators import AttentionOp, LinearOp, MLPOp, OperatorSpec
from shared.schemas.shape import ModelShape


def inherit(
    spec: OperatorSpec, teacher_op: nn.Module, shape: ModelShape, calibration: torch.Tensor
) -> nn.Module:
    """A candidate module for `spec` initialised from the teacher's operator of the same slot."""
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
    per_group = student.num_heads // new_kv
    y = _capture_input(teacher.o_proj, teacher, x).view(-1, heads, dim)  # per-head outputs
    w_o = teacher.o_proj.weight.view(-1, heads, dim)
    head_importance = torch.einsum("nhd,ohd->nho", y, w_o).norm(dim=-1).mean(0)
    channel_importance = y.abs().mean(0) * w_o.norm(dim=0)  # (heads, dim), for value channels

    # RoPE pairs (j, j + dim/2) nearest in frequency to the candidate's pairs i: j = round(i * dim / new_dim)
    pairs = torch.round(torch.arange(new_dim // 2) * dim / new_dim).long().clamp(max=dim // 2 - 1)
    qk_channels = torch.cat([pairs, pairs + dim // 2])

    q_rows, o_cols, k_rows, v_rows = [], [], [], []
    w_k = teacher.k_proj.weight.view(kv_heads, dim, -1)
    w_v = teacher.v_proj.weight.view(kv_heads, dim, -1)
    for group in range(new_kv):
        members = [k for k in range(kv_heads) if k * new_kv // kv_heads == group]  # merged neighbours
        queries = [h for h in range(heads) if h // (heads // kv_heads) in members]
        kept = sorted(torch.tensor(queries)[_top(head_importance[queries], per_group)].tolist())
        v_channels = _top(channel_importance[queries].sum(0), new_dim)
        k_rows.append(w_k[members][:, qk_channels].mean(0))
        v_rows.append(w_v[members][:, v_channels].mean(0))
        for h in kept:
            q_rows.append(teacher.q_proj.weight.view(heads, dim, -1)[h, qk_channels])
            o_cols.append(w_o[:, h, v_channels])
    student.q_proj.weight.copy_(torch.cat(q_rows))
    student.k_proj.weight.copy_(torch.cat(k_rows))
    student.v_proj.weight.copy_(torch.cat(v_rows))
    student.o_proj.weight.copy_(torch.cat(o_cols, dim=1))


def _top(importance: torch.Tensor, k: int) -> torch.Tensor:
    """Indices of the k largest values, in their original order (so keeping all is the identity map)."""
    return importance.topk(k).indices.sort().values
