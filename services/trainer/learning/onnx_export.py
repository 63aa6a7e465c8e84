"""A model as ONNX (torch's exporter), checked in onnxruntime: the deployment path for devices without
torch, and a check of our model by a runtime nobody here wrote.

The graph takes `input_ids` (batch, tokens) and returns `logits` (batch, tokens, vocab), both axes
dynamic; it is the prefill computation, without a KV cache.
"""

import os
import tempfile
from pathlib import Path

import numpy as np
import torch

from shared.model import Decoder

INPUT, OUTPUT = "input_ids", "logits"
SINGLE_FILE_BYTES = 1 << 30  # larger weights go to an external data file (ONNX files stop at 2 GiB)


def export_onnx(model: Decoder, path: Path, max_tokens: int) -> list[Path]:
    """Write model.onnx (and, for large models, its .data file beside it); returns the files written.
    Written in a temporary folder beside `path`, then moved into place."""
    model = model.eval()
    weights = sum(p.numel() * p.element_size() for p in model.parameters())
    example = torch.zeros(1, min(8, max_tokens), dtype=torch.long, device=model.embed.weight.device)
    dims = {0: torch.export.Dim("batch", max=4096), 1: torch.export.Dim("tokens", max=max_tokens)}
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=path.parent, prefix=".onnx-") as tmp:
        staged = Path(tmp) / path.name
        with torch.no_grad():
            torch.onnx.export(
                model,
                (example,),
                str(staged),
                input_names=[INPUT],
                output_names=[OUTPUT],
                dynamic_shapes=(dims,),
                external_data=weights > SINGLE_FILE_BYTES,
                dynamo=True,
                verbose=False,
            )
        written = []
        for file in sorted(Path(tmp).iterdir()):
            os.replace(file, path.parent / file.name)
            written.append(path.parent / file.name)
    return written


def onnx_logits(path: Path, input_ids: torch.Tensor, threads: int = 1) -> np.ndarray:
    """Run the ONNX model in onnxruntime on the CPU."""
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    return session.run([OUTPUT], {INPUT: input_ids.cpu().numpy()})[0]
