"""A model as ONNX (torch's exporter), checked in onnxruntime: the deployment path for devices without
torch, and a check of our model by a runtime nobody here wrote.

One graph serves prefill and decoding. It takes `input_ids` (batch, tokens) and, for each block i whose
attention slot is an attention operator (identity and linear slots keep no cache), `past_key.i` and
`past_value.i` (batch, kv_heads_i, past, head_dim_i); it returns `logits` (batch, tokens, vocab) and
`present_key.i` / `present_value.i` (batch, kv_heads_i, past + tokens, head_dim_i). batch, tokens and
past are dynamic; past may be 0 (a prefill, or the full-sequence logits). The new tokens' positions
start at past. Dynamic RoPE (frequencies that change with the length) is not exportable.

`onnx_logits` runs it with empty pasts; `onnx_generate` decodes greedily with the cache, as
`Decoder.generate(..., temperature=0)` does.
"""

import os
import tempfile
from pathlib import Path

import numpy as np
import torch
from torch import nn

from shared.model import Decoder, residual
from shared.operators import Attention
from shared.rope import is_dynamic

INPUT, OUTPUT = "input_ids", "logits"
PAST_KEY, PAST_VALUE = "past_key", "past_value"  # + ".<block>"
PRESENT_KEY, PRESENT_VALUE = "present_key", "present_value"
SINGLE_FILE_BYTES = 1 << 30  # larger weights go to an external data file (ONNX files stop at 2 GiB)
NUMPY_TYPES = {"tensor(float)": np.float32, "tensor(float16)": np.float16, "tensor(double)": np.float64}


def cached_blocks(model: Decoder) -> list[int]:
    """Indices of the blocks whose attention slot keeps a KV cache (an attention operator)."""
    return [i for i, block in enumerate(model.blocks) if isinstance(block.attention, Attention)]


def names(model: Decoder) -> tuple[list[str], list[str]]:
    """The graph's input and output names, in order."""
    blocks = cached_blocks(model)
    inputs = [INPUT] + [f"{kind}.{i}" for i in blocks for kind in (PAST_KEY, PAST_VALUE)]
    outputs = [OUTPUT] + [f"{kind}.{i}" for i in blocks for kind in (PRESENT_KEY, PRESENT_VALUE)]
    return inputs, outputs


class WithPast(nn.Module):
    """The decoder as a function of (input_ids, past keys and values): what the graph computes."""

    def __init__(self, model: Decoder):
        super().__init__()
        self.model = model
        self.cached = cached_blocks(model)

    def forward(
        self, input_ids: torch.Tensor, pasts: tuple[torch.Tensor, ...] = ()
    ) -> tuple[torch.Tensor, ...]:
        x = self.model.embed(input_ids)
        past = dict(zip(self.cached, zip(pasts[0::2], pasts[1::2], strict=True), strict=True))
        presents: list[torch.Tensor] = []
        for i, block in enumerate(self.model.blocks):
            if i in past:
                y, k, v = block.attention.forward_past(x, *past[i])
                x = x + y
                presents += (k, v)
            else:
                x = residual(block.attention, x)
            x = residual(block.mlp, x)
        return (self.model.head(x), *presents)


def empty_pasts(model: Decoder, batch: int, length: int = 0) -> tuple[torch.Tensor, ...]:
    """past_key.i, past_value.i of `length` zero positions for each cached block, in graph order."""
    w = model.embed.weight
    attentions = [model.blocks[i].attention for i in cached_blocks(model)]
    return tuple(
        torch.zeros(batch, a.num_kv_heads, length, a.head_dim, dtype=w.dtype, device=w.device)
        for a in attentions
        for _ in range(2)
    )


def export_onnx(model: Decoder, path: Path, max_tokens: int) -> list[Path]:
    """Write model.onnx (and, for large models, its .data file beside it); returns the files written.
    Written in a temporary folder beside `path`, then moved into place."""
    if is_dynamic(model.shape):
        raise ValueError("dynamic RoPE rescales with each sequence's length; one ONNX graph cannot")
    model = model.eval()
    weights = sum(p.numel() * p.element_size() for p in model.parameters())
    device = model.embed.weight.device
    # example sizes of 2 or more: torch.export specialises a dimension it is shown as 0 or 1
    example_ids = torch.zeros(2, max(2, min(8, max_tokens // 2)), dtype=torch.long, device=device)
    example_pasts = empty_pasts(model, 2, length=2)
    batch = torch.export.Dim("batch", max=4096)
    tokens = torch.export.Dim("tokens", max=max_tokens)
    past = torch.export.Dim("past", max=max_tokens)
    args, dynamic_shapes = [example_ids], [{0: batch, 1: tokens}]
    if example_pasts:  # a model without attention (every slot identity or linear) takes input_ids only
        args.append(example_pasts)
        dynamic_shapes.append(tuple({0: batch, 2: past} for _ in example_pasts))
    inputs, outputs = names(model)
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=path.parent, prefix=".onnx-") as tmp:
        staged = Path(tmp) / path.name
        with torch.no_grad():
            torch.onnx.export(
                WithPast(model).eval(),
                tuple(args),
                str(staged),
                input_names=inputs,
                output_names=outputs,
                dynamic_shapes=tuple(dynamic_shapes),
                external_data=weights > SINGLE_FILE_BYTES,
                dynamo=True,
                verbose=False,
            )
        written = []
        for file in sorted(Path(tmp).iterdir()):
            os.replace(file, path.parent / file.name)
            written.append(path.parent / file.name)
    return written


def onnx_session(path: Path, threads: int = 1):
    """An onnxruntime session on the CPU."""
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    return onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def session_pasts(session, batch: int) -> dict[str, np.ndarray]:
    """Empty (0-position) past keys and values for every cache input of the session's graph."""
    pasts = {}
    for arg in session.get_inputs():
        if arg.name != INPUT:
            _, heads, _, head_dim = arg.shape
            pasts[arg.name] = np.zeros((batch, heads, 0, head_dim), dtype=NUMPY_TYPES[arg.type])
    return pasts


def onnx_logits(path: Path, input_ids: torch.Tensor, threads: int = 1) -> np.ndarray:
    """Run the ONNX model in onnxruntime on the CPU: the full sequence's logits, from empty pasts."""
    session = onnx_session(path, threads)
    ids = input_ids.cpu().numpy()
    return session.run([OUTPUT], {INPUT: ids, **session_pasts(session, ids.shape[0])})[0]


def onnx_generate(path: Path, prompt_ids: torch.Tensor, new_tokens: int, threads: int = 1) -> torch.Tensor:
    """Greedy decoding in onnxruntime on the CPU with the KV cache: the prompt (batch, tokens) runs once,
    then one token per step. Returns the prompt followed by the new tokens, as Decoder.generate does
    (which also stops at max_position_embeddings: pass a new_tokens that fits)."""
    session = onnx_session(path, threads)
    ids = prompt_ids.cpu().numpy()
    out = [ids]
    feeds = {INPUT: ids, **session_pasts(session, ids.shape[0])}
    output_names = [o.name for o in session.get_outputs()]
    for step in range(new_tokens):
        results = dict(zip(output_names, session.run(output_names, feeds), strict=True))
        token = results[OUTPUT][:, -1].argmax(axis=-1, keepdims=True).astype(ids.dtype)
        out.append(token)
        if step + 1 == new_tokens:
            break
        feeds = {INPUT: token}
        for name, value in results.items():  # present_key.i becomes past_key.i, and so on
            if name != OUTPUT:
                feeds[name.replace(PRESENT_KEY, PAST_KEY).replace(PRESENT_VALUE, PAST_VALUE)] = value
    return torch.from_numpy(np.concatenate(out, axis=1))
